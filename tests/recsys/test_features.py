import numpy as np
import pandas as pd
import pytest

from recsys.columns import AVAILABLE, CATEGORY, ITEM, PARENT
from recsys.exceptions import DataValidationError
from recsys.features import (
    build_item_features,
    category_ancestors,
    item_available,
    item_category,
    property_as_of,
)
from tests.helpers import T0, WEEK, make_properties

pytestmark = pytest.mark.model


def make_tree(rows: list[tuple[int, int | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            CATEGORY: pd.array([c for c, _ in rows], dtype="int64"),
            PARENT: pd.array([p for _, p in rows], dtype="Int64"),
        }
    )


# 1 <- 2 <- 3 ; 4 is a root ; 5's parent 99 is not listed ; 6 unused
TREE = make_tree([(3, 2), (2, 1), (1, None), (4, None), (5, 99), (6, 4)])

PROPERTIES = [
    (T0, 10, CATEGORY, "3"),
    (T0 + WEEK, 10, CATEGORY, "4"),  # exactly at the as-of point: must not be used
    (T0, 10, "888", "n12.000"),
    (T0, 20, CATEGORY, "4"),
    (T0, 30, "888", "n1.000"),  # item 30 never has a category
    (T0, 40, CATEGORY, "5"),
    (T0, 50, CATEGORY, "6"),  # not in the requested items
]


@pytest.mark.parametrize("categorical", [False, True])
def test_property_as_of_takes_latest_value_strictly_before(categorical: bool) -> None:
    props = make_properties(
        [
            (T0 + 2 * WEEK, 1, CATEGORY, "30"),
            (T0, 1, CATEGORY, "10"),
            (T0 + WEEK, 1, CATEGORY, "20"),
            (T0 + WEEK, 1, AVAILABLE, "0"),
            (T0 + 5, 2, CATEGORY, "7"),
            (T0 + 3 * WEEK, 3, CATEGORY, "9"),  # only after the as-of point
            (T0, 4, AVAILABLE, "1"),  # another property only
        ],
        categorical=categorical,
    )
    result = property_as_of(props, CATEGORY, T0 + 2 * WEEK)
    assert result.name == CATEGORY
    assert result.index.name == ITEM
    assert result.to_dict() == {1: "20", 2: "7"}
    assert property_as_of(props, CATEGORY, T0 + 2 * WEEK + 1).to_dict() == {1: "30", 2: "7"}
    assert property_as_of(props, CATEGORY, T0).empty
    assert property_as_of(props, "no such property", T0 + 9 * WEEK).empty


def test_property_as_of_breaks_timestamp_ties_by_input_order() -> None:
    props = make_properties([(T0, 1, AVAILABLE, "1"), (T0, 1, AVAILABLE, "0")])
    assert property_as_of(props, AVAILABLE, T0 + 1).to_dict() == {1: "0"}


def test_category_ancestors_walks_to_the_root() -> None:
    ancestors = category_ancestors(TREE)
    assert ancestors[3] == (3, 2, 1)
    assert ancestors[2] == (2, 1)
    assert ancestors[1] == (1,)
    assert ancestors[6] == (6, 4)
    assert ancestors[5] == (5, 99)  # an unlisted parent acts as a root


def test_category_ancestors_rejects_cycles() -> None:
    with pytest.raises(DataValidationError, match="cycle"):
        category_ancestors(make_tree([(1, 2), (2, 3), (3, 1), (4, None)]))


def test_item_category_as_of() -> None:
    props = make_properties([*PROPERTIES, (T0, 60, CATEGORY, "not a number")])
    cats = item_category(np.array([40, 10, 30, 20, 60, 77]), props, T0 + WEEK)
    assert cats.dtype == np.int64
    assert cats.tolist() == [5, 3, -1, 4, -1, -1]
    assert item_category(np.array([10]), props, T0 + WEEK + 1).tolist() == [4]


def test_item_available_as_of_with_unknown_as_available() -> None:
    props = make_properties(
        [
            (T0, 1, AVAILABLE, "0"),
            (T0, 2, AVAILABLE, "1"),
            (T0, 3, AVAILABLE, "1"),
            (T0 + WEEK, 3, AVAILABLE, "0"),  # at the as-of point: not yet known
            (T0, 4, CATEGORY, "0"),  # a category "0" is not availability
        ]
    )
    available = item_available(np.array([1, 2, 3, 4, 5]), props, T0 + WEEK)
    assert available.dtype == bool
    assert available.tolist() == [False, True, True, True, True]


def test_build_item_features_identity_plus_category_path() -> None:
    matrix, names = build_item_features(
        np.array([10, 20, 30, 40]), make_properties(PROPERTIES), TREE, T0 + WEEK
    )
    assert names == [
        "item:10", "item:20", "item:30", "item:40",
        "cat:1", "cat:2", "cat:3", "cat:4", "cat:5", "cat:99",
    ]  # fmt: skip
    assert matrix.dtype == np.float32
    expected = np.array(
        [
            # item:10 20   30   40   cat:1 cat:2 cat:3 cat:4 cat:5 cat:99
            [1 / 4, 0, 0, 0, 1 / 4, 1 / 4, 1 / 4, 0, 0, 0],
            [0, 1 / 2, 0, 0, 0, 0, 0, 1 / 2, 0, 0],
            [0, 0, 1, 0, 0, 0, 0, 0, 0, 0],  # unknown category: identity only
            [0, 0, 0, 1 / 3, 0, 0, 0, 0, 1 / 3, 1 / 3],
        ]
    )
    np.testing.assert_allclose(matrix.toarray(), expected, rtol=1e-6)


def test_build_item_features_without_identity_uses_unknown_feature() -> None:
    matrix, names = build_item_features(
        np.array([30, 10, 40, 20]),
        make_properties(PROPERTIES, categorical=True),
        TREE,
        T0 + WEEK,
        identity=False,
    )
    assert names == ["cat:1", "cat:2", "cat:3", "cat:4", "cat:5", "cat:99", "cat:unknown"]
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 1],
            [1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0],
            [0, 0, 0, 0, 1 / 2, 1 / 2, 0],
            [0, 0, 0, 1, 0, 0, 0],
        ]
    )
    np.testing.assert_allclose(matrix.toarray(), expected, rtol=1e-6)


