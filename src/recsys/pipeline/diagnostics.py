"""Diagnostics of a run folder that the stages do not log: learning curves on a window.

Read-only on the run folder (nothing is logged to MLflow): notebooks call these to show how
the chosen configuration learns on the validation window it was chosen on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from recsys.bundle import serving_lists
from recsys.evaluation import score_policies, window_targets
from recsys.models.lightfm import LightFMModel
from recsys.pipeline.compare import headline, lightfm_policies
from recsys.pipeline.config import HEADLINE_TARGET
from recsys.pipeline.fitting import fit_lightfm, served_bundle
from recsys.pipeline.stages import RunFolder


def learning_curve(
    workdir: str | Path, window: str = "validation", epochs: int | None = None
) -> pd.DataFrame:
    """The headline of both LightFM policies after every epoch of the tuned configuration.

    Parameters
    ----------
    workdir : str or pathlib.Path
        A run folder after :func:`recsys.pipeline.tune`.
    window : {"validation", "holdout"}
        ``"validation"``: trained on data before the validation window and scored on its
        add-to-carts (where tuning chose the configuration); ``"holdout"``: trained on data
        before the holdout and scored on it (what ``fit_and_evaluate`` logs as
        ``curve_holdout_*``).
    epochs : int, optional
        Epochs to run; default: the tuned number of epochs.

    Returns
    -------
    pandas.DataFrame
        Index ``epoch`` (1..epochs); one column per LightFM policy (``lightfm``,
        ``lightfm+recent``): precision@k on add-to-carts of warm visitors.
    """
    folder = RunFolder(workdir)
    cfg, split = folder.config, folder.split
    params: dict[str, Any] = dict(folder.read("tuning.json")["params"])
    params["epochs"] = int(epochs or params["epochs"])
    if window == "validation":
        start, end = split.validation_start_ms, split.holdout_start_ms
    elif window == "holdout":
        start, end = split.holdout_start_ms, split.end_ms
    else:
        raise ValueError(f"window must be 'validation' or 'holdout', got {window!r}")
    data = folder.training_data(start)
    events = folder.load_dataset().events
    targets = window_targets(events, data.user_ids, start, end, [HEADLINE_TARGET])
    lists = serving_lists(data, cfg.popularity_window_days)
    rows: dict[int, dict[str, float]] = {}

    def on_epoch(epoch: int, model: LightFMModel) -> None:
        rankers = lightfm_policies(served_bundle(model, data, lists, params))
        table = score_policies(rankers, targets, cfg.k, len(data.item_ids))
        rows[epoch] = {name: headline(table, name, cfg.k) for name in rankers}

    fit_lightfm(data, params, cfg.seed, cfg.popularity_window_days, on_epoch)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("epoch")
