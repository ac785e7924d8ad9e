"""The MLflow UI as a user opens it: the real ``mlflow server`` over a store of two pipeline runs.

Checked through the REST API the UI itself calls: the experiment is a model-training one with
a saved view sorted by the headline, both runs are there with names that say what they tried,
the same parameter and metric keys, their training window as a dataset input, and the
evaluation plots as artifacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys.config import Settings
from recsys.pipeline import PipelineConfig, run_pipeline
from recsys.tracking import EXPERIMENT_KIND_TAG, HEADLINE_VIEW, TRAINING_KIND, VIEW_TAG_PREFIX
from tests.fastapi_service.service_testkit import Server, free_port

pytestmark = [pytest.mark.model, pytest.mark.slow]

FAST = {"loss": "warp", "no_components": 8, "epochs": 3}
HEADLINE = "served_precision_at_5"
PLOTS = {
    "evaluation/precision_at_k.png",
    "evaluation/policies.png",
    "evaluation/learning_curve.png",
}


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, tiny_store: str) -> Iterator[dict]:
    var = tmp_path_factory.mktemp("ui")
    settings = Settings(var_dir=var, db_url=tiny_store)
    quick = {
        "trials": 0,
        "backtest_windows": 1,
        "ranker_windows": 1,
        "ranker": {"iterations": 40},
        "ablation": False,
        "progress": False,
    }
    runs = [
        run_pipeline(PipelineConfig(**quick, lightfm=dict(FAST)), settings),
        run_pipeline(
            PipelineConfig(**quick, lightfm={**FAST, "loss": "bpr"}, candidates=["lightfm"]),
            settings,
        ),
    ]
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    log = var / "server.log"
    proc = subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "mlflow"), "server"),
            *("--backend-store-uri", settings.resolved_tracking_uri),
            *("--artifacts-destination", str(var / "mlartifacts")),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ],
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log, env)
    try:
        server.wait("/health", timeout=90)
        yield {"url": server.url, "runs": runs}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _api(ui: dict, endpoint: str, **params: object) -> dict:
    response = httpx.get(f"{ui['url']}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    result: dict = response.json()
    return result


def _runs(ui: dict) -> list[dict]:
    experiment = _api(ui, "experiments/get-by-name", experiment_name="recsys")["experiment"]
    response = httpx.post(
        f"{ui['url']}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment["experiment_id"]], "max_results": 100},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    runs = response.json()["runs"]
    return [r for r in runs if "mlflow.parentRunId" not in _tags(r)]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_the_ui_serves_a_training_experiment_sorted_by_the_headline(ui: dict) -> None:
    assert httpx.get(ui["url"] + "/", timeout=30).status_code == 200
    experiment = _api(ui, "experiments/get-by-name", experiment_name="recsys")["experiment"]
    tags = {t["key"]: t["value"] for t in experiment["tags"]}
    assert tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    assert tags["mlflow.note.content"]
    view = json.loads(tags[VIEW_TAG_PREFIX + HEADLINE_VIEW])
    state = json.loads(view["state"])
    assert state["orderByKey"] == f"metrics.`{HEADLINE}`" and state["orderByAsc"] is False
    assert f"metrics.`{HEADLINE}`" in state["selectedColumns"]


def test_both_runs_are_named_comparable_and_show_their_data(ui: dict) -> None:
    runs = _runs(ui)
    assert {r["info"]["run_id"] for r in runs} == {r.run_id for r in ui["runs"]}
    names = [r["info"]["run_name"] for r in runs]
    assert len(set(names)) == 2, names
    for name in names:
        assert " · train 2015-" in name and ("warp" in name or "bpr" in name), name
    assert any(n.startswith("lightfm · bpr") for n in names), names
    for run in runs:
        assert "LightFM" in _tags(run)["mlflow.note.content"]
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert 0 <= metrics[HEADLINE] <= 1
        assert "recent.addtocart.warm.precision_at_5" in metrics
        inputs = {_input_tags(i)["mlflow.data.context"]: i for i in run["inputs"]["dataset_inputs"]}
        training = inputs["training"]
        assert training["dataset"]["name"].startswith("events 2015-")
        assert training["dataset"]["digest"]
        assert json.loads(training["dataset"]["profile"])["num_rows"] == int(
            _input_tags(training)["events"]
        )
        assert "evaluation" in inputs
    # the same keys in every run: the comparison view has no half-empty columns
    params = [{p["key"] for p in r["data"]["params"]} for r in runs]
    metric_keys = [{m["key"] for m in r["data"]["metrics"]} for r in runs]
    assert params[0] == params[1]
    assert metric_keys[0] == metric_keys[1]


def _input_tags(dataset_input: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in dataset_input.get("tags", [])}


def test_every_run_has_its_evaluation_plots(ui: dict) -> None:
    for run in _runs(ui):
        run_id = run["info"]["run_id"]
        listed = _api(ui, "artifacts/list", run_id=run_id, path="evaluation")["files"]
        assert {f["path"] for f in listed} >= PLOTS
        for path in sorted(PLOTS):
            png = httpx.get(
                f"{ui['url']}/get-artifact", params={"path": path, "run_uuid": run_id}, timeout=30
            )
            assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n", path
