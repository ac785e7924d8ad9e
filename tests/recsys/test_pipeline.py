"""The whole pipeline on tiny synthetic data against a real (SQLite-backed) MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from recsys.bundle import Bundle
from recsys.config import Settings
from recsys.pipeline import PipelineConfig, headline, run_pipeline
from recsys.serving import Recommender
from recsys.tracking import download_bundle

pytestmark = [pytest.mark.model, pytest.mark.slow]

FAST = {
    "loss": "warp",
    "no_components": 16,
    "learning_rate": 0.05,
    "item_alpha": 1e-6,
    "user_alpha": 1e-6,
    "epochs": 5,
}
#: a model that cannot have learned anything useful: one epoch, tiny learning rate
CRIPPLED = {**FAST, "no_components": 2, "learning_rate": 1e-5, "epochs": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_raw: Path) -> dict:
    var = tmp_path_factory.mktemp("var")
    settings = Settings(var_dir=var)
    first = run_pipeline(
        PipelineConfig(data_dir=tiny_raw, trials=2, lightfm=dict(FAST), progress=False), settings
    )
    return {"settings": settings, "first": first, "raw": tiny_raw}


def test_first_run_becomes_champion_beating_every_baseline(store: dict) -> None:
    first = store["first"]
    assert first.alias == "champion", first.decision.reason
    served = "lightfm" if first.policy == "model" else "lightfm+recent"
    for baseline in ("popular", "recent"):
        assert headline(first.results, served, 5) > headline(first.results, baseline, 5)
    # every model is reported per target and segment, on the same split
    index = first.results.index
    assert {"popular", "recent", "lightfm", "lightfm+recent"} <= set(index.get_level_values(0))
    assert {"addtocart", "any"} == set(index.get_level_values(1))
    assert {"warm", "cold", "all"} == set(index.get_level_values(2))


def test_worse_model_is_challenger_with_reason(store: dict) -> None:
    settings: Settings = store["settings"]
    second = run_pipeline(
        PipelineConfig(
            data_dir=store["raw"],
            trials=0,
            lightfm=dict(CRIPPLED),
            default_policy="model",
            progress=False,
        ),
        settings,
    )
    assert second.alias == "challenger"
    assert "does not beat" in second.decision.reason
    client = MlflowClient(settings.resolved_tracking_uri, settings.resolved_tracking_uri)
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == store["first"].model_version
    tag = client.get_model_version(settings.model_name, second.model_version).tags["gate"]
    assert tag == second.decision.reason


def test_champion_trained_on_this_holdout_is_kept_without_comparison(store: dict) -> None:
    """A longer holdout starts before the champion's cutoff: its metrics there are inflated."""
    settings: Settings = store["settings"]
    run = run_pipeline(
        PipelineConfig(
            data_dir=store["raw"],
            holdout_days=8,  # the champion was trained up to the last 7 days
            trials=0,
            lightfm=dict(CRIPPLED),
            progress=False,
        ),
        settings,
    )
    assert run.alias == "challenger"
    assert run.champion_score is None
    assert run.decision.reason.startswith("champion kept without comparison")
    client = MlflowClient(settings.resolved_tracking_uri, settings.resolved_tracking_uri)
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == store["first"].model_version
    tag = client.get_model_version(settings.model_name, run.model_version).tags["gate"]
    assert tag == run.decision.reason


def test_run_logs_metrics_plots_tuning_and_profile(store: dict) -> None:
    settings: Settings = store["settings"]
    client = MlflowClient(settings.resolved_tracking_uri)
    run = client.get_run(store["first"].run_id)
    assert "lightfm_plus_recent.addtocart.warm.precision_at_5" in run.data.metrics
    assert "popular.any.cold.ndcg_at_5" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "curve_holdout_precision_at_5")
    assert [m.step for m in history] == list(range(1, store["first"].params["epochs"] + 1))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/precision_at_k.png" in artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "tuning")} == {
        "tuning/trials.csv"
    }
    assert "data_profile.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    nested = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(nested) == 2


def test_any_k_names_every_metric_and_the_gate(store: dict, tmp_path: Path) -> None:
    """k is a knob: every metric key, the gate and the logged names follow it."""
    settings = Settings(var_dir=tmp_path / "var")
    cfg = PipelineConfig(
        data_dir=store["raw"], trials=0, k=10, lightfm=dict(FAST), precompute_k=0, progress=False
    )
    run = run_pipeline(cfg, settings, workdir=tmp_path / "run")
    assert {"precision@10", "ndcg@10"} <= set(run.results.columns)
    assert run.alias == "champion", run.decision.reason
    assert "precision@10" in run.decision.reason
    metrics = MlflowClient(settings.resolved_tracking_uri).get_run(run.run_id).data.metrics
    assert "served_precision_at_10" in metrics
    assert "lightfm_plus_recent.addtocart.warm.precision_at_10" in metrics
    # the run folder keeps what every stage handed on
    folder = tmp_path / "run"
    assert {"config.json", "run.json", "tuning.json", "decision.json", "promoted.json"} <= {
        p.name for p in folder.iterdir()
    }


def test_bad_configuration_names_the_field() -> None:
    with pytest.raises(ValueError, match="validation_days"):
        PipelineConfig(trials=3, validation_days=0)
    with pytest.raises(ValueError, match="unknown event types"):
        PipelineConfig(event_weights={"click": 1.0})
    assert PipelineConfig(trials=0, validation_days=0).validation_days == 0


def test_pyfunc_round_trip_in_a_separate_process(store: dict, tmp_path: Path) -> None:
    settings: Settings = store["settings"]
    uri = settings.resolved_tracking_uri
    champion_uri = f"models:/{settings.model_name}@champion"
    path, _ = download_bundle(champion_uri, tmp_path / "cache", uri)
    bundle = Bundle.load(path)
    users = [int(u) for u in bundle.user_ids[:5]] + [10**12]  # 5 warm + an unknown visitor
    code = (
        "import json, sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})\n"
        f"m = mlflow.pyfunc.load_model({champion_uri!r})\n"
        f"out = m.predict(pd.DataFrame({{'user_id': {users!r}}}))\n"
        "json.dump([list(map(int, x)) for x in out['item_ids']], sys.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    remote = json.loads(done.stdout.strip().splitlines()[-1])
    local = Recommender(bundle, policy=bundle.metadata["policy"])
    assert remote == [local.recommend(u, 5).item_ids for u in users]
    assert all(len(items) == 5 for items in remote)
    assert np.isin(remote[-1], bundle.item_ids[bundle.popular[:50]]).all()
