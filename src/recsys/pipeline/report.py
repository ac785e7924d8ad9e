"""What a run shows in MLflow: its name and description, the data windows it read (dataset
inputs), parameter and metric names, result tables, plots.

Every run logs the same parameter and metric keys (LightFM parameters are logged with their
effective values, defaults included, whether tuning ran or not), so runs compare column by
column in the MLflow UI.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.pandas_dataset import PandasDataset, from_pandas
from mlflow.models import infer_signature
from mlflow.types import Schema

from recsys import columns as C
from recsys.evaluation import RELEVANT, SEGMENT, WARM, BatchRanker, hits_matrix
from recsys.names import Policy
from recsys.pipeline.candidates import name_of
from recsys.pipeline.config import DEFAULT_LIGHTFM, HEADLINE_TARGET, PipelineConfig
from recsys.split import TimeSplit, window

#: run tag MLflow shows as the run's description
DESCRIPTION_TAG = "mlflow.note.content"
#: run tag holding the run's name
RUN_NAME_TAG = "mlflow.runName"


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def lightfm_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """LightFM parameters (and serving knobs) as logged: effective values, one fixed key set.

    Keys missing from ``params`` take the pipeline's defaults, so an untuned run and a tuned
    one log the same ``lightfm_*`` keys.

    >>> sorted(lightfm_params({"epochs": 3}))[:3]
    ['lightfm_epochs', 'lightfm_item_alpha', 'lightfm_learning_rate']
    >>> lightfm_params({"epochs": 3})["lightfm_epochs"]
    3
    """
    return {f"lightfm_{k}": v for k, v in {**DEFAULT_LIGHTFM, **params}.items()}


def runs_view_columns(cfg: PipelineConfig) -> tuple[str, list[str]]:
    """The experiment's headline view: the metric it sorts by and the columns it shows.

    >>> sort_by, columns = runs_view_columns(PipelineConfig())
    >>> sort_by, columns[:2]
    ('served_precision_at_5', ['metrics.`served_precision_at_5`', 'metrics.`served_ndcg_at_5`'])
    """
    head = mlflow_key(cfg.headline)
    metrics = [f"served_{head}", f"served_{mlflow_key(cfg.gate_metrics[1])}"] + [
        mlflow_key(f"{name}.{HEADLINE_TARGET}.{WARM}.{cfg.headline}")
        for name in ("ranker", "recent_views", "lightfm+recent", "popular_carts")
    ]
    params = ["policy", "lightfm_loss", "lightfm_no_components", "lightfm_epochs", "trials"]
    return f"served_{head}", [f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in params]


def run_name(policy: Policy, params: Mapping[str, Any], start_ms: int, end_ms: int) -> str:
    """What a run tried, in a few words: served policy, loss and size, training window.

    >>> run_name(Policy.BLEND, {"loss": "warp", "no_components": 64, "epochs": 15},
    ...          1430622000000, 1441854000000)
    'lightfm+recent · warp d64 e15 · train 2015-05-03..2015-09-10'
    """
    p = {**DEFAULT_LIGHTFM, **params}
    return (
        f"{name_of(policy)} · {p['loss']} d{p['no_components']} e{p['epochs']} · "
        f"train {_day(start_ms)}..{_day(end_ms - 1)}"
    )


def run_description(
    cfg: PipelineConfig,
    policy: Policy,
    params: Mapping[str, Any],
    split: TimeSplit,
    start_ms: int,
    tuned: bool,
) -> str:
    """The run's description (Markdown): what was trained on what, how it was chosen and
    judged."""
    p = {**DEFAULT_LIGHTFM, **params}
    how = (
        f"chosen by {cfg.trials} Optuna trials on the validation window "
        f"{_day(split.validation_start_ms)}..{_day(split.holdout_start_ms - 1)}"
        if tuned
        else "the configured defaults (no tuning)"
    )
    return (
        f"**{name_of(policy)}** (policy `{policy}`): LightFM {p['loss']}, "
        f"{p['no_components']} components, {p['epochs']} epochs, learning rate "
        f"{p['learning_rate']:.3g}, {p['recent_slots']} recent-view slots; {how}.\n\n"
        f"Trained on events {_day(start_ms)}..{_day(split.holdout_start_ms - 1)}; judged on "
        f"the {cfg.holdout_days}-day holdout {_day(split.holdout_start_ms)}.."
        f"{_day(split.end_ms - 1)} by precision@{cfg.k} on add-to-carts of warm visitors "
        f"(metric `served_{mlflow_key(cfg.headline)}`), beside the baselines popular and recent."
    )


def log_data_windows(events: pd.DataFrame, split: TimeSplit, source: str | Path) -> None:
    """Log the training window and the holdout as MLflow dataset inputs of the active run.

    Each is named after its dates, points at ``source`` (the data folder, or the event
    store's URL without its password) and carries its counts as tags, so the runs table's
    Dataset column says what a run trained and was judged on.
    """
    # a folder resolves to MLflow's local source; a database URL to the event store's
    origin: DatasetSource | str = (
        EventStoreSource(str(source)) if "://" in str(source) else str(Path(source).resolve())
    )
    windows = {
        "training": (None, split.holdout_start_ms),
        "evaluation": (split.holdout_start_ms, split.end_ms),
    }
    for context, (start, end) in windows.items():
        rows = window(events, start, end).drop(columns=[C.DATETIME], errors="ignore")
        first = int(rows[C.TIMESTAMP].min()) if len(rows) else int(end)
        tags = {
            "window_start": _day(first),
            "window_end": _day(int(end) - 1),
            "events": str(len(rows)),
            "visitors": str(rows[C.VISITOR].nunique()),
            "items": str(rows[C.ITEM].nunique()),
            "addtocarts": str(int((rows[C.EVENT] == HEADLINE_TARGET).sum())),
        }
        name = f"events {tags['window_start']}..{tags['window_end']}"
        # silences schema-inference hints about integer columns and the note that a folder
        # could be one of two local source kinds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows[C.EVENT] = rows[C.EVENT].astype(str)
            dataset = _EventsWindow(from_pandas(rows, source=origin, name=name))
            mlflow.log_input(dataset, context=context, tags=tags)


#: rows the logged schema is inferred from (MLflow would otherwise look at every value)
SCHEMA_SAMPLE_ROWS = 2_000


class _EventsWindow(PandasDataset):
    """A window of events as an MLflow dataset, its schema inferred from a sample.

    All rows follow the events contract's dtypes, so a sample gives the same schema; MLflow's
    own inference visits every value (tens of seconds on millions of events).
    """

    def __init__(self, dataset: PandasDataset) -> None:
        super().__init__(
            df=dataset.df, source=dataset.source, name=dataset.name, digest=dataset.digest
        )

    @cached_property
    def schema(self) -> Schema | None:
        """The columns' MLflow types, from an evenly spread sample of rows."""
        step = max(1, len(self.df) // SCHEMA_SAMPLE_ROWS)
        return infer_signature(self.df.iloc[::step]).inputs


class EventStoreSource(DatasetSource):
    """Dataset source of events read from the event store: its URL, without password."""

    def __init__(self, url: str) -> None:
        self.url = url

    @staticmethod
    def _get_source_type() -> str:
        return "event_store"

    def load(self, **kwargs: Any) -> str:
        """The URL (the events themselves are read through :class:`recsys.data.EventStore`)."""
        return self.url

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> EventStoreSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored with the dataset."""
        return {"url": self.url}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> EventStoreSource:
        """Inverse of :meth:`to_dict`."""
        return cls(source_dict["url"])


def mlflow_key(name: str) -> str:
    """A result name as an MLflow metric key (MLflow forbids ``+`` and ``@``).

    >>> mlflow_key("lightfm+recent.precision@5")
    'lightfm_plus_recent.precision_at_5'
    """
    return name.replace("+", "_plus_").replace("@", "_at_")


def metric_value(value: float) -> float:
    """A metric as logged: 6 decimals, so that tables read ``0.048``, not ``0.04800000000000001``.

    >>> metric_value(0.1 + 0.2)
    0.3
    """
    return round(float(value), 6)


def log_results(results: pd.DataFrame) -> None:
    """Every (model, target, segment, metric) of a results table as one MLflow metric, plus
    the table as JSON and as text."""
    metrics = {}
    for (model, target, segment), row in results.iterrows():
        for metric, value in row.items():
            if pd.notna(value):
                metrics[mlflow_key(f"{model}.{target}.{segment}.{metric}")] = metric_value(value)
    mlflow.log_metrics(metrics)
    mlflow.log_table(results.reset_index(), "evaluation/results.json")
    mlflow.log_text(results.round(4).to_string(), "evaluation/results.txt")


def precision_curve_plot(
    rankers: Mapping[str, BatchRanker], targets: pd.DataFrame, max_k: int = 20
) -> Any:
    """Precision@k for k = 1..max_k of every policy on the warm visitors of ``targets``."""
    plt = _pyplot()
    warm = targets[targets[SEGMENT] == WARM]
    users = warm[C.VISITOR].to_numpy()
    relevant = list(warm[RELEVANT])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = np.arange(1, max_k + 1)
    for name, ranker in rankers.items():
        hits = hits_matrix(ranker.recommend_batch(users, max_k), relevant)
        precision = (np.cumsum(hits, axis=1) / ks).mean(axis=0) if len(users) else np.zeros(max_k)
        ax.plot(ks, precision, marker="o", markersize=3, label=name)
    ax.set(xlabel="k", ylabel="precision@k", title="Holdout add-to-cart, warm visitors")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _pyplot() -> Any:
    import matplotlib

    # headless (files only), except inside a notebook, whose inline backend must stay
    if "inline" not in matplotlib.get_backend():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_figures(figures: Mapping[str, Any]) -> None:
    """Log matplotlib figures as artifacts of the active run (PNG), then close them."""
    plt = _pyplot()
    for path, figure in figures.items():
        mlflow.log_figure(figure, path)
        plt.close(figure)


def policy_metrics_plot(results: pd.DataFrame, metrics: Sequence[str]) -> Any:
    """Bars of ``metrics`` per policy on holdout add-to-carts, one panel per visitor segment."""
    plt = _pyplot()
    table = results.xs(HEADLINE_TARGET, level="target")
    segments = [s for s in ("warm", "cold", "all") if s in table.index.get_level_values(SEGMENT)]
    fig, axes = plt.subplots(1, len(segments), figsize=(4 * len(segments), 4), sharey=True)
    for ax, segment in zip(np.atleast_1d(axes), segments, strict=True):
        part = table.xs(segment, level=SEGMENT)[list(metrics)]
        users = int(table.xs(segment, level=SEGMENT)["users"].max())
        part.plot.bar(ax=ax, rot=20)
        ax.set(title=f"{segment} visitors (n={users})", xlabel="policy", ylabel="metric value")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Holdout add-to-carts: every policy on the same split")
    fig.tight_layout()
    return fig


def learning_curve_plot(curve: Mapping[int, float], metric: str, window_name: str) -> Any:
    """The served policy's ``metric`` after each LightFM epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = sorted(curve)
    ax.plot(epochs, [curve[e] for e in epochs], marker="o")
    ax.set(
        xlabel="epoch",
        ylabel=metric,
        title=f"Learning curve: served policy on the {window_name} (add-to-cart, warm)",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
