"""LightFMModel: training loop, callbacks and the exported vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from recsys import columns as C
from recsys.interactions import DEFAULT_EVENT_WEIGHTS, TrainingData, build_interactions
from recsys.models.lightfm import LightFMModel

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def data() -> TrainingData:
    """30 visitors x 12 items of random views, some carts and purchases; 2 categories."""
    rng = np.random.default_rng(0)
    n = 200
    kinds = rng.choice([C.VIEW, C.ADDTOCART, C.PURCHASE], size=n, p=[0.8, 0.15, 0.05])
    events = pd.DataFrame(
        {
            C.TIMESTAMP: np.sort(rng.integers(1_000_000, 2_000_000, n)),
            C.VISITOR: rng.integers(1, 31, n),
            C.EVENT: pd.Categorical(kinds, categories=list(C.EVENT_TYPES)),
            C.ITEM: rng.integers(0, 12, n) * 7,
            C.TRANSACTION: pd.array(
                [i if k == C.PURCHASE else None for i, k in enumerate(kinds)], dtype="Int64"
            ),
        }
    )
    events[C.DATETIME] = pd.to_datetime(events[C.TIMESTAMP], unit="ms", utc=True).astype(
        "datetime64[ms, UTC]"
    )
    users, items = np.unique(events[C.VISITOR]), np.unique(events[C.ITEM])
    interactions = build_interactions(events, users, items, DEFAULT_EVENT_WEIGHTS)
    # identity + one category feature per item, rows L2-normalised as LightFM expects
    n_items = len(items)
    features = sparse.hstack(
        [
            sparse.identity(n_items, format="csr"),
            sparse.csr_matrix((np.ones(n_items), (np.arange(n_items), items % 2)), (n_items, 2)),
        ]
    ).tocsr() / np.sqrt(2)
    return TrainingData(
        cutoff_ms=2_000_001,
        user_ids=users,
        item_ids=items,
        interactions=interactions,
        item_features=sparse.csr_matrix(features, dtype=np.float32),
        feature_names=[f"item:{i}" for i in items] + ["cat:0", "cat:1"],
        item_category=(items % 2).astype(np.int64),
        item_available=np.ones(n_items, dtype=bool),
        events=events,
    )


def test_exported_vectors_rank_exactly_like_lightfm_predict(data) -> None:
    model = LightFMModel(no_components=6, epochs=3, num_threads=1, random_state=0).fit(data)
    bundle = model.to_bundle(data)
    n_users, n_items = data.interactions.shape
    assert bundle.item_vectors.shape == (n_items, 7)
    assert bundle.user_vectors.shape == (n_users, 7)
    assert bundle.item_vectors.dtype == bundle.user_vectors.dtype == np.float32
    np.testing.assert_array_equal(bundle.user_vectors[:, -1], 1.0)

    users = np.repeat(np.arange(n_users), n_items)
    items = np.tile(np.arange(n_items), n_users)
    predicted = model.model.predict(
        users, items, item_features=data.item_features, num_threads=1
    ).reshape(n_users, n_items)
    # LightFM adds a per-user bias, which never changes a user's ranking
    exported = bundle.user_vectors @ bundle.item_vectors.T + model.model.user_biases[:, None]
    np.testing.assert_allclose(exported, predicted, rtol=1e-4, atol=1e-4)


def test_epoch_callback_sees_every_epoch_and_can_export(data) -> None:
    seen = []

    def callback(epoch: int, model: LightFMModel) -> None:
        seen.append((epoch, model.epochs_done, model.to_bundle(data).user_vectors.copy()))

    model = LightFMModel(no_components=4, epochs=3, num_threads=1)
    assert model.fit(data, epoch_callback=callback) is model
    assert [(e, done) for e, done, _ in seen] == [(1, 1), (2, 2), (3, 3)]
    # training goes on between callbacks
    assert not np.array_equal(seen[0][2], seen[2][2])


def test_refit_starts_from_scratch_and_seed_is_reproducible(data) -> None:
    def vectors(seed: int) -> np.ndarray:
        model = LightFMModel(no_components=4, epochs=2, num_threads=1, random_state=seed)
        return model.fit(data).item_vectors(data)

    np.testing.assert_array_equal(vectors(5), vectors(5))
    assert not np.array_equal(vectors(5), vectors(6))
    model = LightFMModel(no_components=4, epochs=2, num_threads=1, random_state=5)
    model.fit(data)
    model.fit(data)
    np.testing.assert_array_equal(model.item_vectors(data), vectors(5))


def test_metadata_and_weights(data) -> None:
    model = LightFMModel(no_components=4, epochs=1, num_threads=1, loss="bpr", max_weight=2.0)
    bundle = model.fit(data).to_bundle(data)
    assert bundle.metadata["model"] == "lightfm"
    assert bundle.metadata["policy"] == "blend"
    assert bundle.metadata["params"]["loss"] == "bpr"
    assert bundle.metadata["epochs_trained"] == 1
    assert bundle.metadata["cutoff_ms"] == data.cutoff_ms


def test_sample_weights_change_the_model(data) -> None:
    def vectors(cap: float | None) -> np.ndarray:
        model = LightFMModel(no_components=4, epochs=2, num_threads=1, max_weight=cap)
        return model.fit(data).item_vectors(data)

    # carts and purchases weigh 5 and 10: capping at 1 makes every interaction equal
    assert not np.allclose(vectors(1.0), vectors(None))


def test_export_before_fit_is_an_error(data) -> None:
    with pytest.raises(RuntimeError, match="fit"):
        LightFMModel().to_bundle(data)
