"""A popularity-only policy answers known visitors without the general ranking's overhead
(A/B popularity arms have no precomputed answers): the short path must give exactly what the
general path gives, for every known visitor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.bundle import Bundle
from recsys.serving import Recommender
from tests.fastapi_service.service_testkit import write_bundle

pytestmark = [pytest.mark.model, pytest.mark.abtest]


def random_bundle(seed: int = 0, n_items: int = 60, n_users: int = 300, d: int = 4) -> Bundle:
    """Users with random histories and purchases, items with categories (some unknown: -1)
    and some unavailable."""
    rng = np.random.default_rng(seed)
    history_len = rng.integers(0, 8, n_users)
    bought_len = rng.integers(0, 4, n_users) * (rng.random(n_users) < 0.4)
    user_vectors = rng.normal(size=(n_users, d + 1)).astype(np.float32)
    user_vectors[:, -1] = 1.0
    return Bundle(
        item_ids=np.arange(1000, 1000 + n_items, dtype=np.int64),
        item_vectors=rng.normal(size=(n_items, d + 1)).astype(np.float32),
        user_ids=np.sort(rng.choice(10**6, n_users, replace=False)).astype(np.int64),
        user_vectors=user_vectors,
        popular=rng.permutation(n_items).astype(np.int32),
        item_category=rng.integers(-1, 6, n_items).astype(np.int64),
        item_available=rng.random(n_items) > 0.1,
        history_indptr=np.concatenate([[0], np.cumsum(history_len)]).astype(np.int64),
        history_items=rng.integers(0, n_items, history_len.sum()).astype(np.int32),
        history_ts=rng.integers(1, 10**6, history_len.sum()).astype(np.int64),
        bought_indptr=np.concatenate([[0], np.cumsum(bought_len)]).astype(np.int64),
        # purchases among the most popular items, so they change the lists
        bought_items=rng.integers(0, 8, bought_len.sum()).astype(np.int32),
        metadata={"model_version": "random", "policy": "blend"},
    )


@pytest.mark.parametrize("source", ["random", "service"])
def test_the_short_path_equals_the_general_ranking(source: str, tmp_path: Path) -> None:
    bundle = (
        random_bundle() if source == "random" else Bundle.load(write_bundle(tmp_path / "bundle"))
    )
    rec = Recommender(bundle, policy="popular")
    assert rec.answers is None  # the bundle's answers (if any) are not popularity's
    lists, reasons = set(), set()
    for position, user_id in enumerate(bundle.user_ids.tolist()):
        for k in (1, 5, 12, bundle.n_items + 2):
            short = rec.recommend(user_id, k)
            general = rec._recommend_live(user_id, position, k, (), (), None, (), None)
            assert short == general, (user_id, k)
            lists.add(tuple(short.item_ids))
            reasons.update(short.reasons)
    # purchases change some lists, and histories some reasons
    assert len(lists) > 4
    assert reasons == {"popular now", "popular in its category"}
