"""Train -> evaluate -> log -> register -> gate: the one function every consumer calls.

The CLI (``recsys train``), the Airflow DAG and the notebooks call :func:`run_pipeline`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys import columns as C
from recsys.bundle import Bundle
from recsys.config import CHALLENGER_ALIAS, CHAMPION_ALIAS, Settings
from recsys.data import (
    Dataset,
    EventStore,
    load_category_tree,
    load_dataset,
    load_item_properties,
)
from recsys.data.profile import profile_dataset
from recsys.evaluation import TARGETS, evaluate_policy, hits_matrix, holdout_targets
from recsys.interactions import DEFAULT_EVENT_WEIGHTS, TrainingData, prepare_training_data
from recsys.models.baselines import PopularityModel, RecentViewsModel
from recsys.models.lightfm import LightFMModel
from recsys.names import DEFAULT_POLICY, DEFAULT_RECENT_SLOTS
from recsys.serving import Recommender, precompute_answers
from recsys.split import TimeSplit, make_split, window
from recsys.tracking import (
    GateDecision,
    champion_version,
    configure,
    download_bundle,
    gate,
    log_bundle_model,
)

log = logging.getLogger(__name__)

#: the headline: precision@5 of add-to-cart targets for warm visitors
HEADLINE = ("addtocart", "warm", "precision@5")


@dataclass
class PipelineConfig:
    """Knobs of one pipeline run (all have working defaults)."""

    data_dir: Path = Path("data/raw")
    #: read events from this event store instead of ``data_dir/events.csv``
    db_url: str | None = None
    holdout_days: int = 7
    validation_days: int = 7
    k: int = 5
    trials: int = 10
    timeout_s: float | None = 900.0
    #: LightFM parameters used as they are when ``trials == 0`` and as the search's anchor
    lightfm: dict[str, Any] = field(
        default_factory=lambda: {
            "loss": "warp",
            "no_components": 64,
            "learning_rate": 0.05,
            "item_alpha": 1e-6,
            "user_alpha": 1e-6,
            "epochs": 15,
            "recent_slots": DEFAULT_RECENT_SLOTS,
        }
    )
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    popularity_window_days: int = 14
    #: served policy when no tuning ran (tuning picks it on the validation window)
    default_policy: str = DEFAULT_POLICY
    #: served answers precomputed per known visitor (k up to this); 0 = rank every request live
    precompute_k: int = 10
    seed: int = 42
    progress: bool = True


@dataclass
class PipelineResult:
    """What a run produced."""

    run_id: str
    model_version: str
    alias: str
    decision: GateDecision
    policy: str
    params: dict[str, Any]
    #: rows: (model, target, segment); columns: metrics
    results: pd.DataFrame
    #: the champion's gate metrics re-scored on this run's holdout (None: there was none, or it
    #: was trained on part of this holdout and was not re-scored)
    champion_score: tuple[float, ...] | None


# ---------------------------------------------------------------------------- evaluation


#: name of each LightFM-based policy as reported, by serving policy
LIGHTFM_POLICIES = {"model": "lightfm", "blend": "lightfm+recent"}


def lightfm_policies(bundle: Bundle) -> dict[str, Recommender]:
    """LightFM alone and blended with the visitor's recent views, exactly as served."""
    return {name: Recommender(bundle, policy=p) for p, name in LIGHTFM_POLICIES.items()}


def baseline_policies(data: TrainingData, window_days: int) -> dict[str, Recommender]:
    """Popularity (recent, add-to-cart weighted) and "recently viewed by this visitor"."""
    popular = PopularityModel(window_days=window_days).fit(data).to_bundle(data)
    recent = RecentViewsModel(window_days=window_days).fit(data).to_bundle(data)
    return {
        "popular": Recommender(popular, policy="popular"),
        "recent": Recommender(recent, policy="recent"),
    }


def score_policies(
    recommenders: dict[str, Recommender],
    targets: dict[str, pd.DataFrame],
    k: int,
) -> pd.DataFrame:
    """Metrics of every policy for every target and segment, one row each."""
    frames = []
    for name, rec in recommenders.items():
        for target, frame in targets.items():
            table = evaluate_policy(
                rec.recommend_batch, frame, k=k, n_catalogue=len(rec.bundle.item_ids)
            )
            frames.append(table.assign(model=name, target=target).rename_axis("segment"))
    return pd.concat(frames).reset_index().set_index(["model", "target", "segment"]).sort_index()


