"""The pipeline as stages: check -> prepare -> tune -> fit_and_evaluate -> decide -> refit ->
register -> promote.

Every consumer calls these functions: ``recsys train`` through :func:`run_pipeline` (their
composition), the Airflow DAG one task per stage, notebooks as they like. Stages hand each
other only small values: a run folder (:class:`RunFolder`) holds the run's configuration,
its data snapshot and each stage's output, so a stage can run in another process, be retried
or re-run on its own, and the run stays reproducible from the folder.

Evaluation and serving use two fits of the same configuration: the *evaluated* model is
fitted up to the holdout start and judged on the holdout (the gate decides on it); the
*served* model is the chosen configuration refitted on every event up to the interval end
(:func:`refit`), so the registered artifact knows the freshest visitors and items. Its
metadata records both: ``cutoff_ms`` (served) and ``evaluated_cutoff_ms`` with the holdout
``metrics`` of the evaluated model.

Why one module of this size: the stages share the run folder and its records, each stage is
a few dozen lines, and the pipeline reads top to bottom here, in the order it runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from recsys import columns as C
from recsys.bundle import Bundle
from recsys.config import CHALLENGER_ALIAS, CHAMPION_ALIAS, Settings
from recsys.data import Dataset, EventStore
from recsys.data.check import StoreCheck, check_store, interval_end, iso
from recsys.data.profile import profile_dataset
from recsys.data.store import TRAINING_PROPERTIES, safe_url
from recsys.evaluation import (
    RELEVANT,
    SEGMENT,
    WARM,
    score_policies,
    visitor_scores,
    window_targets,
)
from recsys.evaluation.replay import REPLAY_TARGET, replay, replay_metrics
from recsys.evaluation.stats import Difference
from recsys.exceptions import ConfigurationError
from recsys.interactions import TrainingData, prepare_training_data
from recsys.models.fits import BaseFits
from recsys.names import DEFAULT_POLICY, Policy
from recsys.pipeline.candidates import ABLATION, CANDIDATES, PolicyBuilder, name_of, policy_of
from recsys.pipeline.compare import (
    BASELINES,
    gate_score,
)
from recsys.pipeline.config import HEADLINE_TARGET, PipelineConfig
from recsys.pipeline.gate import GateDecision, fallback, gate
from recsys.pipeline.report import (
    DESCRIPTION_TAG,
    RUN_NAME_TAG,
    learning_curve_plot,
    lightfm_params,
    log_data_windows,
    log_figures,
    log_results,
    metric_value,
    mlflow_key,
    policy_metrics_plot,
    precision_curve_plot,
    run_description,
    run_name,
    runs_view_columns,
)
from recsys.pipeline.tuning import Window, learning_curve, select
from recsys.pipeline.tuning import tune as search
from recsys.serving import Recommender, precompute_answers
from recsys.split import TimeSplit, make_split, window
from recsys.tracking import champion_version, configure, download_bundle, log_bundle_model

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- run folder


class RunFolder:
    """The folder of one run: configuration, data snapshot and every stage's output.

    Files: ``config.json`` (the :class:`PipelineConfig`, interval end resolved), ``run.json``
    (MLflow run id, split), ``data/*.parquet`` (the events of the window, the
    category/availability property rows, the category tree), ``tuning.json``,
    ``results.parquet``, ``targets.parquet``, ``evaluation.json``, ``decision.json``,
    ``bundle/`` (the served, refitted model), ``registered.json``, ``promoted.json``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def reset(self) -> None:
        """Empty the folder: a re-run of the same interval starts over, overwriting it."""
        if self.path.is_dir():
            for child in self.path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, value: dict[str, Any]) -> None:
        """Write ``value`` as ``name`` (JSON), atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
        tmp.replace(self.path / name)

    def read(self, name: str) -> dict[str, Any]:
        """Read the JSON file ``name``; a missing one names the stage that writes it."""
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run the stage that writes it first")
        result: dict[str, Any] = json.loads(path.read_text())
        return result

    @property
    def config(self) -> PipelineConfig:
        """The run's configuration, as :func:`prepare` recorded it."""
        return PipelineConfig.model_validate(self.read("config.json"))

    @property
    def run_id(self) -> str:
        """The MLflow run every stage logs into."""
        return str(self.read("run.json")["run_id"])

    @property
    def split(self) -> TimeSplit:
        """The run's time split; its ``end_ms`` is the interval end."""
        return TimeSplit(**self.read("run.json")["split"])

    @property
    def start_ms(self) -> int:
        """Time of the snapshot's first event (the training window's start)."""
        start = self.read("run.json").get("start_ms")
        if start is None:  # a folder written before run.json recorded it
            start = int(self.load_dataset().events[C.TIMESTAMP].min())
        return int(start)

    @property
    def fits(self) -> BaseFits:
        """LightFM fits of this run, kept in ``fits/`` so that every stage reuses them."""
        return BaseFits(self.path / "fits")

    @property
    def bundle_dir(self) -> Path:
        """Where :func:`refit` saves the served bundle."""
        return self.path / "bundle"

    def save_dataset(self, ds: Dataset) -> None:
        """Snapshot what training reads: events, category/availability rows, category tree."""
        data = self.path / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = ds.item_properties
        keep = props[C.PROPERTY].isin(TRAINING_PROPERTIES).to_numpy(dtype=bool)
        ds.events.to_parquet(data / "events.parquet", index=False)
        props.loc[keep].to_parquet(data / "item_properties.parquet", index=False)
        ds.category_tree.to_parquet(data / "category_tree.parquet", index=False)

    def load_dataset(self) -> Dataset:
        """The snapshot written by :meth:`save_dataset`."""
        data = self.path / "data"
        return Dataset(
            events=pd.read_parquet(data / "events.parquet"),
            item_properties=pd.read_parquet(data / "item_properties.parquet"),
            category_tree=pd.read_parquet(data / "category_tree.parquet"),
        )

    def training_data(
        self, cutoff_ms: int, event_weights: Mapping[str, float] | None = None
    ) -> TrainingData:
        """Training data of the snapshot strictly before ``cutoff_ms`` (interactions weighed
        by ``event_weights``, default the run's)."""
        ds, cfg = self.load_dataset(), self.config
        weights = cfg.event_weights if event_weights is None else event_weights
        return prepare_training_data(
            ds.events, ds.item_properties, ds.category_tree, cutoff_ms, weights
        )


def _store(cfg: PipelineConfig, settings: Settings) -> EventStore:
    """The event store the run reads: the configuration's, else the settings' one."""
    return EventStore(cfg.db_url or settings.resolved_db_url)


# ---------------------------------------------------------------------------- stages


def check(cfg: PipelineConfig, settings: Settings | None = None) -> StoreCheck:
    """Check that the event store can feed this run, before anything is fitted or registered.

    Resolves the interval end (``cfg.end_ms``, else the newest stored event + 1 ms) and
    applies the configuration's rules (see :func:`recsys.data.check.check_store`).

    Raises
    ------
    DataCheckError
        No, too few or stale events, or a broken schema; the message says which.
    """
    store = _store(cfg, settings or Settings())
    try:
        return check_store(
            store,
            cfg.end_ms,
            window_days=cfg.window_days,
            holdout_days=cfg.holdout_days,
            max_staleness_days=cfg.max_staleness_days,
            min_events=cfg.min_events,
            min_holdout_addtocart=cfg.min_holdout_addtocart,
        )
    finally:
        store.engine.dispose()


def prepare(
    cfg: PipelineConfig,
    workdir: str | Path,
    settings: Settings | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Read the run's window from the event store, split it, snapshot it into ``workdir``
    (emptied first) and open the run's MLflow run (tagged with ``tags``).

    Returns
    -------
    str
        The MLflow run id every later stage logs into.
    """
    settings = settings or Settings()
    configure(settings, *runs_view_columns(cfg))
    folder = RunFolder(workdir)
    folder.reset()
    store = _store(cfg, settings)
    try:
        end = interval_end(store, cfg.end_ms)
        start = None if cfg.window_days is None else end - cfg.window_days * C.DAY_MS
        ds = store.read_dataset(start, end)
    finally:
        store.engine.dispose()
    cfg = cfg.model_copy(update={"end_ms": end})
    split = make_split(ds.events, cfg.holdout_days, cfg.validation_days, end_ms=end)
    folder.save_dataset(ds)
    folder.write("config.json", cfg.model_dump(mode="json"))
    source = safe_url(store.url)
    start_ms = int(ds.events[C.TIMESTAMP].min())
    # named after the configured policy; tune renames it after what it chose
    name = run_name(CANDIDATES[cfg.candidates[-1]], cfg.lightfm, start_ms, split.holdout_start_ms)
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({"interval_end": iso(end), **(tags or {})})
        log_data_windows(ds.events, split, source)
        mlflow.log_params(
            {
                "event_store": source,
                "events": len(ds.events),
                "window_days": cfg.window_days,
                "window_start_ms": start,
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
    folder.write(
        "run.json", {"run_id": run.info.run_id, "split": asdict(split), "start_ms": start_ms}
    )
    return str(run.info.run_id)


def backtest_windows(folder: RunFolder) -> list[Window]:
    """The validation windows of the run (oldest first), each with the training data before
    it: ``backtest_windows`` consecutive windows of ``validation_days`` ending at the holdout.

    Raises
    ------
    ConfigurationError
        If the first window (and the ranker's training windows before it) would start before
        the data does.
    """
    cfg, split = folder.config, folder.split
    events = folder.load_dataset().events
    length = cfg.validation_days * C.DAY_MS
    first = split.holdout_start_ms - cfg.backtest_windows * length
    needed = first - cfg.ranker_windows * length
    if needed <= folder.start_ms:
        raise ConfigurationError(
            f"{cfg.backtest_windows} backtest window(s) and {cfg.ranker_windows} ranker "
            f"window(s) of {cfg.validation_days} days before the holdout need data from "
            f"{iso(needed)}, the data starts {iso(folder.start_ms)}: use fewer or shorter "
            "windows, or more data"
        )
    windows = []
    for start in range(first, split.holdout_start_ms, length):
        data = folder.training_data(start)
        targets = window_targets(events, data.user_ids, start, start + length, [HEADLINE_TARGET])
        windows.append(Window(start, start + length, data, targets[HEADLINE_TARGET]))
    return windows


def tune(workdir: str | Path, settings: Settings | None = None) -> dict[str, Any]:
    """Pick LightFM's parameters, then the served policy, on the backtest windows (never the
    holdout). Without trials the configured parameters are kept.

    Returns (and records) ``{"params": ..., "policy": ..., "validation": ...}``: the chosen
    parameters, the served :class:`~recsys.names.Policy` and every policy's headline per window.
    """
    folder = RunFolder(workdir)
    cfg, split = folder.config, folder.split
    configure(settings or Settings())
    windows = backtest_windows(folder)
    fits = folder.fits
    params = dict(cfg.lightfm)
    with mlflow.start_run(run_id=folder.run_id):
        if cfg.trials > 0:
            # the trials' fits stay in memory: only the chosen one is fitted (and kept) again
            result = search(windows, cfg, BaseFits())
            mlflow.log_text(result.trials.to_csv(index=False), "tuning/trials.csv")
            params = result.params
        if cfg.learning_curve:
            curve = learning_curve(windows[-1], params, cfg, fits)
            key = f"curve_validation_{mlflow_key(cfg.headline)}"
            for epoch, value in curve.items():
                mlflow.log_metric(key, metric_value(value), step=epoch)
            figure = learning_curve_plot(curve, cfg.headline, "validation")
            log_figures({"evaluation/learning_curve.png": figure})
        name, table = select(windows, PolicyBuilder(cfg, params, fits))
        mlflow.log_text(table.round(6).to_csv(), "tuning/validation.csv")
        # every run logs every policy's key (NaN: not a candidate of this run)
        mlflow.log_metrics(
            {
                f"val_{mlflow_key(n)}_{mlflow_key(cfg.headline)}": metric_value(
                    float(table["mean"].get(n, float("nan")))
                )
                for n in (*BASELINES, *CANDIDATES)
            }
        )
    policy, start_ms = CANDIDATES[name], folder.start_ms
    chosen: dict[str, Any] = {
        "params": params,
        "policy": str(policy),
        "validation": {n: float(v) for n, v in table["mean"].items()},
    }
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.log_params(lightfm_params(params) | {"policy": str(policy)})
        mlflow.set_tags(
            {
                RUN_NAME_TAG: run_name(policy, params, start_ms, split.holdout_start_ms),
                DESCRIPTION_TAG: run_description(
                    cfg, policy, params, split, start_ms, tuned=cfg.trials > 0
                ),
            }
        )
    folder.write("tuning.json", chosen)
    return chosen


def fit_and_evaluate(workdir: str | Path, settings: Settings | None = None) -> dict[str, float]:
    """Fit every policy up to the holdout start and evaluate it on the holdout as served:
    statically (every visitor as of the holdout start) and by replay (each add-to-cart with
    the session before it); log results and plots; keep every policy's per-visitor scores
    for the gate.

    Returns
    -------
    dict
        The served policy's gate metrics on the holdout (also in ``evaluation.json``).
    """
    folder = RunFolder(workdir)
    cfg, split = folder.config, folder.split
    chosen = folder.read("tuning.json")
    served = name_of(chosen["policy"])
    configure(settings or Settings())
    data = folder.training_data(split.holdout_start_ms)
    events = folder.load_dataset().events
    targets = window_targets(events, data.user_ids, split.holdout_start_ms, split.end_ms)
    builder = PolicyBuilder(cfg, chosen["params"], folder.fits)
    names = [*BASELINES, *CANDIDATES, *([ABLATION] if cfg.ablation else [])]
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.log_metrics(
            {
                "train_users": len(data.user_ids),
                "train_items": len(data.item_ids),
                "train_interactions": data.interactions.nnz,
                "holdout_addtocart_users": len(targets[HEADLINE_TARGET]),
            }
        )
        rankers = builder.build(data, names)
        results = score_policies(rankers, targets, cfg.k, len(data.item_ids))
        holdout = window(events, split.holdout_start_ms, split.end_ms)
        replays = {
            name: replay_metrics(replay(rec, holdout, data.user_ids, cfg.k), cfg.k)
            for name, rec in rankers.items()
        }
        replayed = pd.concat(replays, names=["model"]).assign(target=REPLAY_TARGET)
        results = pd.concat(
            [results, replayed.reset_index().set_index(["model", "target", SEGMENT])]
        ).sort_index()
        log_results(results)
        warm = targets[HEADLINE_TARGET]
        warm = warm[warm[SEGMENT] == WARM]
        visitors = pd.DataFrame(
            {
                name: visitor_scores(rec.recommend_batch, warm, cfg.k)[cfg.headline]
                for name, rec in rankers.items()
            }
        ).assign(**{C.VISITOR: warm[C.VISITOR].to_numpy()})
        figures = {
            "evaluation/precision_at_k.png": precision_curve_plot(
                rankers, targets[HEADLINE_TARGET]
            ),
            "evaluation/policies.png": policy_metrics_plot(results, cfg.gate_metrics),
        }
        log_figures(figures)
        mlflow.log_dict(builder.reports, "evaluation/ranker.json")
        candidate = gate_score(results, served, cfg.gate_metrics)
        mlflow.log_metrics(
            {
                f"served_{mlflow_key(m)}": metric_value(v)
                for m, v in zip(cfg.gate_metrics, candidate, strict=True)
            }
        )
    metrics = dict(zip(cfg.gate_metrics, candidate, strict=True))
    results.to_parquet(folder.path / "results.parquet")
    visitors.to_parquet(folder.path / "visitors.parquet", index=False)
    _save_targets(folder, targets[HEADLINE_TARGET])
    folder.write("evaluation.json", {"cutoff_ms": split.holdout_start_ms, "metrics": metrics})
    return metrics


@dataclass(frozen=True)
class ChampionComparison:
    """How the champion entered the gate.

    Attributes
    ----------
    version : str or None
        The champion's registered version (None: there is none).
    compared_as : str
        ``none`` (no champion), ``same-config`` (the candidate's configuration: a refresh, not
        a rival), ``artifact`` (its artifact, trained before this holdout, scored as served),
        ``refit`` (its artifact saw the holdout: its configuration refitted up to the holdout
        start on this run's data, scored as served) or ``not-comparable`` (it saw the holdout
        and records no configuration).
    values : numpy.ndarray or None
        Its headline per holdout visitor (the gate's visitors, in their order), when scored.
    """

    version: str | None
    compared_as: str
    values: np.ndarray | None = None


def configuration(metadata: Mapping[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    """The configuration a bundle was trained with, from its metadata: LightFM parameters,
    served policy, popularity window, event weights and the learned ranker's settings
    (``cfg``'s where a bundle predates recording them)."""
    return {
        "params": dict(metadata.get("params") or {}),
        "policy": str(metadata.get("policy", DEFAULT_POLICY)),
        "popularity_window_days": int(
            metadata.get("popularity_window_days", cfg.popularity_window_days)
        ),
        "event_weights": dict(metadata.get("event_weights", cfg.event_weights)),
        "ranker": dict(metadata.get("ranker_settings", _ranker_settings(cfg))),
    }


def _ranker_settings(cfg: PipelineConfig) -> dict[str, Any]:
    return {
        "ranker": dict(cfg.ranker),
        "ranker_windows": cfg.ranker_windows,
        "ranker_sessions": cfg.ranker_sessions,
    }


def judge_champion(
    folder: RunFolder, champion: tuple[str, Bundle] | None, candidate: Mapping[str, Any]
) -> ChampionComparison:
    """Score the champion on this run's holdout so that it and the candidate are judged on
    exactly the same visitors (see :class:`ChampionComparison` for the cases).

    Parameters
    ----------
    folder : RunFolder
        This run (after :func:`fit_and_evaluate`).
    champion : (version, Bundle) or None
        The current champion.
    candidate : mapping
        The candidate's :func:`configuration`.
    """
    if champion is None:
        return ChampionComparison(None, "none")
    version, bundle = champion
    cfg, split = folder.config, folder.split
    config = configuration(bundle.metadata, cfg)
    if config == dict(candidate):
        return ChampionComparison(version, "same-config")
    warm = _warm_targets(folder)
    cutoff = bundle.metadata.get("cutoff_ms")
    if cutoff is None or int(cutoff) <= split.holdout_start_ms:
        rec = Recommender(bundle, policy=config["policy"])
        return ChampionComparison(version, "artifact", _headline_values(rec, warm, cfg))
    if not config["params"]:
        log.warning("champion v%s saw this holdout and records no configuration", version)
        return ChampionComparison(version, "not-comparable")
    log.info("champion v%s saw this holdout: refitting its configuration to its start", version)
    data = folder.training_data(split.holdout_start_ms, config["event_weights"])
    knobs = cfg.model_copy(
        update={"popularity_window_days": config["popularity_window_days"], **config["ranker"]}
    )
    name = name_of(config["policy"])
    rec = PolicyBuilder(knobs, config["params"], folder.fits).build(data, [name])[name]
    return ChampionComparison(version, "refit", _headline_values(rec, warm, cfg))


def _explained(reason: str, comparison: ChampionComparison) -> str:
    """The gate's reason with how the champion was compared."""
    champion = f"champion v{comparison.version}"
    if comparison.compared_as == "same-config":
        return f"{champion} has the same configuration (this run refreshes it); {reason}"
    if comparison.compared_as == "not-comparable":
        return f"{champion} saw this holdout and records no configuration: not compared; {reason}"
    if comparison.compared_as == "refit":
        return f"{reason} ({champion} saw this holdout: its configuration refitted to its start)"
    if comparison.compared_as == "artifact":
        return f"{reason} ({champion} as served)"
    return f"first model: {reason}"


def decide(workdir: str | Path, settings: Settings | None = None) -> GateDecision:
    """The gate: the served candidate against every baseline and the champion's configuration,
    all scored on the same holdout visitors as served; promoted only when every difference is
    above ``min_lift`` by more than noise (paired bootstrap over visitors)."""
    folder = RunFolder(workdir)
    cfg = folder.config
    settings = settings or Settings()
    client = configure(settings)
    chosen = folder.read("tuning.json")
    visitors = pd.read_parquet(folder.path / "visitors.parquet")
    served = name_of(chosen["policy"])
    rivals = {name: visitors[name].to_numpy() for name in BASELINES}
    # the run's own knobs fill in what tuning does not choose
    candidate = configuration({**chosen, "ranker_settings": _ranker_settings(cfg)}, cfg)
    comparison = judge_champion(folder, _champion(client, settings), candidate)
    if comparison.values is not None:
        rivals[f"champion v{comparison.version}"] = comparison.values
    decision = gate(
        cfg.headline,
        visitors[served].to_numpy(),
        rivals,
        cfg.min_lift,
        cfg.bootstrap_resamples,
        cfg.seed,
    )
    decision = GateDecision(
        decision.promote, _explained(decision.reason, comparison), decision.differences
    )
    if comparison.compared_as == "none":
        decision = fallback(decision, {name: rivals[name] for name in BASELINES})
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.set_tags(
            {
                "champion_version": comparison.version or "none",
                "champion_compared_as": comparison.compared_as,
            }
        )
        # every baseline's interval under the same keys in every run; the champion's as
        # champion_* (NaN when there was no champion to compare)
        champion_diff = next(
            (d for n, d in decision.differences.items() if n.startswith("champion")), None
        )
        lifts = {
            **{n: decision.differences[n] for n in BASELINES},
            "champion": champion_diff,
        }
        metrics = {}
        for rival, diff in lifts.items():
            for part in ("mean", "low", "high"):
                value = float("nan") if diff is None else getattr(diff, part)
                metrics[f"gate_lift_{mlflow_key(rival)}_{part}"] = metric_value(value)
        mlflow.log_metrics(metrics)
    folder.write(
        "decision.json",
        {
            "promote": decision.promote,
            "reason": decision.reason,
            "serves": decision.serves,
            "differences": {n: asdict(d) for n, d in decision.differences.items()},
            "champion_version": comparison.version,
            "champion_compared_as": comparison.compared_as,
        },
    )
    log.info("gate: %s", decision.reason)
    return decision


def refit(workdir: str | Path, settings: Settings | None = None) -> Path:
    """Refit the chosen configuration on every event of the window up to the interval end
    and save the bundle that is registered and served.

    Its metadata records the served ``cutoff_ms`` (the interval end), the
    ``evaluated_cutoff_ms`` (the holdout start) with the evaluated model's holdout
    ``metrics``, the configuration (``params``, ``policy``, ``event_weights``, the ranker's
    settings) and the gate's reason.

    Returns
    -------
    pathlib.Path
        The bundle folder (``workdir/bundle``).
    """
    folder = RunFolder(workdir)
    cfg, split = folder.config, folder.split
    chosen, evaluation = folder.read("tuning.json"), folder.read("evaluation.json")
    decision = folder.read("decision.json")
    params = chosen["params"]
    # the candidate, or the baseline a first run falls back to (see gate.fallback)
    name = decision.get("serves") or name_of(chosen["policy"])
    policy = policy_of(name)
    configure(settings or Settings())
    data = folder.training_data(split.end_ms)
    rec = PolicyBuilder(cfg, params, folder.fits).build(data, [name])[name]
    bundle = rec.bundle
    bundle.metadata.update(
        {
            "policy": str(policy),
            "run_id": folder.run_id,
            "cutoff_ms": split.end_ms,
            "evaluated_cutoff_ms": evaluation["cutoff_ms"],
            "holdout_end_ms": split.end_ms,
            "params": params,
            "event_weights": dict(cfg.event_weights),
            "ranker_settings": _ranker_settings(cfg),
            "metrics": evaluation["metrics"],
            "gate": decision["reason"],
        }
    )
    if cfg.precompute_k:
        bundle.answers = precompute_answers(rec, cfg.precompute_k)
    if folder.bundle_dir.exists():
        shutil.rmtree(folder.bundle_dir)
    bundle.save(folder.bundle_dir)
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.log_metrics(
            {
                "served_train_users": len(data.user_ids),
                "served_train_items": len(data.item_ids),
                "served_train_interactions": data.interactions.nnz,
            }
        )
        mlflow.set_tags(
            {
                "served_cutoff_ms": str(split.end_ms),
                "evaluated_cutoff_ms": str(evaluation["cutoff_ms"]),
            }
        )
    for stale in ("registered.json", "promoted.json"):  # they described an earlier bundle
        (folder.path / stale).unlink(missing_ok=True)
    return folder.bundle_dir


def register(workdir: str | Path, settings: Settings | None = None) -> str:
    """Log the served bundle as a pyfunc model of the run and register a new version (once:
    a repeated call for the same bundle returns the version already registered)."""
    folder = RunFolder(workdir)
    if (folder.path / "registered.json").is_file():
        return str(folder.read("registered.json")["version"])
    settings = settings or Settings()
    configure(settings)
    with mlflow.start_run(run_id=folder.run_id):
        version = log_bundle_model(folder.bundle_dir, settings.model_name)
    folder.write("registered.json", {"version": version})
    return version


def promote(workdir: str | Path, settings: Settings | None = None) -> str:
    """Point ``champion`` at the new version if the gate said so (and the run may promote),
    else ``challenger``.

    Returns the alias moved; the gate's reason is tagged on the version and the run.
    """
    folder = RunFolder(workdir)
    cfg = folder.config
    settings = settings or Settings()
    client = configure(settings)
    version = str(folder.read("registered.json")["version"])
    decision = folder.read("decision.json")
    reason = decision["reason"]
    if decision["promote"] and not cfg.promote:
        reason += " (promotion turned off for this run)"
    alias = CHAMPION_ALIAS if decision["promote"] and cfg.promote else CHALLENGER_ALIAS
    client.set_registered_model_alias(settings.model_name, alias, version)
    client.set_model_version_tag(settings.model_name, version, "gate", reason)
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.set_tags({"gate": reason, "alias": alias, "model_version": version})
    folder.write("promoted.json", {"alias": alias, "version": version, "reason": reason})
    log.info("version %s -> %s: %s", version, alias, reason)
    return alias


# ---------------------------------------------------------------------------- composition


@dataclass
class PipelineResult:
    """What a run produced."""

    run_id: str
    model_version: str
    alias: str
    decision: GateDecision
    policy: Policy
    params: dict[str, Any]
    #: rows: (model, target, segment); columns: metrics
    results: pd.DataFrame
    #: how the champion entered the gate (see ChampionComparison.compared_as)
    champion_compared_as: str
    #: the gate's comparisons: rival -> mean difference of the headline (candidate - rival)
    #: over the holdout's warm visitors with its 95% bootstrap interval
    differences: dict[str, Difference]
    #: the served model's cutoff (the interval end) and the evaluated one's (holdout start)
    cutoff_ms: int
    evaluated_cutoff_ms: int


def run_pipeline(
    cfg: PipelineConfig,
    settings: Settings | None = None,
    workdir: str | Path | None = None,
    tags: Mapping[str, str] | None = None,
) -> PipelineResult:
    """Every stage in order. Without ``workdir`` the run folder is temporary (under the
    settings' ``var_dir``) and removed at the end."""
    settings = settings or Settings()
    if workdir is None:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="run-", dir=settings.var_dir) as tmp:
            return run_pipeline(cfg, settings, tmp, tags)
    checked = check(cfg, settings)
    run_id = prepare(cfg.model_copy(update={"end_ms": checked.end_ms}), workdir, settings, tags)
    chosen = tune(workdir, settings)
    fit_and_evaluate(workdir, settings)
    decision = decide(workdir, settings)
    refit(workdir, settings)
    version = register(workdir, settings)
    alias = promote(workdir, settings)
    folder = RunFolder(workdir)
    decided = folder.read("decision.json")
    return PipelineResult(
        run_id=run_id,
        model_version=version,
        alias=alias,
        decision=decision,
        policy=policy_of(decided.get("serves") or name_of(chosen["policy"])),
        params=chosen["params"],
        results=pd.read_parquet(folder.path / "results.parquet"),
        champion_compared_as=decided["champion_compared_as"],
        differences=dict(decision.differences),
        cutoff_ms=folder.split.end_ms,
        evaluated_cutoff_ms=folder.split.holdout_start_ms,
    )


# ---------------------------------------------------------------------------- champion


def _save_targets(folder: RunFolder, targets: pd.DataFrame) -> None:
    frame = targets.assign(**{RELEVANT: [list(map(int, r)) for r in targets[RELEVANT]]})
    frame.to_parquet(folder.path / "targets.parquet", index=False)


def _load_targets(folder: RunFolder) -> pd.DataFrame:
    frame = pd.read_parquet(folder.path / "targets.parquet")
    frame[RELEVANT] = [np.asarray(r, dtype=np.int64) for r in frame[RELEVANT]]
    return frame


def _champion(client: Any, settings: Settings) -> tuple[str, Bundle] | None:
    """The current champion's version and bundle (None if there is no champion)."""
    version = champion_version(client, settings.model_name)
    if version is None:
        return None
    path, _ = download_bundle(
        f"models:/{settings.model_name}/{version}",
        settings.var_dir / "model-cache",
        settings.resolved_tracking_uri,
    )
    return version, Bundle.load(path)


def _warm_targets(folder: RunFolder) -> pd.DataFrame:
    """The holdout's add-to-cart targets of warm visitors: the gate's visitors, in order."""
    targets = _load_targets(folder)
    return targets[targets[SEGMENT] == WARM]


def _headline_values(rec: Recommender, warm: pd.DataFrame, cfg: PipelineConfig) -> np.ndarray:
    """The headline of each of ``warm``'s visitors under ``rec``, as served."""
    return visitor_scores(rec.recommend_batch, warm, cfg.k)[cfg.headline].to_numpy()
