"""The UI path: ``run-airflow.sh`` starts the real API server, scheduler and DAG processor on
loopback; a run triggered through ``/api/v2`` with a token from ``/auth/token`` (what the UI
does) succeeds and moves the alias; stopping leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow_testkit import DAG_ID, FAST_CONF, REPO
from mlflow.tracking import MlflowClient

from recsys.config import MODEL_NAME
from tests.fastapi_service.service_testkit import free_port
from tests.helpers import copy_store

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SCRIPT = REPO / "airflow_ml_pipeline" / "run-airflow.sh"
RUN_TIMEOUT_S = 300


def _script(mode: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), mode], env=env, capture_output=True, text=True, timeout=300
    )


def _process_groups(pids: list[int]) -> list[str]:
    """Processes still alive in the process groups led by ``pids``."""
    ps = subprocess.run(["ps", "-eo", "pgid=,pid=,args="], capture_output=True, text=True)
    return [line for line in ps.stdout.splitlines() if int(line.split()[0]) in pids]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, tiny_store: str) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("components")
    var = root / "var"
    copy_store(tiny_store, var)  # var/events.db: the default store under RECSYS_VAR_DIR
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "MLFLOW_", "AIRFLOW"))
    }
    env |= {
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW_PORT": str(port),
        "RECSYS_VAR_DIR": str(var),
        # no service runs here: the reload task warns and the run still succeeds
        "RECSYS_SERVICE_URL": "http://127.0.0.1:9",
    }
    started = _script("start", env)
    pidfiles = sorted((root / "airflow" / "pids").glob("*.pid"))
    pids = [int(p.read_text()) for p in pidfiles]
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield {"url": f"http://127.0.0.1:{port}", "var": var, "out": started.stdout, "env": env}
    finally:
        stopped = _script("stop", env)
        assert stopped.returncode == 0, stopped.stderr
        assert _process_groups(pids) == []


def test_components_listen_on_loopback_only(airflow: dict[str, Any]) -> None:
    pids = [int(p.read_text()) for p in (Path(airflow["env"]["AIRFLOW_HOME"]) / "pids").iterdir()]
    assert {p.stem for p in (Path(airflow["env"]["AIRFLOW_HOME"]) / "pids").iterdir()} == {
        "api-server",
        "scheduler",
        "dag-processor",
    }
    ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    groups = {line.split()[1] for line in _process_groups(pids)}  # pids in the groups
    ours = [line for line in ss.splitlines() if any(f"pid={pid}," in line for pid in groups)]
    assert ours, ss
    assert all(line.split()[3].startswith("127.0.0.1:") for line in ours), ours


def test_a_run_triggered_over_the_rest_api_succeeds_and_moves_the_alias(
    airflow: dict[str, Any],
) -> None:
    url = airflow["url"]
    password = json.loads((Path(airflow["env"]["AIRFLOW_HOME"]) / "passwords.json").read_text())
    assert f"password: {password['admin']}" in airflow["out"]  # the login printed on start
    token = httpx.post(
        f"{url}/auth/token", json={"username": "admin", "password": password["admin"]}
    ).json()["access_token"]
    api = httpx.Client(base_url=f"{url}/api/v2", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 120
    while api.get(f"/dags/{DAG_ID}").status_code != 200:  # the DAG processor parses it first
        assert time.monotonic() < deadline, "the DAG was not parsed in time"
        time.sleep(1)
    assert api.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    trigger = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": FAST_CONF})
    assert trigger.status_code == 200, trigger.text
    run_id = trigger.json()["dag_run_id"]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    state = "queued"
    while state not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run still {state} after {RUN_TIMEOUT_S}s"
        time.sleep(2)
        state = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
    tasks = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    assert state == "success", {t["task_id"]: t["state"] for t in tasks}
    tracking = f"sqlite:///{airflow['var'] / 'mlflow.db'}"
    champion = MlflowClient(tracking, tracking).get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.tags["gate"].startswith("first model")
    # unpausing scheduled today's run: its interval end is midnight, far after the synthetic
    # data, so it fails at the check (stale) and registers nothing
    runs = api.get(f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
    for run in (r for r in runs if r["run_type"] == "scheduled" and r["state"] == "failed"):
        states = api.get(f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances").json()
        assert {t["task_id"]: t["state"] for t in states["task_instances"]}["check_store"] == (
            "failed"
        )
    # task logs are readable through the API (the scheduler serves none itself)
    check = next(t for t in tasks if t["task_id"] == "check_store")
    logs = api.get(
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/check_store/logs/{check['try_number']}"
    )
    assert logs.status_code == 200 and "events" in logs.text