def test_build_item_features_without_identity_all_known_has_no_unknown_column() -> None:
    _, names = build_item_features(
        np.array([10, 20]), make_properties(PROPERTIES), TREE, T0 + WEEK, identity=False
    )
    assert names == ["cat:1", "cat:2", "cat:3", "cat:4"]


def test_build_item_features_follows_the_as_of_point() -> None:
    matrix, names = build_item_features(
        np.array([10]), make_properties(PROPERTIES), TREE, T0 + WEEK + 1
    )
    assert names == ["item:10", "cat:4"]
    np.testing.assert_allclose(matrix.toarray(), [[0.5, 0.5]])


def test_build_item_features_rows_sum_to_one_on_random_catalogue() -> None:
    rng = np.random.default_rng(0)
    items = np.arange(500)
    rows = [(T0, int(i), CATEGORY, str(int(rng.integers(1, 7)))) for i in items[::2]]
    matrix, names = build_item_features(items, make_properties(rows), TREE, T0 + 1)
    assert matrix.shape == (500, len(names))
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    assert (matrix.diagonal() > 0).all()  # identity columns come first, in item order


def test_build_item_features_empty_and_duplicate_items() -> None:
    matrix, names = build_item_features(
        np.array([], dtype=np.int64), make_properties(PROPERTIES), TREE, T0 + WEEK
    )
    assert matrix.shape == (0, 0)
    assert names == []
    with pytest.raises(ValueError, match="unique"):
        build_item_features(np.array([10, 10]), make_properties(PROPERTIES), TREE, T0 + WEEK)
