"""The baselines and the learned ranker as served policies: golden lists on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from recsys import columns as C
from recsys.bundle import ObliviousTrees, make_bundle
from recsys.interactions import TrainingData, build_interactions
from recsys.names import Policy, Source
from recsys.serving import REASON_POPULAR, REASON_SIMILAR, REASON_VIEWED, Recommender
from recsys.serving.features import BASE_FEATURES, feature_names
from tests.helpers import make_events

pytestmark = pytest.mark.model

H = C.HOUR_MS
CUTOFF = 100 * H
#: (hour, visitor, event, item); item 50 is flagged unavailable
EVENTS = [
    (1, 1, C.VIEW, 10),
    (2, 1, C.VIEW, 20),
    (3, 1, C.ADDTOCART, 20),
    (4, 1, C.VIEW, 30),
    (50, 2, C.VIEW, 10),
    (51, 2, C.VIEW, 30),
    (52, 2, C.ADDTOCART, 30),
    (53, 2, C.ADDTOCART, 50),
    (60, 3, C.VIEW, 40),
    (61, 3, C.VIEW, 10),
    *((70 + v, v, C.VIEW, 10) for v in range(5, 9)),
    (80, 4, C.VIEW, 50),
]


def tiny_bundle():
    events = make_events([(h * H, v, e, i) for h, v, e, i in EVENTS])
    users = np.unique(events[C.VISITOR].to_numpy())
    items = np.unique(events[C.ITEM].to_numpy())
    data = TrainingData(
        cutoff_ms=CUTOFF,
        user_ids=users,
        item_ids=items,
        interactions=build_interactions(events, users, items),
        item_features=sparse.identity(len(items), dtype=np.float32, format="csr"),
        feature_names=[f"item:{i}" for i in items],
        item_category=np.array([1, 1, 2, 2, -1]),
        item_available=items != 50,
        events=events,
    )
    # a constant model: every policy ranks by its own rule, never by model scores
    return make_bundle(data, np.zeros((len(items), 1)), np.zeros((len(users), 1)))


@pytest.fixture
def bundle():
    return tiny_bundle()


def lists(bundle, policy: str, k: int = 5, **kwargs) -> dict[int, list[int]]:
    rec = Recommender(bundle, policy=policy, **kwargs)
    return {user: rec.recommend(user, k).item_ids for user in (1, 2, 3, 99)}


def test_popularity_by_weighted_events_and_by_carts(bundle) -> None:
    # weighted (views 1, carts 5) over 14 days: 10 -> 7 views, 30 -> 2 + 5, 20 -> 1 + 5,
    # 50 -> 5 + 1, 40 -> 1; ties by all-time events (10 has 7), then position
    assert bundle.item_ids[bundle.popular].tolist() == [10, 30, 20, 50, 40]
    assert lists(bundle, "popular")[99] == [10, 30, 20, 40]  # 50 is unavailable
    # add-to-cart counts: 20, 30 and 50 once each (ties in the weighted order), then the rest
    assert lists(bundle, "popular_carts")[99] == [30, 20, 10, 40]


def test_recent_views_is_the_plain_rule(bundle) -> None:
    got = lists(bundle, "recent_views")
    # views only, most recent first, then the most carted items; no availability filter
    assert got[1] == [30, 20, 10, 50, 40]
    assert got[2] == [30, 10, 20, 50, 40]  # 50 was carted, not viewed: it only pads
    assert got[99] == [30, 20, 50, 10, 40]
    # "recent": views and carts, weighted padding, unavailable items filtered
    assert lists(bundle, "recent")[3] == [10, 40, 30, 20]


def test_covisit_ranks_neighbours_of_recent_items(bundle) -> None:
    # item 10's neighbours within 24 h: 30 (visitor 1 by a view, visitor 2 by a cart: 1 + 3),
    # 20 (visitor 1, then carted: 3), 50 (visitor 2, carted: 3), 40 (visitor 3, backwards: 0.5)
    items, weights = bundle.covisit.neighbours(0)
    assert bundle.item_ids[items].tolist() == [30, 20, 50, 40]
    assert weights.tolist() == [4.0, 3.0, 3.0, 0.5]
    answer = Recommender(bundle, policy="covisit").recommend(3, 5)
    # visitor 3 saw 40 then 10: 10's neighbours count fully, 40's (10: 1) half; ties go to
    # the more popular item
    assert answer.item_ids == [30, 20, 50, 10, 40]
    assert answer.scores == [4.0, 3.0, 3.0, 0.5, 0.5]
    assert answer.reasons == [REASON_SIMILAR] * 3 + [REASON_VIEWED] * 2
    assert answer.source == Source.COVISIT


def test_ranker_policy_needs_a_ranker_over_the_serving_features(bundle) -> None:
    from recsys.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="learned ranker"):
        Recommender(bundle, policy="ranker")
    names = feature_names(bundle)
    assert names[: len(BASE_FEATURES)] == BASE_FEATURES
    # a one-tree ranker that prefers what the visitor viewed most recently
    rank = names.index("hist_rank")
    bundle.ranker = ObliviousTrees(
        features=np.array([[rank]]),
        borders=np.array([[0.5]]),
        leaves=np.array([[1.0, 0.0]]),
        feature_names=names,
    )
    rec = Recommender(bundle, policy=Policy.RANKER)
    answer = rec.recommend(1, 3)
    assert answer.item_ids[0] == 30 and answer.reasons[0] == REASON_VIEWED
    assert answer.source == Source.RANKER
    unknown = rec.recommend(99, 3)
    assert unknown.source == Source.POPULAR and unknown.reasons == [REASON_POPULAR] * 3
