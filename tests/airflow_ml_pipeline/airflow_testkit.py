"""Helpers of the Airflow tests: real Airflow in child processes, never in the test process.

Airflow reads its configuration (``AIRFLOW_HOME``) once per process and configures logging
on import; running it in a child keeps the test process clean and each run isolated. The
children run exactly what a user runs: the DAG file from ``airflow_ml_pipeline/dags``, the
DagBag, ``dag.test()``, the ``run-airflow.sh`` script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "airflow_ml_pipeline" / "dags"
DAG_ID = "retrain_recommender"
#: LightFM knobs that keep a run on the tiny data to seconds
#: small and quick, one thread; a setup run: the gate lets it through whatever the noise of
#: ~40 holdout visitors (the gate itself is tested in tests/recsys)
FAST_CONF = {
    "trials": 0,
    "epochs": 5,
    "no_components": 16,
    "backtest_windows": 1,
    "ranker_windows": 1,
    "ranker_iterations": 60,
    "deterministic": True,
    "min_lift": -1.0,
}
#: a configuration that cannot have learned anything useful
CRIPPLED_CONF = {
    **FAST_CONF,
    "epochs": 1,
    "no_components": 2,
    "learning_rate": 1e-5,
    "candidates": ["lightfm"],
    "min_lift": 0.0,
}
_RESULT = "AIRFLOW-TEST-RESULT "


def airflow_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of an Airflow child: its own home and SQLite metadata, the repo's
    DAGs, no example DAGs, and the given ``RECSYS_*`` settings (nothing inherited of them)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "MLFLOW_", "AIRFLOW"))
    }
    return env | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        **settings,
    }


def migrate(home: Path) -> None:
    """``airflow db migrate`` of a fresh home."""
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _child(code: str, env: dict[str, str], timeout: float, log: Path, *args: str) -> Any:
    """Run ``code`` (with ``args``) in a child Python; returns the JSON it printed after the
    result marker."""
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            cwd=log.parent,
        )
    text = log.read_text(errors="replace")
    results = [line for line in text.splitlines() if line.startswith(_RESULT)]
    assert done.returncode == 0 and results, f"child failed ({done.returncode}):\n{text[-6000:]}"
    return json.loads(results[-1].removeprefix(_RESULT))


DESCRIBE = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag({str(DAGS)!r})
dag = bag.dags.get({DAG_ID!r})
out = {{"import_errors": {{k: str(v) for k, v in bag.import_errors.items()}}}}
if dag is not None:
    out["dag"] = {{
        "schedule": repr(dag.timetable),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "doc_md": dag.doc_md or "",
        "params": {{name: dag.params.get_param(name).schema | {{"default": dag.params[name]}}
                    for name in dag.params}},
    }}
    out["tasks"] = {{
        t.task_id: {{
            "downstream": sorted(t.downstream_task_ids),
            "doc_md": t.doc_md or "",
            "retries": t.retries,
            "backoff": t.retry_exponential_backoff,
            "on_failure_callback": bool(t.on_failure_callback),
        }}
        for t in dag.tasks
    }}
print({_RESULT!r} + json.dumps(out, default=str))
"""

RUN = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag

dag = DagBag({str(DAGS)!r}).dags[{DAG_ID!r}]
run = dag.test(run_conf=json.loads(sys.argv[1]), logical_date=None)
tasks = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
print({_RESULT!r} + json.dumps({{"state": str(run.state), "run_id": run.run_id, "tasks": tasks}}))
"""


def describe_dag(home: Path) -> dict[str, Any]:
    """The DagBag's view of the DAG file (import errors, tasks, params, docs)."""
    result: dict[str, Any] = _child(DESCRIBE, airflow_env(home), 120, home / "describe.log")
    return result


def run_dag(home: Path, conf: dict[str, Any], log: Path, **settings: str) -> dict[str, Any]:
    """One ``dag.test()`` run with ``conf`` as the run's params; its state and task states."""
    env = airflow_env(home, **settings)
    result: dict[str, Any] = _child(RUN, env, 480, log, json.dumps(conf))
    return result


def api_client(url: str, home: Path) -> Any:
    """An ``httpx.Client`` on ``/api/v2`` of the API server at ``url``, logged in as the
    admin whose password ``run-airflow.sh`` wrote into ``home`` (what the UI does)."""
    import httpx

    password = json.loads((home / "passwords.json").read_text())["admin"]
    # generous: the single API server worker also serves the tasks' execution API, and its
    # first execution request (or a busy 2-core machine) can hold a request for seconds
    timeout = httpx.Timeout(60.0)
    token = httpx.post(
        f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=timeout
    ).json()["access_token"]
    return httpx.Client(
        base_url=f"{url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=timeout
    )


def trigger_and_wait(api: Any, conf: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Wait for the DAG to be parsed, unpause it, trigger a run with ``conf`` over the REST
    API and wait for it to end; the run (``dag_run_id``, ``state``) and its task instances."""
    import time

    deadline = time.monotonic() + 120
    while api.get(f"/dags/{DAG_ID}").status_code != 200:  # the DAG processor parses it first
        assert time.monotonic() < deadline, "the DAG was not parsed in time"
        time.sleep(1)
    assert api.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    trigger = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert trigger.status_code == 200, trigger.text
    run_id = trigger.json()["dag_run_id"]
    deadline = time.monotonic() + timeout
    state = "queued"
    while state not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run still {state} after {timeout}s"
        time.sleep(2)
        state = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
    tasks = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    return {"dag_run_id": run_id, "state": state, "task_instances": tasks}


#: the repository's Airflow launcher (what `make airflow` runs)
LAUNCHER = REPO / "airflow_ml_pipeline" / "run-airflow.sh"


def launcher(mode: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``run-airflow.sh start|stop`` with ``env``."""
    return subprocess.run(
        ["bash", str(LAUNCHER), mode], env=env, capture_output=True, text=True, timeout=300
    )


def process_groups(pids: list[int], wait_s: float = 30.0) -> list[str]:
    """Processes (``pgid pid args``) still alive in the process groups led by ``pids``, after
    waiting up to ``wait_s`` for them to go; exited ones waiting to be reaped (zombies) do not
    count."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        ps = subprocess.run(
            ["ps", "-eo", "pgid=,pid=,stat=,args="], capture_output=True, text=True
        ).stdout
        alive = [
            line
            for line in ps.splitlines()
            if int(line.split()[0]) in pids and not line.split()[2].startswith("Z")
        ]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def launcher_env(home: Path, port: int, var: Path, **settings: str) -> dict[str, str]:
    """The environment of ``run-airflow.sh``: nothing inherited of Airflow, MLflow or recsys
    settings; its home, port and stores, and ``settings``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "MLFLOW_", "AIRFLOW"))
    }
    return env | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_PORT": str(port),
        "RECSYS_VAR_DIR": str(var),
        # no service runs here: the reload task warns and the run still succeeds
        "RECSYS_SERVICE_URL": "http://127.0.0.1:9",
        **settings,
    }
