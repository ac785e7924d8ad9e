"""What a run shows in MLflow: metric names, result tables, plots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from recsys import columns as C
from recsys.evaluation import RELEVANT, SEGMENT, WARM, BatchRanker, hits_matrix


def mlflow_key(name: str) -> str:
    """A result name as an MLflow metric key (MLflow forbids ``+`` and ``@``).

    >>> mlflow_key("lightfm+recent.precision@5")
    'lightfm_plus_recent.precision_at_5'
    """
    return name.replace("+", "_plus_").replace("@", "_at_")


def log_results(results: pd.DataFrame) -> None:
    """Every (model, target, segment, metric) of a results table as one MLflow metric, plus
    the table as JSON and as text."""
    metrics = {}
    for (model, target, segment), row in results.iterrows():
        for metric, value in row.items():
            if pd.notna(value):
                metrics[mlflow_key(f"{model}.{target}.{segment}.{metric}")] = float(value)
    mlflow.log_metrics(metrics)
    mlflow.log_table(results.reset_index(), "evaluation/results.json")
    mlflow.log_text(results.round(4).to_string(), "evaluation/results.txt")


def precision_curve_plot(
    rankers: Mapping[str, BatchRanker], targets: pd.DataFrame, max_k: int = 20
) -> Any:
    """Precision@k for k = 1..max_k of every policy on the warm visitors of ``targets``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
