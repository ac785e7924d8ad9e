"""Optuna search of LightFM parameters and the served policy on the validation window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from tqdm.auto import tqdm

from recsys.bundle import serving_lists
from recsys.evaluation import score_policies
from recsys.interactions import TrainingData
from recsys.names import Policy
from recsys.pipeline.compare import headline, lightfm_policies, policy_of
from recsys.pipeline.config import DEFAULT_LIGHTFM, HEADLINE_TARGET, PipelineConfig
from recsys.pipeline.fitting import fit_lightfm, served_bundle
from recsys.pipeline.report import lightfm_params, mlflow_key


@dataclass(frozen=True)
class TuningResult:
    """The best trial: LightFM parameters (with serving knobs), the policy, all trials."""

    params: dict[str, Any]
    policy: Policy
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


def tune(data: TrainingData, targets: pd.DataFrame, cfg: PipelineConfig) -> TuningResult:
    """Search on one window: ``data`` ends where the window starts, ``targets`` are its
    add-to-cart targets. Each trial is a nested MLflow run of the active run; the first trial
    is ``cfg.lightfm`` itself."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lists = serving_lists(data, cfg.popularity_window_days)

    def objective(trial: optuna.Trial) -> float:
        params = cfg.lightfm if trial.number == 0 else suggest(trial, cfg.lightfm)
        shown = {**DEFAULT_LIGHTFM, **params}
        name = (
            f"trial-{trial.number} · {shown['loss']} d{shown['no_components']} e{shown['epochs']}"
        )
        with mlflow.start_run(run_name=name, nested=True):
            # the parent run's keys: trials and runs compare column by column
            mlflow.log_params(lightfm_params(params))
            model = fit_lightfm(data, params, cfg.seed, cfg.popularity_window_days)
            recs = lightfm_policies(served_bundle(model, data, lists, params))
            table = score_policies(recs, {HEADLINE_TARGET: targets}, cfg.k, len(data.item_ids))
            scores = {name: headline(table, name, cfg.k) for name in recs}
            best = max(scores, key=lambda name: scores[name])
            mlflow.log_metrics(
                {f"val_{mlflow_key(n)}_{mlflow_key(cfg.headline)}": v for n, v in scores.items()}
            )
            mlflow.set_tag("policy", policy_of(best))
        trial.set_user_attr("params", params)
        trial.set_user_attr("policy", str(policy_of(best)))
        return scores[best]

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
    best = study.best_trial
    return TuningResult(
        params=dict(best.user_attrs["params"]),
        policy=Policy(best.user_attrs["policy"]),
        trials=study.trials_dataframe(
            attrs=("number", "value", "params", "user_attrs", "duration")
        ),
    )
