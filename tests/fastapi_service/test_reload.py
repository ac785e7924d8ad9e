"""Model loading and hot reload against real uvicorn processes and a real MLflow registry."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
from service_testkit import (
    ADMIN_TOKEN,
    Registry,
    Server,
    corrupt_bundle,
    free_port,
    write_bundle,
)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: fail fast instead of MLflow's default minutes of retries against a dead registry
FAST_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


def registry_settings(registry: Registry, **extra: str) -> dict[str, str]:
    return {
        "RECSYS_MODEL_URI": registry.uri,
        "RECSYS_TRACKING_URI": registry.tracking_uri,
        "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
        **extra,
    }


class Hammer:
    """Threads sending GET /recommendations until stopped, recording every outcome."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop_flag = threading.Event()
        self.outcomes: list[tuple[int, str]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, seed: int) -> None:
        users = [1, 2, 3, 10_000 + seed, 20_000 + seed]
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            i = 0
            while not self.stop_flag.is_set():
                try:
                    reply = client.get("/recommendations", params={"user_id": users[i % 5]})
                    ok = reply.status_code == 200
                    version = reply.json()["model_version"] if ok else reply.text
                    self.outcomes.append((reply.status_code, version))
                except Exception as exc:  # a dropped connection is a failed request too
                    self.outcomes.append((0, repr(exc)))
                i += 1

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(30)

    @property
    def failures(self) -> list[tuple[int, str]]:
        return [o for o in self.outcomes if o[0] != 200]

    @property
    def versions(self) -> set[str]:
        return {o[1] for o in self.outcomes if o[0] == 200}


def metric(server: Server, pattern: str) -> float:
    """Value of the first exposition line matching ``pattern`` (0 when absent)."""
    text = server.client().get("/metrics").text
    match = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def ready(server: Server) -> dict:
    return server.client().get("/health/ready").json()


def test_reload_swaps_registry_versions_under_load_without_failures(
    registry: Registry, server_factory, tmp_path: Path
) -> None:
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    server = server_factory(registry_settings(registry))
    assert ready(server) | {"detail": None} == {
        "ready": True,
        "model_version": v1,
        "model_source": "registry",
        "model_uri": registry.uri,
        "registry_reachable": True,
        "detail": None,
    }
    v2 = registry.register(write_bundle(tmp_path / "b2" / "bundle", seed=2))
    with Hammer(server.url) as hammer:
        reply = server.client().post("/admin/reload", headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "reloaded", "model_version": v2, "previous_version": v1}
    assert hammer.failures == []
    assert hammer.versions == {v1, v2}
    assert len(hammer.outcomes) > 20
    assert server.client().get("/recommendations/1").json()["model_version"] == v2
    # the alias did not move: nothing to do
    again = server.client().post("/admin/reload", headers=AUTH).json()
    assert again["status"] == "unchanged"
    assert metric(server, r'recsys_model_reloads_total\{outcome="success",trigger="admin"\}') == 1
    assert metric(server, rf'recsys_model_info\{{model_source="registry",version="{v2}"\}}') == 1
    # downloaded once per version into the cache, with a pointer to the last good one
    cache = Path(server.env["RECSYS_CACHE_DIR"])
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [
        f"{registry.model_name}-v{v1}",
        f"{registry.model_name}-v{v2}",
    ]
    assert (cache / "LATEST").read_text().startswith(f"{v2}\n")


def test_broken_or_missing_new_version_keeps_the_old_model(
    registry: Registry, server_factory, tmp_path: Path
) -> None:
    v1 = registry.register(write_bundle(tmp_path / "good" / "bundle", seed=1))
    server = server_factory(registry_settings(registry))
    broken = registry.register(corrupt_bundle(tmp_path / "bad" / "bundle"))
    with Hammer(server.url) as hammer:
        reply = server.client().post("/admin/reload", headers=AUTH)
    assert reply.status_code == 502
    assert f"version {broken}" in reply.json()["detail"]
    assert f"still serving {v1}" in reply.json()["detail"]
    assert hammer.failures == []
    assert hammer.versions == {v1}
    assert ready(server)["model_version"] == v1
    failed = r'recsys_model_reloads_total\{outcome="failure",trigger="admin"\}'
    assert metric(server, failed) == 1
    # the alias disappears: the registry has no champion, the old model keeps serving
    registry.client.delete_registered_model_alias(registry.model_name, "champion")  # type: ignore[attr-defined]
    reply = server.client().post("/admin/reload", headers=AUTH)
    assert reply.status_code == 502
    assert metric(server, failed) == 2
    body = server.client().get("/recommendations", params={"user_id": 2}).json()
    assert body["model_version"] == v1
    assert "reload failed" in server.log()


