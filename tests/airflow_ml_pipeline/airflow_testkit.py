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
