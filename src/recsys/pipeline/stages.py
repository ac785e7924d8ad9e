"""The pipeline as stages: prepare -> tune -> fit_and_evaluate -> register -> decide -> promote.

Every consumer calls these functions: ``recsys train`` through :func:`run_pipeline` (their
composition), the Airflow DAG one task per stage, notebooks as they like. Stages hand each
other only small values: a run folder (:class:`RunFolder`) holds the run's configuration,
its data snapshot and each stage's output, so a stage can run in another process, be retried
or re-run on its own, and the run stays reproducible from the folder.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from recsys import columns as C
from recsys.bundle import Bundle, serving_lists
from recsys.config import CHALLENGER_ALIAS, CHAMPION_ALIAS, Settings
from recsys.data import (
    Dataset,
    EventStore,
    load_category_tree,
    load_dataset,
    load_item_properties,
)
from recsys.data.profile import profile_dataset
from recsys.data.store import safe_url
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
from recsys.pipeline.tuning import tune as search
from recsys.serving import ItemSearch, Recommender, precompute_answers
from recsys.split import TimeSplit, make_split
from recsys.tracking import champion_version, configure, download_bundle, log_bundle_model

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- run folder


class RunFolder:
    """The folder of one run: configuration, data snapshot and every stage's output.

    Files: ``config.json`` (the :class:`PipelineConfig`), ``run.json`` (MLflow run id,
    split), ``data/*.parquet`` (events, the category/availability property rows, the
    category tree), ``tuning.json``, ``results.parquet``, ``targets.parquet``, ``bundle/``,
    ``registered.json``, ``decision.json``, ``promoted.json``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

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
        """The run's time split."""
        return TimeSplit(**self.read("run.json")["split"])

    @property
    def start_ms(self) -> int:
        """Time of the snapshot's first event (the training window's start)."""
        start = self.read("run.json").get("start_ms")
        if start is None:  # a folder written before run.json recorded it
            start = int(self.load_dataset().events[C.TIMESTAMP].min())
        return int(start)

    @property
    def bundle_dir(self) -> Path:
        """Where :func:`fit_and_evaluate` saves the bundle."""
        return self.path / "bundle"

    def save_dataset(self, ds: Dataset) -> None:
        """Snapshot what training reads: events, category/availability rows, category tree."""
        data = self.path / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = ds.item_properties
        keep = props[C.PROPERTY].isin([C.CATEGORY, C.AVAILABLE]).to_numpy(dtype=bool)
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

    def training_data(self, cutoff_ms: int) -> TrainingData:
        """Training data of the snapshot strictly before ``cutoff_ms``."""
        ds, cfg = self.load_dataset(), self.config
        return prepare_training_data(
            ds.events, ds.item_properties, ds.category_tree, cutoff_ms, cfg.event_weights
        )


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


# ---------------------------------------------------------------------------- stages


def prepare(cfg: PipelineConfig, workdir: str | Path, settings: Settings | None = None) -> str:
    """Load and split the data, snapshot it into ``workdir`` and open the run's MLflow run.

    Returns
    -------
    str
        The MLflow run id every later stage logs into.
    """
    settings = settings or Settings()
    configure(settings, *runs_view_columns(cfg))
    folder = RunFolder(workdir)
    ds = load_data(cfg)
    split = make_split(ds.events, cfg.holdout_days, cfg.validation_days)
    folder.save_dataset(ds)
    folder.write("config.json", cfg.model_dump(mode="json"))
    source = str(cfg.data_dir) if cfg.db_url is None else safe_url(cfg.db_url)
    start_ms = int(ds.events[C.TIMESTAMP].min())
    # named after the configured policy; tune renames it after what it chose
    name = run_name(cfg.default_policy, cfg.lightfm, start_ms, split.holdout_start_ms)
    with mlflow.start_run(run_name=name) as run:
        log_data_windows(ds.events, split, source)
        mlflow.log_params(
            {
                "data_dir": str(cfg.data_dir),
                "events_source": source,
                "events": len(ds.events),
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
    policy, start_ms = Policy(chosen["policy"]), folder.start_ms
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.log_params(lightfm_params(chosen["params"]) | {"policy": chosen["policy"]})
        mlflow.set_tags(
            {
                RUN_NAME_TAG: run_name(policy, chosen["params"], start_ms, split.holdout_start_ms),
                DESCRIPTION_TAG: run_description(
                    cfg, policy, chosen["params"], split, start_ms, tuned=cfg.trials > 0
                ),
            }
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
        self.search: ItemSearch | None = None
        self.values: dict[int, float] = {}

    def __call__(self, epoch: int, model: LightFMModel) -> None:
        # diagnostic only: the epochs were chosen on the validation window, not here
        self.bundle = served_bundle(model, self.data, self.lists, self.params)
        self.search = ItemSearch(self.bundle)
        rec = {"lightfm": Recommender(self.bundle, policy=self.policy, search=self.search)}
        table = score_policies(
            rec, {HEADLINE_TARGET: self.targets}, self.cfg.k, len(self.data.item_ids)
        )
        self.values[epoch] = headline(table, "lightfm", self.cfg.k)
        key = f"curve_holdout_{mlflow_key(self.cfg.headline)}"
        mlflow.log_metric(key, metric_value(self.values[epoch]), step=epoch)


def fit_and_evaluate(workdir: str | Path, settings: Settings | None = None) -> Path:
    """Fit the tuned configuration up to the holdout, evaluate every policy and baseline on
    the holdout as served, log results and plots, and save the served bundle.

    Returns
    -------
    pathlib.Path
        The bundle folder (``workdir/bundle``).
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
        served = lightfm_policies(bundle, curve.search)
        rankers = {**baseline_policies(data, curve.lists), **served}
        results = score_policies(rankers, targets, cfg.k, len(data.item_ids))
        log_results(results)
        figures = {
            "evaluation/precision_at_k.png": precision_curve_plot(
                rankers, targets[HEADLINE_TARGET]
            ),
            "evaluation/policies.png": policy_metrics_plot(results, cfg.gate_metrics),
            "evaluation/learning_curve.png": learning_curve_plot(
                curve.values, cfg.headline, "holdout"
            ),
        }
        log_figures(figures)
        candidate = gate_score(results, LIGHTFM_POLICIES[policy], cfg.gate_metrics)
        mlflow.log_metrics(
            {
                f"served_{mlflow_key(m)}": metric_value(v)
                for m, v in zip(cfg.gate_metrics, candidate, strict=True)
            }
        )
    bundle.metadata.update(
        {
            "policy": str(policy),
            "run_id": folder.run_id,
            "cutoff_ms": split.holdout_start_ms,
            "params": params,
            "metrics": dict(zip(cfg.gate_metrics, candidate, strict=True)),
        }
    )
    if cfg.precompute_k:
        bundle.answers = precompute_answers(served[LIGHTFM_POLICIES[policy]], cfg.precompute_k)
    bundle.save(folder.bundle_dir)
    results.to_parquet(folder.path / "results.parquet")
    _save_targets(folder, targets[HEADLINE_TARGET])
    return folder.bundle_dir


def register(workdir: str | Path, settings: Settings | None = None) -> str:
    """Log the saved bundle as a pyfunc model of the run and register a new version."""
    folder = RunFolder(workdir)
    settings = settings or Settings()
    configure(settings)
    with mlflow.start_run(run_id=folder.run_id):
        version = log_bundle_model(folder.bundle_dir, settings.model_name)
    folder.write("registered.json", {"version": version})
    return version


def decide(workdir: str | Path, settings: Settings | None = None) -> GateDecision:
    """The gate: the candidate against every baseline and the champion re-scored on this
    holdout (a champion trained on part of this holdout is kept without a comparison)."""
    folder = RunFolder(workdir)
    cfg, split = folder.config, folder.split
    settings = settings or Settings()
    client = configure(settings)
    results = pd.read_parquet(folder.path / "results.parquet")
    policy = Policy(folder.read("tuning.json")["policy"])
    candidate = gate_score(results, LIGHTFM_POLICIES[policy], cfg.gate_metrics)
    baselines = {name: gate_score(results, name, cfg.gate_metrics) for name in BASELINES}
    champion = _champion_bundle(client, settings)
    unjudged = _trained_on_holdout(champion, split.holdout_start_ms)
    champion_score = None
    if champion is not None and unjudged is None:
        champion_score = _rescore(champion, _load_targets(folder), cfg)
    decision = (
        GateDecision(False, unjudged)
        if unjudged is not None
        else gate(candidate, champion_score, baselines, cfg.gate_metrics)
    )
    # logged by every run (NaN: no champion re-scored), so that runs share their metric keys
    rescored = champion_score or (float("nan"),) * len(cfg.gate_metrics)
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.log_metrics(
            {
                f"champion_rescored_{mlflow_key(m)}": metric_value(v)
                for m, v in zip(cfg.gate_metrics, rescored, strict=True)
            }
        )
    folder.write("decision.json", {**asdict(decision), "champion_score": champion_score})
    return decision


def promote(workdir: str | Path, settings: Settings | None = None) -> str:
    """Point ``champion`` at the new version if the gate said so, else ``challenger``.

    Returns the alias moved; the gate's reason is tagged on the version and the run.
    """
    folder = RunFolder(workdir)
    settings = settings or Settings()
    client = configure(settings)
    version = str(folder.read("registered.json")["version"])
    decision = folder.read("decision.json")
    alias = CHAMPION_ALIAS if decision["promote"] else CHALLENGER_ALIAS
    client.set_registered_model_alias(settings.model_name, alias, version)
    client.set_model_version_tag(settings.model_name, version, "gate", decision["reason"])
    with mlflow.start_run(run_id=folder.run_id):
        mlflow.set_tags({"gate": decision["reason"], "alias": alias, "model_version": version})
    folder.write("promoted.json", {"alias": alias, "version": version})
    log.info("version %s -> %s: %s", version, alias, decision["reason"])
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
    #: the champion's gate metrics re-scored on this run's holdout (None: there was none, or it
    #: was trained on part of this holdout and was not re-scored)
    champion_score: tuple[float, ...] | None


def run_pipeline(
    cfg: PipelineConfig, settings: Settings | None = None, workdir: str | Path | None = None
) -> PipelineResult:
    """Every stage in order. Without ``workdir`` the run folder is temporary (under the
    settings' ``var_dir``) and removed at the end."""
    settings = settings or Settings()
    if workdir is None:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="run-", dir=settings.var_dir) as tmp:
            return run_pipeline(cfg, settings, tmp)
    run_id = prepare(cfg, workdir, settings)
    chosen = tune(workdir, settings)
    fit_and_evaluate(workdir, settings)
    version = register(workdir, settings)
    decision = decide(workdir, settings)
    alias = promote(workdir, settings)
    folder = RunFolder(workdir)
    score = folder.read("decision.json")["champion_score"]
    return PipelineResult(
        run_id=run_id,
        model_version=version,
        alias=alias,
        decision=decision,
        policy=Policy(chosen["policy"]),
        params=chosen["params"],
        results=pd.read_parquet(folder.path / "results.parquet"),
        champion_score=None if score is None else tuple(score),
    )


# ---------------------------------------------------------------------------- champion


def _save_targets(folder: RunFolder, targets: pd.DataFrame) -> None:
    frame = targets.assign(**{RELEVANT: [list(map(int, r)) for r in targets[RELEVANT]]})
    frame.to_parquet(folder.path / "targets.parquet", index=False)


def _load_targets(folder: RunFolder) -> pd.DataFrame:
    frame = pd.read_parquet(folder.path / "targets.parquet")
    frame[RELEVANT] = [np.asarray(r, dtype=np.int64) for r in frame[RELEVANT]]
    return frame


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


def _rescore(champion: Bundle, targets: pd.DataFrame, cfg: PipelineConfig) -> tuple[float, ...]:
    """The champion's gate metrics on *this* run's holdout add-to-cart targets."""
    rec = Recommender(champion, policy=champion.metadata.get("policy", DEFAULT_POLICY))
    table = score_policies(
        {"champion": rec}, {HEADLINE_TARGET: targets}, cfg.k, len(champion.item_ids)
    )
    return gate_score(table, "champion", cfg.gate_metrics)
