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
from recsys.bundle import Bundle, serving_lists
from recsys.config import CHALLENGER_ALIAS, CHAMPION_ALIAS, Settings
from recsys.data import Dataset, EventStore
from recsys.data.check import StoreCheck, check_store, interval_end, iso
from recsys.data.profile import profile_dataset
from recsys.data.store import TRAINING_PROPERTIES, safe_url
from recsys.evaluation import RELEVANT, score_policies, window_targets
from recsys.interactions import TrainingData, prepare_training_data
from recsys.models.lightfm import LightFMModel
from recsys.names import DEFAULT_POLICY, Policy
from recsys.pipeline.compare import (
    BASELINES,
    LIGHTFM_POLICIES,
    baseline_policies,
    gate_score,
    headline,
    lightfm_policies,
)
from recsys.pipeline.config import HEADLINE_TARGET, PipelineConfig
from recsys.pipeline.fitting import fit_lightfm, served_bundle
from recsys.pipeline.gate import GateDecision, gate
from recsys.pipeline.report import log_results, mlflow_key, precision_curve_plot
from recsys.pipeline.tuning import tune as search
from recsys.serving import Recommender
from recsys.split import TimeSplit, make_split
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
    configure(settings)
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
    with mlflow.start_run(run_name="train") as run:
        mlflow.set_tags({"interval_end": iso(end), **(tags or {})})
        mlflow.log_params(
            {
                "event_store": safe_url(store.url),
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
    folder.write("run.json", {"run_id": run.info.run_id, "split": asdict(split)})
    return str(run.info.run_id)


def tune(workdir: str | Path, settings: Settings | None = None) -> dict[str, Any]:
    """Pick LightFM parameters and the served policy on the validation window.

    Without trials the configuration's defaults are kept. Only data before the holdout is
    read. Returns (and records) ``{"params": ..., "policy": ...}``.
    """
    folder = RunFolder(workdir)
    cfg, split = folder.config, folder.split
    configure(settings or Settings())
    chosen: dict[str, Any] = {"params": dict(cfg.lightfm), "policy": str(cfg.default_policy)}
    if cfg.trials > 0:
        data = folder.training_data(split.validation_start_ms)
        events = folder.load_dataset().events
        targets = window_targets(
            events,
            data.user_ids,
            split.validation_start_ms,
            split.holdout_start_ms,
            [HEADLINE_TARGET],
        )[HEADLINE_TARGET]
        with mlflow.start_run(run_id=folder.run_id):
            result = search(data, targets, cfg)
            mlflow.log_text(result.trials.to_csv(index=False), "tuning/trials.csv")
        chosen = {"params": result.params, "policy": str(result.policy)}
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.log_params(
            {f"lightfm_{k}": v for k, v in chosen["params"].items()} | {"policy": chosen["policy"]}
        )
    folder.write("tuning.json", chosen)
    return chosen


class _LearningCurve:
    """Logs the served policy's headline after every epoch; keeps the last epoch's bundle,
    which is the fitted model's, so it is not exported twice."""

    def __init__(
        self,
        data: TrainingData,
        params: dict[str, Any],
        policy: Policy,
        targets: pd.DataFrame,
        cfg: PipelineConfig,
    ) -> None:
        self.data, self.params, self.policy, self.targets, self.cfg = (
            data,
            params,
            policy,
            targets,
            cfg,
        )
        self.lists = serving_lists(data, cfg.popularity_window_days)
        self.bundle: Bundle | None = None

    def __call__(self, epoch: int, model: LightFMModel) -> None:
        # diagnostic only: the epochs were chosen on the validation window, not here
        self.bundle = served_bundle(model, self.data, self.lists, self.params)
        rec = {"lightfm": Recommender(self.bundle, policy=self.policy)}
        table = score_policies(
            rec, {HEADLINE_TARGET: self.targets}, self.cfg.k, len(self.data.item_ids)
        )
        key = f"curve_holdout_{mlflow_key(self.cfg.headline)}"
        mlflow.log_metric(key, headline(table, "lightfm", self.cfg.k), step=epoch)


def fit_and_evaluate(workdir: str | Path, settings: Settings | None = None) -> dict[str, float]:
    """Fit the tuned configuration up to the holdout start, evaluate every policy and baseline
    on the holdout as served, log results and plots.

    Returns
    -------
    dict
        The served policy's gate metrics on the holdout (also in ``evaluation.json``).
    """
    folder = RunFolder(workdir)
    cfg, split = folder.config, folder.split
    chosen = folder.read("tuning.json")
    params, policy = chosen["params"], Policy(chosen["policy"])
    configure(settings or Settings())
    data = folder.training_data(split.holdout_start_ms)
    events = folder.load_dataset().events
    targets = window_targets(events, data.user_ids, split.holdout_start_ms, split.end_ms)
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.log_metrics(
            {
                "train_users": len(data.user_ids),
                "train_items": len(data.item_ids),
                "train_interactions": data.interactions.nnz,
                "holdout_addtocart_users": len(targets[HEADLINE_TARGET]),
            }
        )
        curve = _LearningCurve(data, params, policy, targets[HEADLINE_TARGET], cfg)
        model = fit_lightfm(data, params, cfg.seed, cfg.popularity_window_days, curve, cfg.progress)
        bundle = curve.bundle or served_bundle(model, data, curve.lists, params)
        rankers = {**baseline_policies(data, curve.lists), **lightfm_policies(bundle)}
        results = score_policies(rankers, targets, cfg.k, len(data.item_ids))
        log_results(results)
        mlflow.log_figure(
            precision_curve_plot(rankers, targets[HEADLINE_TARGET]),
            "evaluation/precision_at_k.png",
        )
        candidate = gate_score(results, LIGHTFM_POLICIES[policy], cfg.gate_metrics)
        mlflow.log_metric(f"served_{mlflow_key(cfg.headline)}", candidate[0])
    metrics = dict(zip(cfg.gate_metrics, candidate, strict=True))
    results.to_parquet(folder.path / "results.parquet")
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
    score : tuple of float or None
        Its gate metrics on this holdout (None unless compared as ``artifact`` or ``refit``).
    """

    version: str | None
    compared_as: str
    score: tuple[float, ...] | None = None


def configuration(metadata: Mapping[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    """The configuration a bundle was trained with, from its metadata: LightFM parameters,
    served policy, popularity window and event weights (``cfg``'s where a bundle predates
    recording them)."""
    return {
        "params": dict(metadata.get("params") or {}),
        "policy": str(metadata.get("policy", DEFAULT_POLICY)),
        "popularity_window_days": int(
            metadata.get("popularity_window_days", cfg.popularity_window_days)
        ),
        "event_weights": dict(metadata.get("event_weights", cfg.event_weights)),
    }


def judge_champion(
    folder: RunFolder, champion: tuple[str, Bundle] | None, candidate: Mapping[str, Any]
) -> ChampionComparison:
    """Score the champion on this run's holdout so that it and the candidate are judged on
    exactly the same data (see :class:`ChampionComparison` for the cases).

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
    targets = _load_targets(folder)
    cutoff = bundle.metadata.get("cutoff_ms")
    if cutoff is None or int(cutoff) <= split.holdout_start_ms:
        return ChampionComparison(version, "artifact", _rescore(bundle, targets, cfg))
    if not config["params"]:
        log.warning("champion v%s saw this holdout and records no configuration", version)
        return ChampionComparison(version, "not-comparable")
    log.info("champion v%s saw this holdout: refitting its configuration to its start", version)
    data = folder.training_data(split.holdout_start_ms, config["event_weights"])
    window = config["popularity_window_days"]
    model = fit_lightfm(data, config["params"], cfg.seed, window)
    refitted = served_bundle(model, data, serving_lists(data, window), config["params"])
    refitted.metadata["policy"] = config["policy"]
    return ChampionComparison(version, "refit", _rescore(refitted, targets, cfg))


def _explained(reason: str, comparison: ChampionComparison) -> str:
    """The gate's reason with how the champion was compared."""
    champion = f"champion v{comparison.version}"
    if comparison.compared_as == "same-config":
        note = f"{champion} has the same configuration (this run refreshes it)"
        return f"{note}; {reason.removeprefix('first model: ')}"
    if comparison.compared_as == "not-comparable":
        note = f"{champion} saw this holdout and records no configuration: not compared"
        return f"{note}; {reason.removeprefix('first model: ')}"
    if comparison.compared_as == "refit":
        return f"{reason} ({champion} saw this holdout: its configuration refitted to its start)"
    if comparison.compared_as == "artifact":
        return f"{reason} ({champion} as served)"
    return reason


def decide(workdir: str | Path, settings: Settings | None = None) -> GateDecision:
    """The gate: the candidate against every baseline and the champion's configuration, all
    scored on this run's holdout as served (see :func:`judge_champion`)."""
    folder = RunFolder(workdir)
    cfg = folder.config
    settings = settings or Settings()
    client = configure(settings)
    results = pd.read_parquet(folder.path / "results.parquet")
    chosen = folder.read("tuning.json")
    candidate = gate_score(results, LIGHTFM_POLICIES[Policy(chosen["policy"])], cfg.gate_metrics)
    baselines = {name: gate_score(results, name, cfg.gate_metrics) for name in BASELINES}
    # the run's own knobs fill in what tuning does not choose
    comparison = judge_champion(folder, _champion(client, settings), configuration(chosen, cfg))
    decision = gate(candidate, comparison.score, baselines, cfg.gate_metrics)
    decision = GateDecision(decision.promote, _explained(decision.reason, comparison))
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.set_tags(
            {
                "champion_version": comparison.version or "none",
                "champion_compared_as": comparison.compared_as,
            }
        )
        if comparison.score is not None:
            mlflow.log_metrics(
                {
                    f"champion_rescored_{mlflow_key(m)}": v
                    for m, v in zip(cfg.gate_metrics, comparison.score, strict=True)
                }
            )
    folder.write(
        "decision.json",
        {
            **asdict(decision),
            "champion_version": comparison.version,
            "champion_compared_as": comparison.compared_as,
            "champion_score": comparison.score,
        },
    )
    log.info("gate: %s", decision.reason)
    return decision


def refit(workdir: str | Path, settings: Settings | None = None) -> Path:
    """Refit the chosen configuration on every event of the window up to the interval end
    and save the bundle that is registered and served.

    Its metadata records the served ``cutoff_ms`` (the interval end), the
    ``evaluated_cutoff_ms`` (the holdout start) with the evaluated model's holdout
    ``metrics``, the configuration (``params``, ``policy``, ``event_weights``) and the gate's
    reason.

    Returns
    -------
    pathlib.Path
        The bundle folder (``workdir/bundle``).
    """
    folder = RunFolder(workdir)
    cfg, split = folder.config, folder.split
    chosen, evaluation = folder.read("tuning.json"), folder.read("evaluation.json")
    decision = folder.read("decision.json")
    params, policy = chosen["params"], Policy(chosen["policy"])
    configure(settings or Settings())
    data = folder.training_data(split.end_ms)
    lists = serving_lists(data, cfg.popularity_window_days)
    model = fit_lightfm(data, params, cfg.seed, cfg.popularity_window_days, progress=cfg.progress)
    bundle = served_bundle(model, data, lists, params)
    bundle.metadata.update(
        {
            "policy": str(policy),
            "run_id": folder.run_id,
            "cutoff_ms": split.end_ms,
            "evaluated_cutoff_ms": evaluation["cutoff_ms"],
            "holdout_end_ms": split.end_ms,
            "params": params,
            "event_weights": dict(cfg.event_weights),
            "metrics": evaluation["metrics"],
            "gate": decision["reason"],
        }
    )
    if cfg.precompute_k:
        Recommender(bundle, policy=policy).attach_precomputed(cfg.precompute_k)
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
    #: the champion's gate metrics on this run's holdout (None unless compared as its
    #: artifact or refitted)
    champion_score: tuple[float, ...] | None
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
    score = decided["champion_score"]
    return PipelineResult(
        run_id=run_id,
        model_version=version,
        alias=alias,
        decision=decision,
        policy=Policy(chosen["policy"]),
        params=chosen["params"],
        results=pd.read_parquet(folder.path / "results.parquet"),
        champion_compared_as=decided["champion_compared_as"],
        champion_score=None if score is None else tuple(score),
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


def _rescore(champion: Bundle, targets: pd.DataFrame, cfg: PipelineConfig) -> tuple[float, ...]:
    """The champion's gate metrics on *this* run's holdout add-to-cart targets, as served."""
    rec = Recommender(champion, policy=champion.metadata.get("policy", DEFAULT_POLICY))
    table = score_policies(
        {"champion": rec}, {HEADLINE_TARGET: targets}, cfg.k, len(champion.item_ids)
    )
    return gate_score(table, "champion", cfg.gate_metrics)
