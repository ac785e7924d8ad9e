"""The model manager's reload rules, in process, against a real MLflow registry and real bundles.

Each reload is awaited directly, so the rules need no timing: which trigger reloads what,
what a failure leaves served, what is counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from service_testkit import Registry, corrupt_bundle, metric, write_bundle

from fastapi_service.errors import ModelNotReady, ReloadFailed
from fastapi_service.metrics import ServiceMetrics
from fastapi_service.model_manager import ModelManager
from fastapi_service.settings import ServiceSettings

pytestmark = pytest.mark.service


def manager_for(model_uri: str, tmp_path: Path, tracking_uri: str | None = None) -> ModelManager:
    settings = ServiceSettings(
        model_uri=model_uri,
        tracking_uri=tracking_uri,
        cache_dir=tmp_path / "cache",
        policy=None,
        poll_interval_s=0,
    )
    return ModelManager(settings, ServiceMetrics())


def reloads(manager: ModelManager, trigger: str, outcome: str) -> float:
    pattern = rf'recsys_model_reloads_total\{{outcome="{outcome}",trigger="{trigger}"\}}'
    return metric(manager.metrics.render().decode(), pattern)


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.slow  # the registry store takes seconds to create
def test_poll_skips_a_failed_version_until_the_alias_moves(
    registry: Registry, tmp_path: Path
) -> None:
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    manager = manager_for(registry.uri, tmp_path, registry.tracking_uri)

    async def scenario() -> None:
        assert (await manager.reload("startup")).model.version == v1
        assert (await manager.reload("poll")).status == "unchanged"  # the alias did not move
        broken = registry.register(corrupt_bundle(tmp_path / "bad" / "bundle"))
        with pytest.raises(ReloadFailed, match=rf"version {broken} .*; still serving {v1}$"):
            await manager.reload("poll")
        result = await manager.reload("poll")
        assert result.status == "unchanged" and result.model.version == v1
        assert reloads(manager, "poll", "failure") == 1  # tried once
        v3 = registry.register(write_bundle(tmp_path / "b3" / "bundle", seed=3))
        result = await manager.reload("poll")
        assert (result.status, result.model.version) == ("reloaded", v3)
        assert result.previous is not None and result.previous.version == v1
        assert manager.served().version == v3

    run(scenario())
    assert reloads(manager, "poll", "success") == 1
    assert reloads(manager, "poll", "unchanged") == 0  # polls finding nothing are not counted
    assert manager.registry_reachable is True
    assert manager.last_error is None


@pytest.mark.slow
def test_missing_alias_fails_an_admin_reload_but_not_a_poll(
    registry: Registry, tmp_path: Path
) -> None:
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    manager = manager_for(registry.uri, tmp_path, registry.tracking_uri)

    async def scenario() -> None:
        await manager.reload("startup")
        registry.client.delete_registered_model_alias(registry.model_name, "champion")  # type: ignore[attr-defined]
        with pytest.raises(ReloadFailed, match=f"registry lookup failed.*still serving {v1}"):
            await manager.reload("admin")
        assert (await manager.reload("poll")).model.version == v1  # keeps serving, no failure

    run(scenario())
    assert reloads(manager, "admin", "failure") == 1
    assert reloads(manager, "poll", "failure") == 0
    assert manager.registry_reachable is False
    assert manager.last_error is not None and "registry lookup failed" in manager.last_error
    assert metric(manager.metrics.render().decode(), "recsys_registry_reachable") == 0


def test_a_local_folder_reloads_on_demand_only(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    manager = manager_for(str(bundle), tmp_path)

    async def scenario() -> None:
        first = (await manager.reload("startup")).model
        assert (await manager.reload("poll")).model is first
        result = await manager.reload("admin")
        assert result.status == "reloaded" and result.previous is first
        assert result.model is not first and result.model.source == "local"

    run(scenario())
    assert manager.registry_reachable is None  # no registry was asked


def test_nothing_is_served_until_a_model_loads(tmp_path: Path) -> None:
    manager = manager_for(str(tmp_path / "missing"), tmp_path)
    with pytest.raises(ModelNotReady):
        manager.served()
    with pytest.raises(ReloadFailed, match="still serving nothing$"):
        run(manager.reload("startup"))
    assert manager.current is None
    assert reloads(manager, "startup", "failure") == 1
