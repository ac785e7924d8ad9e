"""Baselines: the same bundle format with constant model scores and a fixed serving policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recsys.bundle import Bundle, make_bundle

if TYPE_CHECKING:
    from recsys.interactions import TrainingData


def _constant_bundle(
    data: TrainingData, name: str, policy: str, window_days: int, extra: dict | None = None
) -> Bundle:
    # dimension-1 zero vectors: every model score is 0, so rankings fall back to popularity
    return make_bundle(
        data,
        item_vectors=np.zeros((len(data.item_ids), 1), dtype=np.float32),
        user_vectors=np.zeros((len(data.user_ids), 1), dtype=np.float32),
        popularity_window_days=window_days,
        metadata={"model": name, "policy": policy, "params": extra or {}},
    )


class PopularityModel:
    """Most popular items of the last ``window_days`` (event-weighted), for everyone.

    Parameters
    ----------
    window_days : int
        Popularity window ending at the training cutoff.
    """

    name = "popular"

    def __init__(self, window_days: int = 14) -> None:
        self.window_days = window_days

    def fit(self, data: TrainingData) -> PopularityModel:
        """Nothing to learn: the ranking is computed when the bundle is built."""
        return self

    def to_bundle(self, data: TrainingData) -> Bundle:
        """Bundle served with policy ``"popular"``."""
        return _constant_bundle(
            data, self.name, "popular", self.window_days, {"window_days": self.window_days}
        )


class RecentViewsModel:
    """The visitor's own recently viewed / carted items (not bought), padded with popular ones.

    Parameters
    ----------
    window_days : int
        Window of the popularity ranking used for padding.
    """

    name = "recent"

    def __init__(self, window_days: int = 14) -> None:
        self.window_days = window_days

    def fit(self, data: TrainingData) -> RecentViewsModel:
        """Nothing to learn: histories are extracted when the bundle is built."""
        return self

    def to_bundle(self, data: TrainingData) -> Bundle:
        """Bundle served with policy ``"recent"``."""
        return _constant_bundle(
            data, self.name, "recent", self.window_days, {"window_days": self.window_days}
        )
