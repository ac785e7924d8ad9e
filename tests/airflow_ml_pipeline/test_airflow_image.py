"""The Airflow image and compose file, checked statically: hadolint, ``docker compose config``
with the real compose binary, the same base image as the service, the repository's pins."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from airflow_testkit import REPO

from tests.helpers import read_pins

pytestmark = [pytest.mark.airflow]

HERE = REPO / "airflow_ml_pipeline"
COMPOSE = Path(__import__("compose").__file__).parent / "docker-compose"  # not the pip wrapper
COMPONENTS = ("api-server", "scheduler", "dag-processor")


def _compose(
    *args: str, env_file: Path | None = HERE / ".env.example", **settings: str
) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECSYS_", "AIRFLOW", "COMPOSE_PROFILES"))
    }
    env |= settings
    files = ["--env-file", str(env_file)] if env_file else []
    return subprocess.run(
        [str(COMPOSE), "-f", str(HERE / "compose.yaml"), *files, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    run = subprocess.run(
        [str(hadolint), "--failure-threshold", "warning", str(HERE / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_image_uses_the_service_base_and_the_repository_pins() -> None:
    text = (HERE / "Dockerfile").read_text()
    service = (REPO / "fastapi_service" / "Dockerfile").read_text()
    assert (
        set(re.findall(r"^FROM (\S+)", text, re.M))
        == set(re.findall(r"^FROM (\S+)", service, re.M))
        == {"python:3.11-slim-bookworm"}
    )
    # the closure of the training and airflow extras (`make lock`), hash-checked
    assert "COPY airflow_ml_pipeline/requirements.lock airflow.lock" in text
    assert "pip install --no-cache-dir --require-hashes --no-deps -r airflow.lock" in text
    assert {"apache-airflow", "lightfm-next", "mlflow"} <= set(
        read_pins(HERE / "requirements.lock")
    )
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    # the extra installed in the image pins the Airflow of the lock
    lock = (REPO / "requirements.txt").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    pinned = re.search(r"^apache-airflow==(\S+)", lock, re.M)
    assert pinned and f'"apache-airflow[postgres]=={pinned[1]}"' in pyproject


def test_compose_file_is_valid_with_the_documented_env() -> None:
    run = _compose("config", "--quiet")
    assert run.returncode == 0, run.stderr
    run = _compose("config", "--format", "json")
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)["services"]
    assert set(services) == {"postgres", "init", *COMPONENTS}
    build = services["api-server"]["build"]
    assert (Path(build["context"]) / build["dockerfile"]).resolve() == HERE / "Dockerfile"
    assert services["api-server"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert "--skip-serve-logs" in services["scheduler"]["command"]
    for name in COMPONENTS:
        env = services[name]["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "change-me-jwt-secret"
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_compose_celery_profile_adds_the_broker_and_workers() -> None:
    run = _compose(
        "--profile", "celery", "config", "--format", "json", AIRFLOW_EXECUTOR="CeleryExecutor"
    )
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)["services"]
    assert set(services) == {"postgres", "init", "redis", "airflow-worker", *COMPONENTS}
    worker = services["airflow-worker"]
    assert worker["command"] == ["celery", "worker"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "ports" not in services["redis"]  # the broker stays inside the compose network
    for name in ("airflow-worker", *COMPONENTS):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    # without the profile: LocalExecutor and no broker
    plain = json.loads(_compose("config", "--format", "json").stdout)["services"]
    assert plain["scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_compose_refuses_to_run_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    run = _compose("config", "--quiet", env_file=empty)
    assert run.returncode != 0 and "set AIRFLOW_" in run.stderr
