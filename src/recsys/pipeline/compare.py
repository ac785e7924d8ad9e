"""The policies a run compares on one split, and how the gate reads their results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import pandas as pd

from recsys.bundle import Bundle, ServingLists
from recsys.evaluation import metric_key
from recsys.interactions import TrainingData
from recsys.models.baselines import CartPopularityModel, PopularityModel, RecentViewsModel
from recsys.names import Policy
from recsys.pipeline.config import HEADLINE_SEGMENT, HEADLINE_TARGET
from recsys.serving import Recommender

#: name of each LightFM-based policy in result tables, by serving policy
LIGHTFM_POLICIES: Final[Mapping[Policy, str]] = {
    Policy.MODEL: "lightfm",
    Policy.BLEND: "lightfm+recent",
}
#: the baselines every candidate must beat, by name in result tables: every one reported
BASELINES: Final = ("popular", "popular_addtocart", "recent")


def policy_of(name: str) -> Policy:
    """The serving policy of a LightFM result-table name (``"lightfm+recent"`` -> blend)."""
    return next(policy for policy, label in LIGHTFM_POLICIES.items() if label == name)


def lightfm_policies(bundle: Bundle) -> dict[str, Recommender]:
    """LightFM alone and blended with the visitor's recent views, exactly as served."""
    return {name: Recommender(bundle, policy=policy) for policy, name in LIGHTFM_POLICIES.items()}


def baseline_policies(data: TrainingData, lists: ServingLists) -> dict[str, Recommender]:
    """Every baseline of :data:`BASELINES`: popularity in the recent window (event-weighted,
    and plain add-to-cart counts) and "recently viewed by this visitor"."""
    window = lists.popularity_window_days
    models = (PopularityModel(window), CartPopularityModel(window), RecentViewsModel(window))
    policies = {m.name: Recommender(m.to_bundle(data, lists), policy=m.policy) for m in models}
    return {name: policies[name] for name in BASELINES}


def gate_score(results: pd.DataFrame, model: str, metrics: tuple[str, ...]) -> tuple[float, ...]:
    """``model``'s gate ``metrics`` (add-to-cart targets, warm visitors) from a results table."""
    row = results.loc[(model, HEADLINE_TARGET, HEADLINE_SEGMENT)]
    return tuple(float(row[m]) for m in metrics)


def headline(results: pd.DataFrame, model: str, k: int) -> float:
    """The headline metric (precision@k, add-to-cart, warm) of ``model`` in a results table."""
    return gate_score(results, model, (metric_key("precision", k),))[0]
