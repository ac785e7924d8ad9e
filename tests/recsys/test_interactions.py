import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from recsys.columns import (
    ADDTOCART,
    AVAILABLE,
    CATEGORY,
    EVENT,
    EVENT_TYPES,
    ITEM,
    PARENT,
    PURCHASE,
    TIMESTAMP,
    VIEW,
    VISITOR,
)
from recsys.exceptions import ConfigurationError
from recsys.interactions import (
    DEFAULT_EVENT_WEIGHTS,
    TrainingData,
    build_interactions,
    build_interactions_naive,
    index_of,
    prepare_training_data,
)
from tests.helpers import T0, WEEK, make_events, make_properties

pytestmark = pytest.mark.model

CUTOFF = T0 + WEEK


TREE = pd.DataFrame(
    {
        CATEGORY: pd.array([1, 2, 3], dtype="int64"),
        PARENT: pd.array([None, 1, None], dtype="Int64"),
    }
)

EVENTS = make_events(
    [
        (T0 + 1, 1, VIEW, 10),
        (T0 + 2, 1, VIEW, 10),
        (T0 + 3, 1, ADDTOCART, 10),
        (T0 + 4, 1, PURCHASE, 20),
        (T0 + 5, 2, VIEW, 20),
        (T0 + 6, 3, VIEW, 30),
        (CUTOFF - 1, 2, ADDTOCART, 30),
        # at or after the cutoff: a new visitor, a future-only item, an old pair again
        (CUTOFF, 4, VIEW, 99),
        (CUTOFF + 5, 1, PURCHASE, 10),
        (CUTOFF + 6, 2, VIEW, 98),
    ]
)

PROPERTIES = make_properties(
    [
        (T0, 10, CATEGORY, "2"),
        (CUTOFF, 10, CATEGORY, "3"),  # future category change: must not leak
        (T0, 10, AVAILABLE, "1"),
        (CUTOFF + 1, 10, AVAILABLE, "0"),  # future sell-out: must not leak
        (T0, 20, AVAILABLE, "0"),
        (T0, 20, "790", "n100.000"),
        (T0, 99, CATEGORY, "3"),  # the future-only item has properties from the past
        (T0, 98, CATEGORY, "3"),
    ]
)


def test_index_of_finds_positions_and_marks_unknown() -> None:
    ids = np.array([3, 8, 15])
    assert index_of(ids, np.array([15, 3, 4, 100, 0, 8])).tolist() == [2, 0, -1, -1, -1, 1]
    assert index_of(ids, np.array([[8, 9]])).tolist() == [[1, -1]]
    assert index_of(np.array([], dtype=np.int64), np.array([1, 2])).tolist() == [-1, -1]
    assert index_of(ids, np.array([], dtype=np.int64)).dtype == np.int64


def test_build_interactions_sums_weights_per_pair() -> None:
    users, items = np.array([1, 2, 3]), np.array([10, 20, 30])
    matrix = build_interactions(EVENTS, users, items)
    assert isinstance(matrix, sparse.csr_matrix)
    assert matrix.dtype == np.float32
    # no time filter here: user 1 x item 10 = view + view + cart + a later purchase
    expected = [[1 + 1 + 5 + 10, 10, 0], [0, 1, 5], [0, 0, 1]]
    np.testing.assert_array_equal(matrix.toarray(), expected)


def test_build_interactions_drops_unknown_ids_and_zero_weights() -> None:
    matrix = build_interactions(EVENTS, np.array([1, 2]), np.array([10, 30]), {ADDTOCART: 2.0})
    np.testing.assert_array_equal(matrix.toarray(), [[2, 0], [0, 2]])
    assert matrix.nnz == 2  # no stored zeros for views / purchases


def test_build_interactions_accepts_plain_string_events() -> None:
    plain = EVENTS.astype({EVENT: "str"})
    users, items = np.unique(EVENTS[VISITOR]), np.unique(EVENTS[ITEM])
    a = build_interactions(plain, users, items)
    b = build_interactions(EVENTS, users, items)
    assert (a != b).nnz == 0