def window_targets(
    events: pd.DataFrame,
    known_users: np.ndarray,
    start_ms: int,
    end_ms: int,
    kinds: Sequence[str] = TARGETS,
) -> dict[str, pd.DataFrame]:
    """Targets per kind ("addtocart", "any") of the window [start, end).

    Warm = in ``known_users``, the visitors seen before the window (the ``user_ids`` of the
    training data whose cutoff is ``start_ms``).
    """
    after = window(events, start_ms, end_ms)
    return {t: holdout_targets(known_users, after, t) for t in kinds}


#: what the gate compares, in order: the headline, then the metric that breaks exact ties
GATE_METRICS = ("precision@5", "ndcg@5")


def gate_score(results: pd.DataFrame, model: str) -> tuple[float, ...]:
    """``model``'s gate metrics (add-to-cart targets, warm visitors) from a results table."""
    target, segment, _ = HEADLINE
    row = results.loc[(model, target, segment)]
    return tuple(float(row[m]) for m in GATE_METRICS)


def headline(results: pd.DataFrame, model: str) -> float:
    """The headline metric of ``model`` in a results table."""
    target, segment, metric = HEADLINE
    return float(results.loc[(model, target, segment), metric])


# ---------------------------------------------------------------------------- training


def _fit_lightfm(
    data: TrainingData,
    params: dict[str, Any],
    seed: int,
    popularity_window_days: int,
    on_epoch: Callable[[int, LightFMModel], None] | None = None,
    progress: bool = False,
) -> LightFMModel:
    params = dict(params)
    params.pop("recent_slots", None)  # a serving knob, not LightFM's
    epochs = int(params.pop("epochs"))
    model = LightFMModel(
        epochs=epochs, random_state=seed, popularity_window_days=popularity_window_days, **params
    )
    bar = tqdm(total=epochs, desc="LightFM epochs", disable=not progress, leave=False)

    def callback(epoch: int, m: LightFMModel) -> None:
        bar.update(1)
        if on_epoch is not None:
            on_epoch(epoch, m)

    model.fit(data, epoch_callback=callback)
    bar.close()
    return model


def _served_bundle(model: LightFMModel, data: TrainingData, params: dict[str, Any]) -> Bundle:
    """The model's bundle carrying the serving knobs it was evaluated with."""
    bundle = model.to_bundle(data)
    bundle.metadata["recent_slots"] = int(params.get("recent_slots", DEFAULT_RECENT_SLOTS))
    return bundle


def _suggest(trial: Any, base: dict[str, Any]) -> dict[str, Any]:
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


