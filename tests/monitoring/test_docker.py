"""The images and the compose stack, for real, in a Docker engine started by the test.

The service image is built from ``fastapi_service/Dockerfile``, run read-only as non-root with a
bundle mounted, must turn healthy through its own HEALTHCHECK and answer recommendations; then
``monitoring/compose.yaml`` (service + Prometheus + Alertmanager, built locally) comes up with
``--wait`` and its Prometheus must scrape the service. Grafana needs a registry image: it sits
behind a compose profile and is not started here. Skipped only when no engine can be started
(not root, docker.io not installable, or another engine owns docker0); the measurements go to
``var/docker/measurements.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from monitoring.servers import REPO, free_port

from monitoring import engine as docker_engine
from tests.fastapi_service.service_testkit import WARM_USERS, wait_until, write_bundle

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

STATE = REPO / "var" / "docker"
IMAGE = "recsys-api:test"
PROJECT = "recsys-stack-test"


@pytest.fixture(scope="module")
def engine() -> Iterator[docker_engine.Engine]:
    try:
        started = docker_engine.start(STATE)
    except docker_engine.EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def measurements() -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    yield found
    print(json.dumps(found, indent=2))
    (STATE / "measurements.json").write_text(json.dumps(found, indent=2) + "\n")


@pytest.fixture(scope="module")
def image(engine: docker_engine.Engine, measurements: dict[str, float]) -> str:
    started = time.monotonic()
    docker_engine.ensure_base_images(engine, STATE / "cache")
    measurements["base_images_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    engine.docker("build", "-f", "fastapi_service/Dockerfile", "-t", IMAGE, ".")
    measurements["service_image_build_s"] = round(time.monotonic() - started, 1)
    size = engine.docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout
    measurements["service_image_mb"] = round(int(size) / 1e6)
    return IMAGE


def _health(engine: docker_engine.Engine, container: str) -> str:
    return engine.docker(
        "inspect", "--format", "{{.State.Health.Status}}", container, check=False
    ).stdout.strip()


def test_image_runs_read_only_as_non_root_and_recommends(
    engine: docker_engine.Engine, image: str, tmp_path: Path, measurements: dict[str, float]
) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    bundle.chmod(0o755)
    name = f"recsys-api-test-{int(time.time())}"
    started = time.monotonic()
    engine.docker(
        "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
        "--tmpfs", "/app/var:uid=10001,gid=10001",
        "--security-opt", "no-new-privileges:true",
        "-v", f"{bundle}:/bundle:ro", "-e", "RECSYS_MODEL_URI=/bundle",
        "-p", "127.0.0.1::8000", image,
    )  # fmt: skip
    try:
        wait_until(
            lambda: _health(engine, name) == "healthy",
            120,
            lambda: f"healthy; logs:\n{engine.docker('logs', name, check=False).stderr[-3000:]}",
            interval=0.5,
        )
        measurements["start_to_healthy_s"] = round(time.monotonic() - started, 1)
        assert engine.docker("exec", name, "id", "-u").stdout.strip() == "10001"
        write = engine.docker("exec", name, "touch", "/app/fastapi_service/x", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        port = engine.docker("port", name, "8000").stdout.split(":")[-1].strip()
        url = f"http://127.0.0.1:{port}"
        reply = httpx.get(f"{url}/recommendations", params={"user_id": WARM_USERS[0]}, timeout=10)
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["recommendations"]) == 5
        assert reply.json()["model_version"] == "v1"
        assert httpx.post(f"{url}/events", json={"visitorid": 5, "event": "view", "itemid": 101},
                          timeout=10).status_code == 202  # fmt: skip
    finally:
        engine.docker("rm", "-f", name, check=False)


def test_compose_stack_comes_up_and_prometheus_scrapes_the_service(
    engine: docker_engine.Engine, image: str, tmp_path: Path, measurements: dict[str, float]
) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    bundle.chmod(0o755)
    ports = {name: free_port() for name in ("RECSYS_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")}
    env = {**ports, "RECSYS_BUNDLE_DIR": str(bundle), "RECSYS_IMAGE_TAG": "test"}
    compose = ["compose", "-f", "monitoring/compose.yaml", "-p", PROJECT]
    engine.env |= {k: str(v) for k, v in env.items()}
    started = time.monotonic()
    try:
        engine.docker(*compose, "up", "-d", "--build", "--wait", "--wait-timeout", "180")
        measurements["compose_up_wait_s"] = round(time.monotonic() - started, 1)
        prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"

        def scraped() -> bool:
            reply = httpx.get(
                f"{prometheus}/api/v1/query",
                params={
                    "query": 'up{job="recsys-api"} == 1 and on (instance) recsys_model_ready == 1'
                },
                timeout=5,
            )
            return bool(reply.json()["data"]["result"])

        wait_until(scraped, 90, "Prometheus scraping a ready recsys-api", interval=1)
        measurements["compose_to_scraped_s"] = round(time.monotonic() - started, 1)
        rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in rules} >= {"recsys-service", "recsys-model", "recsys-ab"}
        alertmanagers = httpx.get(f"{prometheus}/api/v1/alertmanagers", timeout=5).json()
        assert alertmanagers["data"]["activeAlertmanagers"], alertmanagers
        am = httpx.get(f"http://127.0.0.1:{ports['ALERTMANAGER_PORT']}/api/v2/status", timeout=5)
        assert "no-receiver-set" in am.json()["config"]["original"]
        service = httpx.get(f"http://127.0.0.1:{ports['RECSYS_PORT']}/recommendations",
                            params={"user_id": WARM_USERS[0]}, timeout=10)  # fmt: skip
        assert service.status_code == 200
    finally:
        engine.docker(*compose, "down", "-v", "--remove-orphans", check=False)
