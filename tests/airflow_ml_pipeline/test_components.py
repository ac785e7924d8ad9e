"""The UI path: ``run-airflow.sh`` starts the real API server, scheduler and DAG processor on
loopback; a run triggered through ``/api/v2`` with a token from ``/auth/token`` (what the UI
does) succeeds and moves the alias; stopping leaves no process behind."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_testkit import (
    DAG_ID,
    FAST_CONF,
    api_client,
    launcher,
    launcher_env,
    process_groups,
    trigger_and_wait,
)
from mlflow.tracking import MlflowClient

from recsys.config import MODEL_NAME
from tests.fastapi_service.service_testkit import free_port
from tests.helpers import copy_store

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, tiny_store: str) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("components")
    var = root / "var"
    copy_store(tiny_store, var)  # var/events.db: the default store under RECSYS_VAR_DIR
    env = launcher_env(root / "airflow", free_port(), var)
    started = launcher("start", env)
    pidfiles = sorted((root / "airflow" / "pids").glob("*.pid"))
    pids = [int(p.read_text()) for p in pidfiles]
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield {
            "url": f"http://127.0.0.1:{env['AIRFLOW_PORT']}",
            "var": var,
            "out": started.stdout,
            "env": env,
        }
    finally:
        stopped = launcher("stop", env)
        assert stopped.returncode == 0, stopped.stderr
        assert process_groups(pids) == []


def test_components_listen_on_loopback_only(airflow: dict[str, Any]) -> None:
    pids = [int(p.read_text()) for p in (Path(airflow["env"]["AIRFLOW_HOME"]) / "pids").iterdir()]
    assert {p.stem for p in (Path(airflow["env"]["AIRFLOW_HOME"]) / "pids").iterdir()} == {
        "api-server",
        "scheduler",
        "dag-processor",
    }
    ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    groups = {line.split()[1] for line in process_groups(pids, 0)}  # pids in the groups
    ours = [line for line in ss.splitlines() if any(f"pid={pid}," in line for pid in groups)]
    assert ours, ss
    assert all(line.split()[3].startswith("127.0.0.1:") for line in ours), ours


def test_a_run_triggered_over_the_rest_api_succeeds_and_moves_the_alias(
    airflow: dict[str, Any],
) -> None:
    url = airflow["url"]
    home = Path(airflow["env"]["AIRFLOW_HOME"])
    password = json.loads((home / "passwords.json").read_text())
    assert f"password: {password['admin']}" in airflow["out"]  # the login printed on start
    api = api_client(url, home)
    run = trigger_and_wait(api, FAST_CONF, RUN_TIMEOUT_S)
    run_id, tasks = run["dag_run_id"], run["task_instances"]
    assert run["state"] == "success", {t["task_id"]: t["state"] for t in tasks}
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
