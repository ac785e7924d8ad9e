"""Fitting LightFM with the pipeline's parameters and exporting the bundle it serves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from recsys.bundle import Bundle, ServingLists
from recsys.interactions import TrainingData
from recsys.models.lightfm import LightFMModel
from recsys.names import DEFAULT_RECENT_SLOTS

#: serving knobs carried in the tuned parameters (not LightFM's own)
SERVING_KNOBS = ("recent_slots",)


def fit_lightfm(
    data: TrainingData,
    params: dict[str, Any],
    seed: int,
    popularity_window_days: int,
    on_epoch: Callable[[int, LightFMModel], None] | None = None,
    progress: bool = False,
) -> LightFMModel:
    """LightFM fitted on ``data`` with ``params`` (LightFM's plus ``epochs`` and serving knobs).

    ``on_epoch(epoch, model)`` runs after every epoch (learning curves).
    """
    params = {k: v for k, v in params.items() if k not in SERVING_KNOBS}
    epochs = int(params.pop("epochs"))
    model = LightFMModel(
        epochs=epochs, random_state=seed, popularity_window_days=popularity_window_days, **params
    )
    with tqdm(total=epochs, desc="LightFM epochs", disable=not progress, leave=False) as bar:

        def callback(epoch: int, fitted: LightFMModel) -> None:
            bar.update(1)
            if on_epoch is not None:
                on_epoch(epoch, fitted)

        model.fit(data, epoch_callback=callback)
    return model


def served_bundle(
    model: LightFMModel, data: TrainingData, lists: ServingLists, params: dict[str, Any]
) -> Bundle:
    """The model's bundle carrying the serving knobs it was evaluated with."""
    bundle = model.to_bundle(data, lists)
    bundle.metadata["recent_slots"] = int(params.get("recent_slots", DEFAULT_RECENT_SLOTS))
    return bundle
