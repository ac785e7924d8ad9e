"""Model reload, polling and restart from cache: real uvicorn processes, a real MLflow registry.

Only what needs a real process lives here (requests in flight during a swap, the poll loop,
a restart with the registry down); the reload rules themselves are tested in process in
``test_model_manager``, the HTTP answers in ``test_routes``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from service_testkit import (
    ADMIN_TOKEN,
    Registry,
    Server,
    corrupt_bundle,
    refused_port,
    wait_until,
    write_bundle,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: fail fast instead of MLflow's default minutes of retries against a dead registry
FAST_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
FAILED_POLL = r'recsys_model_reloads_total\{outcome="failure",trigger="poll"\}'


def registry_settings(registry: Registry, **extra: str) -> dict[str, str]:
    return {
        "RECSYS_MODEL_URI": registry.uri,
        "RECSYS_TRACKING_URI": registry.tracking_uri,
        "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
        **extra,
    }


class Hammer:
    """Threads sending GET /recommendations until stopped, recording every outcome.

    Entering waits until every thread has had answers; leaving waits until every thread
    has had ``settle`` more, so the block's work happens with requests in flight on both
    sides of it.
    """

    def __init__(self, url: str, threads: int = 4, settle: int = 5) -> None:
        self.url = url
        self.settle = settle
        self.stop_flag = threading.Event()
        self.outcomes: list[tuple[int, str]] = []
        self.answered: Counter[int] = Counter()
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
                self.answered[seed] += 1
                i += 1

    def _wait_for_each(self, more: int) -> None:
        start = [self.answered[i] for i in range(len(self.threads))]
        wait_until(
            lambda: all(self.answered[i] >= n + more for i, n in enumerate(start)),
            30,
            "answers to every hammer thread",
            interval=0.01,
        )

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        self._wait_for_each(self.settle)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait_for_each(self.settle)
        finally:
            self.stop_flag.set()
            for thread in self.threads:
                thread.join(30)

    @property
    def failures(self) -> list[tuple[int, str]]:
        return [o for o in self.outcomes if o[0] != 200]

    @property
    def versions(self) -> set[str]:
        return {o[1] for o in self.outcomes if o[0] == 200}


def ready(server: Server) -> dict:
    return server.client().get("/health/ready").json()


def test_reload_swaps_registry_versions_under_load_without_failures(
    registry: Registry, server_factory, tmp_path: Path
) -> None:
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    server = server_factory(registry_settings(registry))
    assert ready(server) == {
        "ready": True,
        "model_version": v1,
        "model_source": "registry",
        "model_uri": registry.uri,
        "registry_reachable": True,
        "code": None,
        "detail": None,
        "event_store": "ok",
        "online_history": "ok",
    }
    v2 = registry.register(write_bundle(tmp_path / "b2" / "bundle", seed=2))
    with Hammer(server.url) as hammer:
        reply = server.client().post("/admin/reload", headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "reloaded", "model_version": v2, "previous_version": v1}
    assert hammer.failures == []
    assert hammer.versions == {v1, v2}
    assert server.client().get("/recommendations/1").json()["model_version"] == v2
    # the alias did not move: nothing to do
    again = server.client().post("/admin/reload", headers=AUTH).json()
    assert again["status"] == "unchanged"
    assert server.metric(r'recsys_model_reloads_total\{outcome="success",trigger="admin"\}') == 1
    assert server.metric(rf'recsys_model_info\{{model_source="registry",version="{v2}"\}}') == 1
    # downloaded once per version into the cache, with a pointer to the last good one
    cache = Path(server.env["RECSYS_CACHE_DIR"])
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [
        f"{registry.model_name}-v{v1}",
        f"{registry.model_name}-v{v2}",
    ]
    assert (cache / "LATEST").read_text().startswith(f"{v2}\n")


def test_broken_new_version_under_load_keeps_the_old_model(
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
    assert "reload failed" in server.log()


def test_polling_follows_the_alias_and_skips_a_failed_version(
    registry: Registry, server_factory, tmp_path: Path
) -> None:
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    server = server_factory(registry_settings(registry, RECSYS_POLL_INTERVAL_S="0.2"))
    assert ready(server)["model_version"] == v1
    registry.register(corrupt_bundle(tmp_path / "bad" / "bundle"))
    wait_until(lambda: server.metric(FAILED_POLL) >= 1, 30, "a failed poll")
    polls = server.metric("recsys_model_polls_total")
    wait_until(lambda: server.metric("recsys_model_polls_total") >= polls + 3, 30, "3 more polls")
    assert server.metric(FAILED_POLL) == 1  # the failed version was not retried
    assert ready(server)["model_version"] == v1
    v3 = registry.register(write_bundle(tmp_path / "b3" / "bundle", seed=3))
    wait_until(lambda: ready(server)["model_version"] == v3, 30, f"version {v3} served")
    assert server.metric(r'recsys_model_reloads_total\{outcome="success",trigger="poll"\}') == 1


def test_restart_with_registry_down_serves_the_cached_bundle(
    registry: Registry, server_factory, tmp_path: Path
) -> None:
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    cache = str(tmp_path / "shared-cache")
    first = server_factory(registry_settings(registry, RECSYS_CACHE_DIR=cache), name="first")
    expected = first.client().get("/recommendations/2").json()["recommendations"]
    first.stop()
    with refused_port() as port:
        settings = registry_settings(registry, RECSYS_CACHE_DIR=cache, **FAST_MLFLOW)
        settings["RECSYS_TRACKING_URI"] = f"http://127.0.0.1:{port}"
        second = server_factory(settings, name="second")
        state = ready(second)
        assert state["ready"] is True
        assert state["model_version"] == v1
        assert state["model_source"] == "cache"
        assert state["registry_reachable"] is False
        assert state["code"] == "serving_cache"
        assert state["detail"].startswith("serving the cached bundle")
        assert second.client().get("/recommendations/2").json()["recommendations"] == expected
        assert "serving cached model version" in second.log()
        assert second.metric("recsys_registry_reachable") == 0


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("outage", ["refused", "silent"])
def test_a_registry_down_or_silent_at_start_delays_readiness_by_seconds(
    registry: Registry, server_factory, tmp_path: Path, outage: str
) -> None:
    """With MLflow's default retries (minutes), the cached bundle serves within
    ``registry_timeout_s`` (default 5 s) of the start."""
    v1 = registry.register(write_bundle(tmp_path / "b1" / "bundle", seed=1))
    cache = str(tmp_path / "shared-cache")
    server_factory(registry_settings(registry, RECSYS_CACHE_DIR=cache), name="first").stop()
    with refused_port() if outage == "refused" else silent_port() as port:
        settings = registry_settings(registry, RECSYS_CACHE_DIR=cache)
        settings["RECSYS_TRACKING_URI"] = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        second = server_factory(settings, name="second")
        elapsed = time.monotonic() - started
        state = ready(second)
    assert (state["model_version"], state["model_source"]) == (v1, "cache")
    assert state["code"] == "serving_cache"
    assert "registry gave no answer within 5 s" in second.log()
    # process start (imports: ~3 s on an idle machine) + the 5 s bound; minutes without it
    assert elapsed < 20, f"ready after {elapsed:.1f} s"
