"""LightFM fits shared within a run: each (cutoff, configuration) is fitted once.

A run fits LightFM at several cutoffs (the backtest windows, the holdout start, the interval
end) and several consumers need the same fit (tuning, the learned ranker's training windows,
the evaluation, the refit). :class:`BaseFits` keeps the bundles by key, in memory, and when
given a folder also on disk, so that pipeline stages running in separate processes share them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys.bundle import Bundle, serving_lists
from recsys.interactions import TrainingData
from recsys.models.baselines import PopularityModel
from recsys.models.lightfm import LightFMModel

#: serving knobs carried in the tuned parameters (not LightFM's own)
SERVING_KNOBS = ("recent_slots",)


class BaseFits:
    """LightFM bundles by (cutoff, parameters, seed, threads, popularity window).

    Parameters
    ----------
    folder : pathlib.Path, optional
        Where fitted bundles are also saved (and found again by another process).
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._bundles: dict[str, Bundle] = {}

    @staticmethod
    def key(data: TrainingData, lightfm: dict[str, Any] | None, seed: int, window: int) -> str:
        """A file-name-safe key of one fit (``lightfm`` None: the model-free bundle)."""
        spec = json.dumps(
            {"params": lightfm, "seed": seed, "window": window, "weights": data.event_weights},
            sort_keys=True,
            default=str,
        )
        return f"{data.cutoff_ms}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"

    def bundle(
        self,
        data: TrainingData,
        lightfm: dict[str, Any] | None,
        seed: int,
        threads: int,
        window: int,
        on_epoch: Callable[[int, LightFMModel], None] | None = None,
    ) -> Bundle:
        """The bundle of LightFM fitted on ``data`` with ``lightfm`` parameters (``epochs``
        and serving knobs included), fitted once; ``lightfm`` None gives the model-free
        bundle of the baselines. ``on_epoch`` sees the epochs of a fit that happens now."""
        key = self.key(data, lightfm, seed, window)
        bundle = self._bundles.get(key)
        path = None if self.folder is None else self.folder / key
        if bundle is None and path is not None and (path / "arrays.npz").is_file():
            bundle = Bundle.load(path)
        if bundle is None:
            lists = serving_lists(data, window)
            if lightfm is None:
                bundle = PopularityModel(window).to_bundle(data, lists)
            else:
                params = {k: v for k, v in lightfm.items() if k not in SERVING_KNOBS}
                model = LightFMModel(
                    random_state=seed, num_threads=threads, popularity_window_days=window, **params
                )
                bundle = model.fit(data, epoch_callback=on_epoch).to_bundle(data, lists)
                for knob in SERVING_KNOBS:
                    if knob in lightfm:
                        bundle.metadata[knob] = lightfm[knob]
            if path is not None:
                bundle.save(path)
        self._bundles[key] = bundle
        return bundle

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the in-memory bundles whose key ``keep`` rejects (disk copies stay)."""
        self._bundles = {k: b for k, b in self._bundles.items() if keep(k)}