def tune(
    ds: Dataset, events: pd.DataFrame, split: TimeSplit, cfg: PipelineConfig
) -> tuple[dict[str, Any], str, pd.DataFrame]:
    """Optuna search on the validation window; returns (best params, best policy, trials table).

    Each trial is a nested MLflow run. Only data before the holdout is touched.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = prepare_training_data(
        events, ds.item_properties, ds.category_tree, split.validation_start_ms, cfg.event_weights
    )
    targets = window_targets(
        events, data.user_ids, split.validation_start_ms, split.holdout_start_ms, ["addtocart"]
    )

    def objective(trial: optuna.Trial) -> float:
        params = cfg.lightfm if trial.number == 0 else _suggest(trial, cfg.lightfm)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(params)
            model = _fit_lightfm(data, params, cfg.seed, cfg.popularity_window_days)
            recs = lightfm_policies(_served_bundle(model, data, params))
            table = score_policies(recs, targets, cfg.k)
            scores = {n: headline(table, n) for n in recs}
            best = max(scores, key=lambda n: scores[n])
            policy = {name: p for p, name in LIGHTFM_POLICIES.items()}[best]
            mlflow.log_metrics(
                {f"val_{_metric_key(n)}_precision_at_5": v for n, v in scores.items()}
            )
            mlflow.set_tag("policy", policy)
        trial.set_user_attr("params", params)
        trial.set_user_attr("policy", policy)
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
    table = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs", "duration"))
    return dict(best.user_attrs["params"]), str(best.user_attrs["policy"]), table


# ---------------------------------------------------------------------------- logging helpers


def _metric_key(name: str) -> str:
    return name.replace("+", "_plus_").replace("@", "_at_")


def _log_results(results: pd.DataFrame) -> None:
    metrics = {}
    for (model, target, segment), row in results.iterrows():
        for metric, value in row.items():
            if pd.notna(value):
                metrics[f"{_metric_key(model)}.{target}.{segment}.{_metric_key(str(metric))}"] = (
                    float(value)
                )
    mlflow.log_metrics(metrics)


def _precision_curve_plot(
    recommenders: dict[str, Recommender], targets: pd.DataFrame, max_k: int = 20
) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warm = targets[targets["segment"] == "warm"]
    users = warm[C.VISITOR].to_numpy()
    relevant = list(warm["relevant"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = np.arange(1, max_k + 1)
    for name, rec in recommenders.items():
        hits = hits_matrix(rec.recommend_batch(users, max_k), relevant)
        precision = (np.cumsum(hits, axis=1) / ks).mean(axis=0) if len(users) else np.zeros(max_k)
        ax.plot(ks, precision, marker="o", markersize=3, label=name)
    ax.set(xlabel="k", ylabel="precision@k", title="Holdout add-to-cart, warm visitors")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- the pipeline


def load_data(cfg: PipelineConfig) -> Dataset:
    """The data trained on: events from the store when ``cfg.db_url`` is set (item properties
    and category tree from ``cfg.data_dir``, ``events.csv`` not read), else all from the CSV
    files."""
    if cfg.db_url is None:
        return load_dataset(cfg.data_dir)
    return Dataset(
        events=EventStore(cfg.db_url).read_events(),
        item_properties=load_item_properties([cfg.data_dir / n for n in C.PROPERTIES_FILES]),
        category_tree=load_category_tree(cfg.data_dir / C.CATEGORY_TREE_FILE),
    )


def run_pipeline(cfg: PipelineConfig, settings: Settings | None = None) -> PipelineResult:
    """Load -> split -> tune -> fit -> evaluate -> log -> register -> gate."""
    settings = settings or Settings()
    client = configure(settings)
    ds = load_data(cfg)
    events = ds.events
    split = make_split(events, cfg.holdout_days, cfg.validation_days)

    with mlflow.start_run(run_name="train") as run:
        mlflow.log_params(
            {
                "data_dir": str(cfg.data_dir),
                "events": len(events),
                "holdout_days": cfg.holdout_days,
                "validation_days": cfg.validation_days,
                "validation_start_ms": split.validation_start_ms,
                "holdout_start_ms": split.holdout_start_ms,
                "end_ms": split.end_ms,
                "k": cfg.k,
                "trials": cfg.trials,
                **{f"weight_{k}": v for k, v in cfg.event_weights.items()},
            }
        )
        mlflow.log_dict(profile_dataset(ds), "data_profile.json")

        params, policy = dict(cfg.lightfm), cfg.default_policy
        if cfg.trials > 0:
            params, policy, trials = tune(ds, events, split, cfg)
            mlflow.log_text(trials.to_csv(index=False), "tuning/trials.csv")
        mlflow.log_params({f"lightfm_{k}": v for k, v in params.items()} | {"policy": policy})

        data = prepare_training_data(
            events, ds.item_properties, ds.category_tree, split.holdout_start_ms, cfg.event_weights
        )
        targets = window_targets(events, data.user_ids, split.holdout_start_ms, split.end_ms)
        mlflow.log_metrics(
            {
                "train_users": len(data.user_ids),
                "train_items": len(data.item_ids),
                "train_interactions": data.interactions.nnz,
                "holdout_addtocart_users": len(targets["addtocart"]),
            }
        )

        last: list[Bundle] = []  # the latest epoch's bundle: the final one once fitting ends

        def curve(epoch: int, model: LightFMModel) -> None:
            # diagnostic only: epochs were chosen on the validation window, not here
            last[:] = [_served_bundle(model, data, params)]
            rec = Recommender(last[0], policy=policy)
            table = score_policies({"lightfm": rec}, {"addtocart": targets["addtocart"]}, cfg.k)
            mlflow.log_metric(
                "curve_holdout_precision_at_5", headline(table, "lightfm"), step=epoch
            )

        lfm = _fit_lightfm(
            data,
            params,
            cfg.seed,
            cfg.popularity_window_days,
            on_epoch=curve,
            progress=cfg.progress,
        )
        bundle = last[0] if last else _served_bundle(lfm, data, params)
        recommenders = {
            **baseline_policies(data, cfg.popularity_window_days),
            **lightfm_policies(bundle),
        }
        results = score_policies(recommenders, targets, cfg.k)
        _log_results(results)
        mlflow.log_table(results.reset_index(), "evaluation/results.json")
        mlflow.log_text(results.round(4).to_string(), "evaluation/results.txt")
        mlflow.log_figure(
            _precision_curve_plot(recommenders, targets["addtocart"]),
            "evaluation/precision_at_k.png",
        )

        served = LIGHTFM_POLICIES[policy]
        candidate = gate_score(results, served)
        mlflow.log_metric("served_precision_at_5", candidate[0])
        bundle.metadata.update(
            {
                "policy": policy,
                "run_id": run.info.run_id,
                "cutoff_ms": split.holdout_start_ms,
                "params": params,
                "metrics": dict(zip(GATE_METRICS, candidate, strict=True)),
            }
        )
        if cfg.precompute_k:
            bundle.answers = precompute_answers(Recommender(bundle, policy), cfg.precompute_k)
        with tempfile.TemporaryDirectory() as tmp:
            bundle.save(Path(tmp) / "bundle")
            version = log_bundle_model(Path(tmp) / "bundle", settings.model_name)

        champion = _champion_bundle(client, settings)
        unjudged = _trained_on_holdout(champion, split.holdout_start_ms)
        champion_score = None
        if champion is not None and unjudged is None:
            champion_score = _rescore(champion, targets, cfg.k)
        baselines = {name: gate_score(results, name) for name in ("popular", "recent")}
        decision = (
            GateDecision(False, unjudged)
            if unjudged is not None
            else gate(candidate, champion_score, baselines, GATE_METRICS)
        )
        alias = CHAMPION_ALIAS if decision.promote else CHALLENGER_ALIAS
        client.set_registered_model_alias(settings.model_name, alias, version)
        client.set_model_version_tag(settings.model_name, version, "gate", decision.reason)
        mlflow.set_tags({"gate": decision.reason, "alias": alias, "model_version": version})
        if champion_score is not None:
            mlflow.log_metrics(
                {
                    f"champion_rescored_{_metric_key(m)}": v
                    for m, v in zip(GATE_METRICS, champion_score, strict=True)
                }
            )
        log.info("version %s -> %s: %s", version, alias, decision.reason)
        return PipelineResult(
            run_id=run.info.run_id,
            model_version=version,
            alias=alias,
            decision=decision,
            policy=policy,
            params=params,
            results=results,
            champion_score=champion_score,
        )


def _champion_bundle(client: Any, settings: Settings) -> Bundle | None:
    """The current champion's bundle (None if there is no champion)."""
    version = champion_version(client, settings.model_name)
    if version is None:
        return None
    path, _ = download_bundle(
        f"models:/{settings.model_name}/{version}",
        settings.var_dir / "model-cache",
        settings.resolved_tracking_uri,
    )
    return Bundle.load(path)


def _trained_on_holdout(champion: Bundle | None, holdout_start_ms: int) -> str | None:
    """Why the champion cannot be judged on this holdout, or None if it can.

    A champion whose training cutoff is after the holdout start learned from part of the
    holdout: its metrics there would be inflated, so it is kept without a comparison.
    """
    cutoff = None if champion is None else champion.metadata.get("cutoff_ms")
    if cutoff is None or int(cutoff) <= holdout_start_ms:
        return None
    reason = (
        f"champion kept without comparison: it was trained on data up to {int(cutoff)}, "
        f"after this holdout's start {holdout_start_ms}, so its holdout metrics are inflated"
    )
    log.warning(reason)
    return reason


def _rescore(champion: Bundle, targets: dict[str, pd.DataFrame], k: int) -> tuple[float, ...]:
    """The champion's gate metrics on *this* run's holdout."""
    rec = Recommender(champion, policy=champion.metadata.get("policy", DEFAULT_POLICY))
    table = score_policies({"champion": rec}, {"addtocart": targets["addtocart"]}, k)
    return gate_score(table, "champion")
