"""The DAG file as Airflow's DagBag sees it: no import errors, tasks and dependencies as
documented, params with bounds, docs, retries, a fast import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow_testkit import DAG_ID, DAGS, airflow_env, describe_dag

from recsys.pipeline import PipelineConfig

pytestmark = [pytest.mark.airflow]

#: the documented flow: every task and the tasks right after it
FLOW = {
    "check_store": ["prepare"],
    "prepare": ["decide", "fit_and_evaluate", "promote", "refit", "register", "tune"],
    "tune": ["fit_and_evaluate"],
    "fit_and_evaluate": ["decide"],
    "decide": ["refit"],
    "refit": ["register"],
    "register": ["promote"],
    "promote": ["reload_service"],
    "reload_service": [],
}


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # the DagBag needs no metadata database: a bare home is enough
    return describe_dag(tmp_path_factory.mktemp("airflow-bare"))


def test_dag_imports_without_errors(described: dict[str, Any]) -> None:
    assert described["import_errors"] == {}
    assert "dag" in described


def test_tasks_and_dependencies_are_the_documented_flow(described: dict[str, Any]) -> None:
    assert {name: task["downstream"] for name, task in described["tasks"].items()} == FLOW
    # the DAG's docs name every task in flow order
    docs = described["dag"]["doc_md"]
    positions = [docs.index(f"`{name}`") for name in FLOW]
    assert positions == sorted(positions)


def test_schedule_retries_docs_and_failure_callback(described: dict[str, Any]) -> None:
    dag = described["dag"]
    assert "expression='0 0 * * *'" in dag["schedule"]  # @daily
    assert "Timezone('UTC')" in dag["schedule"] and dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    for name, task in described["tasks"].items():
        assert task["doc_md"].startswith("#### "), name
        assert task["retries"] == 2 and task["backoff"] is True, name
        assert task["on_failure_callback"], name


def test_params_defaults_make_a_valid_pipeline_config(described: dict[str, Any]) -> None:
    """The params' defaults and bounds agree with the library's configuration."""
    params = described["dag"]["params"]
    assert {"window_days", "holdout_days", "trials", "promote", "interval_end"} <= set(params)
    for name in ("holdout_days", "validation_days", "min_events", "min_holdout_addtocart"):
        field = PipelineConfig.model_fields[name]
        assert params[name]["default"] == field.default, name
        lower = next(m.ge for m in field.metadata if hasattr(m, "ge"))
        assert params[name]["minimum"] == lower, name
    assert params["promote"]["default"] is True and params["promote"]["type"] == "boolean"
    assert params["candidates"]["default"] == PipelineConfig().candidates
    for name in ("backtest_windows", "ranker_windows", "min_lift", "deterministic"):
        assert params[name]["default"] == PipelineConfig.model_fields[name].default, name
    lightfm = PipelineConfig().lightfm
    assert params["epochs"]["default"] == lightfm["epochs"]
    assert params["no_components"]["default"] == lightfm["no_components"]


def test_dag_file_imports_no_heavy_library() -> None:
    """Parsing the DAG (every 30 s in the DAG processor) loads Airflow, not the ML stack."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(DAGS / DAG_ID)!r} + '.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "heavy = ['pandas', 'mlflow', 'lightfm', 'optuna', 'scipy', 'recsys']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    env = airflow_env(Path(sys.prefix))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
