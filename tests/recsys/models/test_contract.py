"""The contract every recommender passes, on a checkerboard it must be able to learn.

Two visitor groups, two item groups: each visitor views five of the six items of their
group (a different one withheld), a few buy one of them, and a popular item everybody views
is unavailable. A personalised model must put the withheld in-group item in its top 6
for most visitors; every model must respect the serving rules whatever ``k``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from recsys import columns as C
from recsys.interactions import DEFAULT_EVENT_WEIGHTS, TrainingData, build_interactions
from recsys.models import Model, PopularityModel, RecentViewsModel
from recsys.models.lightfm import LightFMModel
from recsys.models.ranker import RankerModel
from recsys.serving import Recommender
from tests.helpers import make_events

pytestmark = pytest.mark.model

GROUP_SIZE = 6
N_USERS = 60
UNAVAILABLE_ITEM = 999


def checkerboard() -> tuple[TrainingData, dict[int, int], dict[int, int]]:
    """(training data, withheld item per visitor, bought item per visitor)."""
    rows = []
    withheld, bought = {}, {}
    t = 1_000_000
    for user in range(1, N_USERS + 1):
        group = user % 2
        items = [100 + 10 * group + j for j in range(GROUP_SIZE)]
        withheld[user] = items[(user // 2) % GROUP_SIZE]
        for item in items:
            if item != withheld[user]:
                rows.append((t, user, C.VIEW, item))
                t += 1000
        rows.append((t, user, C.VIEW, UNAVAILABLE_ITEM))
        t += 1000
        if user % 5 == 0:  # a few buyers: never recommend what they bought
            bought[user] = next(i for i in items if i != withheld[user])
            rows.append((t, user, C.ADDTOCART, bought[user]))
            rows.append((t + 1, user, C.PURCHASE, bought[user]))
            t += 1000
    events = make_events(rows)
    user_ids = np.unique(events[C.VISITOR].to_numpy())
    item_ids = np.unique(events[C.ITEM].to_numpy())
    interactions = build_interactions(events, user_ids, item_ids, DEFAULT_EVENT_WEIGHTS)
    category = np.where(item_ids == UNAVAILABLE_ITEM, -1, (item_ids - 100) // 10)
    data = TrainingData(
        cutoff_ms=int(t + 1),
        user_ids=user_ids,
        item_ids=item_ids,
        interactions=interactions,
        item_features=sparse.identity(len(item_ids), dtype=np.float32, format="csr"),
        feature_names=[f"item:{i}" for i in item_ids],
        item_category=category.astype(np.int64),
        item_available=item_ids != UNAVAILABLE_ITEM,
        events=events,
    )
    return data, withheld, bought


TINY_LIGHTFM = {"no_components": 8, "epochs": 10, "learning_rate": 0.05}

MODELS = {
    "lightfm": lambda: LightFMModel(**TINY_LIGHTFM, num_threads=1, random_state=3),
    "popular": PopularityModel,
    "recent": RecentViewsModel,
    # the checkerboard spans minutes: two windows of 100 s before the cutoff
    "ranker": lambda: RankerModel(
        TINY_LIGHTFM, windows=2, window_days=100 / 86_400, seed=3, threads=1
    ),
}


@pytest.fixture(scope="module")
def board() -> tuple[TrainingData, dict[int, int], dict[int, int]]:
    return checkerboard()


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, board):
    data = board[0]
    model = MODELS[request.param]()
    assert isinstance(model, Model)
    assert model.fit(data) is model
    return request.param, model.to_bundle(data)


def _policies(name: str, bundle) -> list[str]:
    # LightFM is served either way, and its bundle serves every baseline policy too; the
    # others' bundles name their policy
    if name == "lightfm":
        return ["model", "blend", "popular_carts", "recent_views", "covisit"]
    return [bundle.metadata["policy"]]


def test_serving_rules_hold_for_every_k(fitted, board) -> None:
    name, bundle = fitted
    data, _, bought = board
    users = data.user_ids
    for policy in _policies(name, bundle):
        rec = Recommender(bundle, policy=policy)
        # items flagged unavailable are left out only by the policies that filter them
        n_allowed = int(bundle.item_available.sum()) if rec.filter_unavailable else bundle.n_items
        for k in (1, 5, n_allowed - 1, n_allowed, 3 * n_allowed):
            batch = rec.recommend_batch(users, k)
            assert batch.shape == (len(users), k)
            for user, row in zip(users, batch, strict=True):
                items = row[row >= 0]
                assert len(items) == len(set(items)), (policy, k, row)
                assert UNAVAILABLE_ITEM not in items or not rec.filter_unavailable
                assert bought.get(int(user)) not in items
                allowed = n_allowed - (1 if int(user) in bought else 0)
                assert len(items) == min(k, allowed), (policy, k, user, row)
                assert np.all(row[len(items) :] == -1)
                single = rec.recommend(int(user), k)
                assert single.item_ids == items.tolist()
                assert len(single.scores) == len(single.reasons) == len(items)


@pytest.mark.parametrize("seed", [3, 11])
def test_personalised_model_recovers_the_withheld_item(board, seed) -> None:
    """LightFM (the one personalised model) learns the groups from co-views alone."""
    data, withheld, _ = board
    bundle = (
        LightFMModel(
            no_components=8, epochs=10, learning_rate=0.05, num_threads=1, random_state=seed
        )
        .fit(data)
        .to_bundle(data)
    )
    for policy in ("model", "blend"):
        top = Recommender(bundle, policy=policy).recommend_batch(data.user_ids, GROUP_SIZE)
        hits = [withheld[int(u)] in row for u, row in zip(data.user_ids, top, strict=True)]
        # measured: 60/60 under both policies for every seed 0..19 (lightfm-next 1.19, 1 thread);
        # 0.9 tolerates a few misses from a LightFM/BLAS change, and stays far above the
        # 31/60 of the popularity baseline (see the next test)
        assert np.mean(hits) >= 0.9, (policy, np.mean(hits))


def test_baselines_do_not_recover_it_as_often(board) -> None:
    """The checkerboard is not trivial: ignoring the visitor's group does much worse."""
    data, withheld, bought = board
    bundle = PopularityModel().fit(data).to_bundle(data)
    top = Recommender(bundle, policy="popular").recommend_batch(data.user_ids, GROUP_SIZE)
    hits = [withheld[int(u)] in row for u, row in zip(data.user_ids, top, strict=True)]
    # Deterministic, from the construction: each in-group item is viewed by the 25 of its
    # group's 30 visitors who do not withhold it; of the 12 buyers (cart 5 + purchase 10),
    # 5 per group buy the group's first item and 1 its second. So 100 and 110 weigh
    # 25 + 5 * 15 = 100, 101 and 111 weigh 25 + 15 = 40 and the 8 others 25 (ties by
    # position); 999 (60 views) is unavailable. Popular top 6 = 100 110 101 111 102 103,
    # with the bought item replaced by 104 for buyers.
    ranking = [100, 110, 101, 111, 102, 103, 104]
    expected = [
        withheld[user] in [i for i in ranking if i != bought.get(user)][:GROUP_SIZE]
        for user in range(1, N_USERS + 1)
    ]
    assert sum(expected) == 31  # vs 60/60 for LightFM above
    assert hits == expected


def test_exported_trees_score_as_catboost_does_to_the_last_bit(board) -> None:
    """Serving scores with the exported arrays, training with CatBoost: the same scores, for
    one row and for batches, with features on and beside every border."""
    model = MODELS["ranker"]()
    model.fit(board[0])
    assert model.fitted is not None
    trees = model.fitted.trees
    assert len(trees.features)
    rng = np.random.default_rng(0)
    n_features = len(trees.feature_names)
    x = rng.normal(scale=3.0, size=(300, n_features)).astype(np.float32)
    for f in range(n_features):
        borders = trees.borders[trees.features == f]
        borders = borders[np.isfinite(borders)]
        if len(borders):
            on = rng.choice(borders, size=150)
            x[:150, f] = np.where(rng.random(150) < 0.5, on, np.nextafter(on, np.inf))
    for n in (1, 2, 7, 300):
        assert np.array_equal(trees.predict(x[:n]), model.fitted.predict(x[:n])), n