@pytest.mark.parametrize(
    "weights", [{"click": 1.0}, {VIEW: -1.0}], ids=["unknown-type", "negative"]
)
def test_build_interactions_rejects_bad_weights(weights: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        build_interactions(EVENTS, np.array([1]), np.array([10]), weights)


def test_naive_and_vectorised_builds_agree() -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    events = make_events(
        list(
            zip(
                (T0 + rng.integers(0, WEEK, n)).tolist(),
                rng.integers(0, 300, n).tolist(),
                rng.choice(list(EVENT_TYPES), n, p=[0.9, 0.07, 0.03]).tolist(),
                rng.integers(0, 400, n).tolist(),
                strict=True,
            )
        )
    )
    users = np.unique(events[VISITOR])[::2]  # leave some users and items out on purpose
    items = np.unique(events[ITEM])[1::2]
    fast = build_interactions(events, users, items)
    naive = build_interactions_naive(events, users, items, DEFAULT_EVENT_WEIGHTS)
    assert fast.shape == naive.shape == (len(users), len(items))
    assert fast.nnz == naive.nnz > 0
    np.testing.assert_array_equal(fast.indptr, naive.indptr)
    np.testing.assert_array_equal(fast.indices, naive.indices)
    np.testing.assert_array_equal(fast.data, naive.data)


def test_prepare_training_data_uses_only_the_past() -> None:
    data = prepare_training_data(EVENTS, PROPERTIES, TREE, CUTOFF)
    assert isinstance(data, TrainingData)
    assert data.cutoff_ms == CUTOFF
    assert data.user_ids.tolist() == [1, 2, 3]  # visitor 4 only appears at the cutoff
    assert data.item_ids.tolist() == [10, 20, 30]  # future-only items 98, 99 do not leak
    assert data.user_ids.dtype == data.item_ids.dtype == np.int64
    assert (data.events[TIMESTAMP] < CUTOFF).all()
    assert len(data.events) == 7
    assert data.events.dtypes.equals(EVENTS.dtypes)
    np.testing.assert_array_equal(
        data.interactions.toarray(),
        [[7, 10, 0], [0, 1, 5], [0, 0, 1]],  # the post-cutoff purchase of 10 is not counted
    )
    # item 10 was in category 2 (child of 1) before the cutoff and moved to 3 only at it
    assert data.item_category.tolist() == [2, -1, -1]
    assert data.item_available.tolist() == [True, False, True]
    assert data.feature_names == ["item:10", "item:20", "item:30", "cat:1", "cat:2"]
    assert "cat:3" not in data.feature_names
    assert data.item_features.shape == (3, 5)
    np.testing.assert_allclose(
        data.item_features.toarray(),
        [[1 / 3, 0, 0, 1 / 3, 1 / 3], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]],
        rtol=1e-6,
    )


def test_prepare_training_data_sees_the_change_once_it_is_in_the_past() -> None:
    data = prepare_training_data(EVENTS, PROPERTIES, TREE, CUTOFF + 2)
    assert data.item_ids.tolist() == [10, 20, 30, 99]
    assert data.item_category.tolist() == [3, -1, -1, 3]
    assert data.item_available.tolist() == [False, False, True, True]


def test_prepare_training_data_options() -> None:
    data = prepare_training_data(
        EVENTS, PROPERTIES, TREE, CUTOFF, weights={ADDTOCART: 1.0}, identity_features=False
    )
    np.testing.assert_array_equal(data.interactions.toarray(), [[1, 0, 0], [0, 0, 1], [0, 0, 0]])
    assert data.feature_names == ["cat:1", "cat:2", "cat:unknown"]
    np.testing.assert_allclose(data.item_features.toarray(), [[0.5, 0.5, 0], [0, 0, 1], [0, 0, 1]])


def test_prepare_training_data_without_past_events_fails() -> None:
    with pytest.raises(ConfigurationError, match="no events before"):
        prepare_training_data(EVENTS, PROPERTIES, TREE, T0)