def test_polling_follows_the_alias(registry: Registry, server_factory, tmp_path: Path) -> None:
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    server = server_factory(registry_settings(registry, RECSYS_POLL_INTERVAL_S="0.3"))
    assert ready(server)["model_version"] == v1
    broken = registry.register(corrupt_bundle(tmp_path / "bad" / "bundle"))
    deadline = time.monotonic() + 30
    failed = r'recsys_model_reloads_total\{outcome="failure",trigger="poll"\}'
    while metric(server, failed) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # several more polls: a version that failed is not retried
    assert metric(server, failed) == 1
    assert ready(server)["model_version"] == v1
    v3 = registry.register(write_bundle(tmp_path / "b3" / "bundle", seed=3))
    assert v3 != broken
    while ready(server)["model_version"] != v3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready(server)["model_version"] == v3
    assert metric(server, r'recsys_model_reloads_total\{outcome="success",trigger="poll"\}') == 1


def test_restart_with_registry_down_serves_the_cached_bundle(
    registry: Registry, server_factory, tmp_path: Path
) -> None:
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    cache = str(tmp_path / "shared-cache")
    first = server_factory(registry_settings(registry, RECSYS_CACHE_DIR=cache), name="first")
    expected = first.client().get("/recommendations/2").json()["recommendations"]
    first.stop()
    dead_registry = f"http://127.0.0.1:{free_port()}"
    settings = registry_settings(registry, RECSYS_CACHE_DIR=cache, **FAST_MLFLOW)
    second = server_factory(settings | {"RECSYS_TRACKING_URI": dead_registry}, name="second")
    state = ready(second)
    assert state["ready"] is True
    assert state["model_version"] == v1
    assert state["model_source"] == "cache"
    assert state["registry_reachable"] is False
    assert state["detail"]
    assert second.client().get("/recommendations/2").json()["recommendations"] == expected
    assert "serving cached model version" in second.log()
    assert metric(second, "recsys_registry_reachable") == 0


def test_not_ready_until_a_model_loads(server_factory, tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"
    server = server_factory(
        {"RECSYS_MODEL_URI": str(missing), "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN},
        wait="/health/live",
    )
    client = server.client()
    reply = client.get("/health/ready")
    assert reply.status_code == 503
    assert reply.json()["ready"] is False
    assert reply.json()["model_version"] is None
    assert client.get("/recommendations", params={"user_id": 1}).status_code == 503
    assert client.get("/model").status_code == 503
    assert metric(server, "recsys_model_ready") == 0
    write_bundle(missing, version="late")
    reply = client.post("/admin/reload", headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "reloaded", "model_version": "late", "previous_version": None}
    assert client.get("/health/ready").status_code == 200
    assert client.get("/recommendations/1").json()["model_version"] == "late"


def test_reload_needs_the_bearer_token(server_factory, bundle_dir: Path) -> None:
    server = server_factory(
        {"RECSYS_MODEL_URI": str(bundle_dir), "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    client = server.client()
    reply = client.post("/admin/reload")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in reply.json()["detail"]
    assert client.post("/admin/reload", auth=("admin", ADMIN_TOKEN)).status_code == 401
    reply = client.post("/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 403
    assert reply.json()["detail"] == "invalid admin token"
    reply = client.post("/admin/reload", headers=AUTH)
    assert reply.status_code == 200
    assert reply.json()["model_version"] == "v1"


def test_reload_disabled_without_a_configured_token(server_factory, bundle_dir: Path) -> None:
    server = server_factory({"RECSYS_MODEL_URI": str(bundle_dir), "RECSYS_ADMIN_TOKEN": ""})
    for headers in ({}, AUTH):
        reply = server.client().post("/admin/reload", headers=headers)
        assert reply.status_code == 403
        assert reply.json()["detail"].startswith("reload disabled")
