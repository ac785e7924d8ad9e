"""The policies a run compares on one split, and how the gate reads their results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import pandas as pd

from recsys.bundle import Bundle, ServingLists
from recsys.evaluation import metric_key
from recsys.interactions import TrainingData
from recsys.models.baselines import PopularityModel
from recsys.names import Policy
from recsys.pipeline.config import HEADLINE_SEGMENT, HEADLINE_TARGET
from recsys.serving import ItemSearch, Recommender

#: name of each LightFM-based policy in result tables, by serving policy
LIGHTFM_POLICIES: Final[Mapping[Policy, str]] = {
    Policy.MODEL: "lightfm",
    Policy.BLEND: "lightfm+recent",
}
#: the baselines every candidate must beat, by name in result tables (the serving policy of the
#: same name): event-weighted and add-to-cart popularity, the visitor's recent items (views and
#: carts), the plain "recently viewed" list, and co-visitation with the visitor's recent items
BASELINES: Final = ("popular", "popular_carts", "recent", "recent_views", "covisit")


def policy_of(name: str) -> Policy:
    """The serving policy of a LightFM result-table name (``"lightfm+recent"`` -> blend)."""
    return next(policy for policy, label in LIGHTFM_POLICIES.items() if label == name)


def lightfm_policies(bundle: Bundle, search: ItemSearch | None = None) -> dict[str, Recommender]:
    """LightFM alone and blended with the visitor's recent views, exactly as served (sharing
    one :class:`~recsys.serving.ItemSearch` of ``bundle``)."""
    search = ItemSearch(bundle) if search is None else search
    return {
        name: Recommender(bundle, policy=policy, search=search)
        for policy, name in LIGHTFM_POLICIES.items()
    }


def baseline_policies(data: TrainingData, lists: ServingLists) -> dict[str, Recommender]:
    """Every baseline of :data:`BASELINES`, served from one model-free bundle of ``data``."""
    bundle = PopularityModel(lists.popularity_window_days).to_bundle(data, lists)
    search = ItemSearch(bundle)
    return {name: Recommender(bundle, policy=name, search=search) for name in BASELINES}


def gate_score(results: pd.DataFrame, model: str, metrics: tuple[str, ...]) -> tuple[float, ...]:
    """``model``'s gate ``metrics`` (add-to-cart targets, warm visitors) from a results table."""
    row = results.loc[(model, HEADLINE_TARGET, HEADLINE_SEGMENT)]
    return tuple(float(row[m]) for m in metrics)


def headline(results: pd.DataFrame, model: str, k: int) -> float:
    """The headline metric (precision@k, add-to-cart, warm) of ``model`` in a results table."""
    return gate_score(results, model, (metric_key("precision", k),))[0]
