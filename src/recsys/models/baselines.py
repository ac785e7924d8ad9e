"""Baselines: the same bundle format with constant model scores and a fixed serving policy."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Self

import numpy as np

from recsys.bundle import Bundle, ServingLists, make_bundle, popularity_ranking, serving_lists
from recsys.columns import ADDTOCART
from recsys.names import Policy

if TYPE_CHECKING:
    from recsys.interactions import TrainingData


class _ConstantModel:
    """A model with nothing to learn: every model score is 0, the serving policy ranks."""

    #: short identifier (metadata, MLflow, result tables)
    name: str
    #: serving policy named in the bundle's metadata
    policy: Policy

    def __init__(self, window_days: int = 14) -> None:
        self.window_days = window_days

    def fit(self, data: TrainingData) -> Self:
        """Nothing to learn: everything is computed when the bundle is built."""
        return self

    def to_bundle(self, data: TrainingData, lists: ServingLists | None = None) -> Bundle:
        """Bundle served with policy :attr:`policy` (``lists`` as in ``LightFMModel``)."""
        if lists is None:
            lists = serving_lists(data, self.window_days)
        # dimension-1 zero vectors: every model score is 0, so rankings fall back to popularity
        return make_bundle(
            data,
            item_vectors=np.zeros((len(data.item_ids), 1), dtype=np.float32),
            user_vectors=np.zeros((len(data.user_ids), 1), dtype=np.float32),
            lists=lists,
            metadata={
                "model": self.name,
                "policy": self.policy,
                "params": {"window_days": lists.popularity_window_days},
            },
        )


class PopularityModel(_ConstantModel):
    """Most popular items of the last ``window_days`` (event-weighted), for everyone.

    Parameters
    ----------
    window_days : int
        Popularity window ending at the training cutoff.
    """

    name = "popular"
    policy = Policy.POPULAR


class RecentViewsModel(_ConstantModel):
    """The visitor's own recently viewed / carted items (not bought), padded with popular ones.

    Parameters
    ----------
    window_days : int
        Window of the popularity ranking used for padding.
    """

    name = "recent"
    policy = Policy.RECENT


class CartPopularityModel(_ConstantModel):
    """Most added-to-cart items of the last ``window_days`` (plain counts), for everyone.

    The target action counted as it is, without the view/purchase weights of
    :class:`PopularityModel`: on real data it can be the stronger of the two.

    Parameters
    ----------
    window_days : int
        Popularity window ending at the training cutoff.
    """

    name = "popular_addtocart"
    policy = Policy.POPULAR

    def to_bundle(self, data: TrainingData, lists: ServingLists | None = None) -> Bundle:
        """As :class:`PopularityModel`, ranked by add-to-cart counts in the window."""
        if lists is None:
            lists = serving_lists(data, self.window_days)
        carts = popularity_ranking(data, lists.popularity_window_days, {ADDTOCART: 1.0})
        return super().to_bundle(data, replace(lists, popular=carts))
