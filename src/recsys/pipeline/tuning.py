"""Tuning and selection on a rolling-origin backtest, never on the holdout.

The validation period before the holdout is cut into ``backtest_windows`` consecutive windows.
For each, every model is fitted on the data before the window and judged on the add-to-cart
targets inside it, as served. LightFM's parameters (Optuna) and then the served policy are
chosen on the mean over the windows, so a choice does not flip with one week's noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from tqdm.auto import tqdm

from recsys.bundle import serving_lists
from recsys.evaluation import score_policies
from recsys.interactions import TrainingData
from recsys.models.fits import BaseFits
from recsys.models.lightfm import LightFMModel
from recsys.pipeline.candidates import CANDIDATES, PolicyBuilder
from recsys.pipeline.compare import BASELINES, LIGHTFM_POLICIES, headline
from recsys.pipeline.config import DEFAULT_LIGHTFM, HEADLINE_TARGET, PipelineConfig
from recsys.pipeline.report import lightfm_params, mlflow_key
from recsys.serving import Recommender


@dataclass(frozen=True)
class Window:
    """One backtest window: the training data before it and the add-to-cart targets in it."""

    start_ms: int
    end_ms: int
    data: TrainingData
    targets: pd.DataFrame


@dataclass(frozen=True)
class TuningResult:
    """The best trial's LightFM parameters (with serving knobs) and every trial."""

    params: dict[str, Any]
    trials: pd.DataFrame


def suggest(trial: Any, base: dict[str, Any]) -> dict[str, Any]:
    """One trial's parameters: ``base`` with the searched ones drawn by ``trial``."""
    return {
        **base,
        "loss": trial.suggest_categorical("loss", ["warp", "bpr"]),
        "no_components": trial.suggest_categorical("no_components", [16, 32, 64, 96]),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.15, log=True),
        "item_alpha": trial.suggest_float("item_alpha", 1e-8, 1e-4, log=True),
        "user_alpha": trial.suggest_float("user_alpha", 1e-8, 1e-4, log=True),
        "epochs": trial.suggest_int("epochs", 5, 40, step=5),
        # slots of the blend's head given to the visitor's recent views (served policy knob)
        "recent_slots": trial.suggest_int("recent_slots", 1, 5),
    }


def _scores(
    windows: Sequence[Window],
    build: Callable[[TrainingData], dict[str, Recommender]],
    cfg: PipelineConfig,
) -> pd.DataFrame:
    """Headline of every built policy on every window (rows: policies, columns: windows)."""
    columns = {}
    for window in windows:
        recs = build(window.data)
        table = score_policies(
            recs, {HEADLINE_TARGET: window.targets}, cfg.k, len(window.data.item_ids)
        )
        columns[window.start_ms] = {name: headline(table, name, cfg.k) for name in recs}
    return pd.DataFrame(columns)


def tune(windows: Sequence[Window], cfg: PipelineConfig, fits: BaseFits) -> TuningResult:
    """Optuna search of LightFM's parameters: a trial scores the better of LightFM alone and
    the blend, averaged over the windows. Each trial is a nested MLflow run of the active run;
    the first trial is ``cfg.lightfm`` itself."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = cfg.lightfm if trial.number == 0 else suggest(trial, cfg.lightfm)
        shown = {**DEFAULT_LIGHTFM, **params}
        name = (
            f"trial-{trial.number} · {shown['loss']} d{shown['no_components']} e{shown['epochs']}"
        )
        builder = PolicyBuilder(cfg, params, fits)
        with mlflow.start_run(run_name=name, nested=True):
            # the parent run's keys: trials and runs compare column by column
            mlflow.log_params(lightfm_params(params))
            scores = _scores(
                windows, lambda data: builder.build(data, LIGHTFM_POLICIES.values()), cfg
            ).mean(axis=1)
            mlflow.log_metrics(
                {f"val_{mlflow_key(n)}_{mlflow_key(cfg.headline)}": v for n, v in scores.items()}
            )
        trial.set_user_attr("params", params)
        return float(scores.max())

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed)
    )
    with tqdm(total=cfg.trials, desc="tuning trials", disable=not cfg.progress) as bar:
        study.optimize(
            objective,
            n_trials=cfg.trials,
            timeout=cfg.timeout_s,
            callbacks=[lambda *_: bar.update(1)],
        )
    best = dict(study.best_trial.user_attrs["params"])
    # the other trials' fits are not needed again
    keep = {BaseFits.key(w.data, best, cfg.seed, cfg.popularity_window_days) for w in windows}
    fits.forget(lambda key: key in keep)
    return TuningResult(
        params=best,
        trials=study.trials_dataframe(attrs=("number", "value", "params", "duration")),
    )


def select(windows: Sequence[Window], builder: PolicyBuilder) -> tuple[str, pd.DataFrame]:
    """The servable policy with the best mean headline over the windows.

    Returns
    -------
    tuple
        Its result-table name and the scores of every candidate and baseline (rows) on every
        window (columns) with their ``mean``.
    """
    cfg = builder.cfg
    names = [*BASELINES, *cfg.candidates]
    table = _scores(windows, lambda data: builder.build(data, names), cfg)
    table["mean"] = table.mean(axis=1)
    served = table.loc[list(cfg.candidates), "mean"]
    return str(served.idxmax()), table


def learning_curve(
    window: Window, params: dict[str, Any], cfg: PipelineConfig, fits: BaseFits
) -> dict[int, float]:
    """LightFM's headline on a validation window after every epoch (never the holdout).

    It is the fit the run uses for that window anyway (through ``fits``): no extra fit. Empty
    when that fit was made before (its epochs were not watched).
    """
    values: dict[int, float] = {}
    lists = serving_lists(window.data, cfg.popularity_window_days)

    def after(epoch: int, model: LightFMModel) -> None:
        bundle = model.to_bundle(window.data, lists)
        rec = {"lightfm": Recommender(bundle, policy=CANDIDATES["lightfm"])}
        table = score_policies(
            rec, {HEADLINE_TARGET: window.targets}, cfg.k, len(window.data.item_ids)
        )
        values[epoch] = headline(table, "lightfm", cfg.k)

    fits.bundle(
        window.data, params, cfg.seed, cfg.threads, cfg.popularity_window_days, on_epoch=after
    )
    return values
