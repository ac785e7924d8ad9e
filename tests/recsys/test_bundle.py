"""Bundle: building from training data, save/load round trip, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from recsys import columns as C
from recsys.bundle import (
    ARRAYS_FILE,
    METADATA_FILE,
    Bundle,
    ObliviousTrees,
    ServedAnswers,
    make_bundle,
    serving_lists,
)
from recsys.exceptions import DataValidationError, ModelNotFoundError
from recsys.interactions import TrainingData
from tests.helpers import DAY, make_events

pytestmark = pytest.mark.model

CUTOFF = 20 * DAY

#: (day, visitor, event, item); items 10, 20, 30, 40 have positions 0..3
EVENTS = [
    (0.5, 2, C.VIEW, 30),
    (1, 1, C.VIEW, 10),
    (2, 1, C.VIEW, 20),
    (3, 1, C.VIEW, 10),  # seen again: the newest view counts for the order
    (4, 1, C.ADDTOCART, 30),
    (5, 1, C.PURCHASE, 30),
    (10, 2, C.VIEW, 40),
    (15, 2, C.VIEW, 20),
    (16, 3, C.VIEW, 20),
    (17, 3, C.ADDTOCART, 20),
    (18, 3, C.VIEW, 40),
]


def training_data(events: list[tuple] = EVENTS) -> TrainingData:
    frame = make_events([(int(day * DAY), visitor, e, item) for day, visitor, e, item in events])
    users = np.unique(frame[C.VISITOR].to_numpy())
    items = np.unique(frame[C.ITEM].to_numpy())
    interactions = sparse.csr_matrix(
        (
            np.ones(len(frame), dtype=np.float32),
            (np.searchsorted(users, frame[C.VISITOR]), np.searchsorted(items, frame[C.ITEM])),
        ),
        shape=(len(users), len(items)),
    )
    return TrainingData(
        cutoff_ms=CUTOFF,
        user_ids=users,
        item_ids=items,
        interactions=interactions,
        item_features=sparse.identity(len(items), dtype=np.float32, format="csr"),
        feature_names=[f"item:{i}" for i in items],
        item_category=np.array([5, 5, 6, -1]),
        item_available=np.array([True, True, True, False]),
        events=frame,
    )


def bundle_of(
    data: TrainingData,
    popularity_window_days: int = 14,
    history_cap: int = 50,
    metadata: dict | None = None,
) -> Bundle:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(len(data.item_ids), 3)).astype(np.float32)
    users = np.hstack([rng.normal(size=(len(data.user_ids), 2)), np.ones((3, 1))])
    lists = serving_lists(data, popularity_window_days, history_cap)
    return make_bundle(data, items, users, lists, metadata)


def rows(indptr: np.ndarray, values: np.ndarray) -> list[list[int]]:
    return [values[a:b].tolist() for a, b in zip(indptr[:-1], indptr[1:], strict=True)]


def test_popular_ranks_recent_weighted_events_then_all_time_counts() -> None:
    bundle = bundle_of(training_data())
    # last 14 days: item 20 = view + view + cart(5) = 7, item 40 = 2 views = 2;
    # items 30 and 10 have nothing recent: 30 has 3 events in all, 10 has 2
    assert bundle.item_ids[bundle.popular].tolist() == [20, 40, 30, 10]
    assert bundle.popular.dtype == np.int32


def test_popularity_window_is_configurable() -> None:
    bundle = bundle_of(training_data(), popularity_window_days=3)
    # only days 17..20: item 20 = cart(5), item 40 = view(1)
    assert bundle.item_ids[bundle.popular].tolist()[:2] == [20, 40]
    everything = bundle_of(training_data(), popularity_window_days=100)
    # all time: 30 -> 1+5+10 = 16, 20 -> 1+1+1+5 = 8, 10 and 40 -> 2 with 2 events each,
    # so the item position breaks the tie
    assert everything.item_ids[everything.popular].tolist() == [30, 20, 10, 40]


def test_popularity_weighs_events_like_the_interactions() -> None:
    data = training_data()
    data.event_weights = {C.VIEW: 1.0, C.ADDTOCART: 0.0, C.PURCHASE: 0.0}
    # last 14 days, views only: 20 and 40 two views each, 20 has more events in all (4 vs 2);
    # then all-time counts: 30 (3), 10 (2)
    bundle = bundle_of(data)
    assert bundle.item_ids[bundle.popular].tolist() == [20, 40, 30, 10]
    data.event_weights = {C.ADDTOCART: 1.0}
    # carts only: 20 is the one item carted in the window; then all-time counts: 30 (3), then
    # 10 and 40 (2 each; the position breaks the tie). The default weights give 20, 40, 30, 10.
    bundle = bundle_of(data)
    assert bundle.item_ids[bundle.popular].tolist() == [20, 30, 10, 40]


def test_lists_are_shared_read_only_by_bundles_of_the_same_data() -> None:
    data = training_data()
    lists = serving_lists(data)
    first = make_bundle(data, np.zeros((4, 1)), np.zeros((3, 1)), lists)
    second = make_bundle(data, np.ones((4, 1)), np.zeros((3, 1)), lists)
    assert first.history_items is second.history_items is lists.lists.history_items
    assert first.covisit is second.covisit is lists.covisit
    assert not lists.popular.flags.writeable


def test_history_counts_views_and_carts_per_item() -> None:
    activity = bundle_of(training_data()).activity
    assert activity is not None
    # histories [30, 10, 20], [20, 40, 30], [40, 20] (see the test above)
    bundle = bundle_of(training_data())
    views = rows(bundle.history_indptr, activity.history_views)
    carts = rows(bundle.history_indptr, activity.history_carts)
    assert views == [[0, 2, 1], [1, 1, 1], [1, 1]]
    assert carts == [[1, 0, 0], [0, 0, 0], [0, 1]]


def test_item_counts_over_windows_ending_at_the_cutoff() -> None:
    activity = bundle_of(training_data()).activity
    assert activity is not None
    # cutoff day 20, last 7 days: 20 viewed on days 15 and 16 and carted on day 17, 40 viewed
    # on day 18 (and on day 10, outside the window)
    assert activity.column("views_7d").tolist() == [0, 2, 0, 1]
    assert activity.column("carts_7d").tolist() == [0, 1, 0, 0]
    assert activity.column("views_all").tolist() == [2, 3, 1, 2]
    assert activity.column("buys_all").tolist() == [0, 0, 1, 0]
    assert activity.column("views_1d").tolist() == [0, 0, 0, 0]


def test_history_is_newest_first_deduplicated_and_without_purchases() -> None:
    bundle = bundle_of(training_data())
    ids = bundle.item_ids
    histories = rows(bundle.history_indptr, bundle.history_items)
    assert [ids[h].tolist() for h in histories] == [[30, 10, 20], [20, 40, 30], [40, 20]]
    times = rows(bundle.history_indptr, bundle.history_ts)
    assert times[0] == [4 * DAY, 3 * DAY, 2 * DAY]
    assert [ids[b].tolist() for b in rows(bundle.bought_indptr, bundle.bought_items)] == [
        [30],
        [],
        [],
    ]


def test_history_cap() -> None:
    bundle = bundle_of(training_data(), history_cap=2)
    histories = rows(bundle.history_indptr, bundle.history_items)
    assert [bundle.item_ids[h].tolist() for h in histories] == [[30, 10], [20, 40], [40, 20]]


def test_metadata_defaults_and_overrides() -> None:
    bundle = bundle_of(training_data(), metadata={"policy": "recent", "model_version": "7"})
    meta = bundle.metadata
    assert meta["cutoff_ms"] == CUTOFF
    assert meta["policy"] == "recent"
    assert meta["model_version"] == "7"
    assert meta["history_cap"] == 50
    assert meta["data_start_ms"] == DAY // 2
    assert meta["data_end_ms"] == 18 * DAY + 1
    assert "trained_at" in meta


def test_save_load_round_trip(tmp_path: Path) -> None:
    bundle = bundle_of(training_data(), metadata={"params": {"lr": np.float32(0.5)}})
    bundle.save(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ARRAYS_FILE, METADATA_FILE]
    loaded = Bundle.load(tmp_path / "b")
    for name in (
        "item_ids",
        "item_vectors",
        "user_ids",
        "user_vectors",
        "popular",
        "item_category",
        "item_available",
        "history_indptr",
        "history_items",
        "history_ts",
        "bought_indptr",
        "bought_items",
    ):
        original, restored = getattr(bundle, name), getattr(loaded, name)
        assert restored.dtype == original.dtype, name
        np.testing.assert_array_equal(restored, original, err_msg=name)
    assert loaded.metadata == json.loads(json.dumps(bundle.metadata, default=float))
    assert loaded.metadata["params"] == {"lr": 0.5}
    # plain arrays only: nothing needs pickle
    with np.load(tmp_path / "b" / ARRAYS_FILE, allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)


def answers_of(bundle: Bundle) -> ServedAnswers:
    items = np.array([[1, 0], [-1, -1], [2, 1]])
    reasons = np.array([[0, 2], [0, 0], [0, 4]])
    return ServedAnswers(items, reasons, np.ones((3, 2)), "blend", 3)


def test_served_answers_round_trip(tmp_path: Path) -> None:
    bundle = bundle_of(training_data(), metadata={"policy": "blend"})
    bundle.answers = answers_of(bundle)
    bundle.save(tmp_path / "b")
    stored = json.loads((tmp_path / "b" / METADATA_FILE).read_text())
    assert stored["precomputed"] == {"policy": "blend", "recent_slots": 3}
    with np.load(tmp_path / "b" / ARRAYS_FILE) as npz:
        assert {"top_items", "top_reasons", "top_scores"} <= set(npz.files)
    loaded = Bundle.load(tmp_path / "b")
    assert loaded.answers is not None
    assert (loaded.answers.policy, loaded.answers.recent_slots) == ("blend", 3)
    for name, dtype in (("items", np.int32), ("reasons", np.int8), ("scores", np.float64)):
        restored = getattr(loaded.answers, name)
        assert restored.dtype == dtype, name
        np.testing.assert_array_equal(restored, getattr(bundle.answers, name), err_msg=name)
    assert "precomputed" not in loaded.metadata  # said once, by the answers
    assert loaded.metadata == bundle.metadata


def test_answers_of_an_older_layout_are_dropped(tmp_path: Path) -> None:
    """Answers written before reason codes (``top_head``) or scores: the bundle loads without
    them (its visitors are ranked live)."""
    bundle = bundle_of(training_data())
    bundle.answers = answers_of(bundle)
    bundle.save(tmp_path / "b")
    assert Bundle.load(tmp_path / "b").answers is not None
    with np.load(tmp_path / "b" / ARRAYS_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "top_reasons"}
    arrays["top_head"] = np.zeros(3, np.int8)
    np.savez(tmp_path / "b" / ARRAYS_FILE, **arrays)
    assert Bundle.load(tmp_path / "b").answers is None


def test_load_rejects_inconsistent_answers(tmp_path: Path) -> None:
    bundle = bundle_of(training_data())
    bundle.answers = ServedAnswers(np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((2, 5)), "blend", 5)
    bundle.save(tmp_path / "b")
    with pytest.raises(DataValidationError, match="top_items are not"):
        Bundle.load(tmp_path / "b")


def test_load_missing_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="arrays.npz"):
        Bundle.load(tmp_path / "nowhere")
    bundle_of(training_data()).save(tmp_path / "b")
    (tmp_path / "b" / METADATA_FILE).unlink()
    with pytest.raises(ModelNotFoundError, match="metadata.json"):
        Bundle.load(tmp_path / "b")


def test_load_rejects_inconsistent_arrays(tmp_path: Path) -> None:
    bundle = bundle_of(training_data())
    bundle.user_vectors = bundle.user_vectors[:, :2]
    bundle.save(tmp_path / "b")
    with pytest.raises(DataValidationError, match="user_vectors has 2 columns") as info:
        Bundle.load(tmp_path / "b")
    assert ARRAYS_FILE in str(info.value)


def test_load_rejects_missing_array(tmp_path: Path) -> None:
    bundle_of(training_data()).save(tmp_path / "b")
    with np.load(tmp_path / "b" / ARRAYS_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "popular"}
    np.savez(tmp_path / "b" / ARRAYS_FILE, **arrays)
    with pytest.raises(DataValidationError, match="popular"):
        Bundle.load(tmp_path / "b")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("popular", np.array([0, 0, 1, 2]), "permutation"),
        ("item_ids", np.array([10, 30, 20, 40]), "ascending"),
        ("history_items", np.array([9, 0, 1, 1, 3, 2, 3, 1]), "outside"),
        ("bought_indptr", np.array([0, 1, 1]), "CSR"),
        ("item_available", np.array([True, False]), "item_available"),
        (
            "answers",
            ServedAnswers(np.zeros((3, 5)), np.zeros((3, 5)), np.zeros((2, 5)), "blend", 5),
            "top_reasons and top_scores must have the shape of top_items",
        ),
        (
            "answers",
            ServedAnswers(np.full((3, 5), 4), np.zeros((3, 5)), np.zeros((3, 5)), "blend", 5),
            "top_items are not",
        ),
    ],
)
def test_validate_names_the_broken_array(field: str, value: np.ndarray, message: str) -> None:
    bundle = bundle_of(training_data())
    setattr(bundle, field, value)
    with pytest.raises(ValueError, match=message):
        bundle.validate()


def test_make_bundle_rejects_vectors_of_the_wrong_shape() -> None:
    data = training_data()
    with pytest.raises(ValueError, match="item_vectors"):
        make_bundle(data, np.zeros((3, 2)), np.zeros((3, 2)))


def test_histories_are_capped_and_newest_first_on_a_large_input() -> None:
    """200k random events over 50k visitors: every history capped, newest first."""
    rng = np.random.default_rng(1)
    n = 200_000
    kinds = rng.choice(list(C.EVENT_TYPES), size=n, p=[0.9, 0.07, 0.03])
    events = list(
        zip(
            rng.uniform(0, 19.9, n),
            rng.integers(0, 50_000, n),
            kinds,
            rng.integers(0, 5_000, n),
            strict=True,
        )
    )
    data = training_data(events)
    data.item_category = np.full(len(data.item_ids), -1)
    data.item_available = np.ones(len(data.item_ids), dtype=bool)
    bundle = bundle_of_shape(data)
    counts = np.diff(bundle.history_indptr)
    assert counts.max() <= 50 and counts.sum() > 0
    # newest first within every visitor
    ts = bundle.history_ts
    same_user = np.repeat(np.arange(len(counts)), counts)
    assert np.all((np.diff(ts) <= 0) | (np.diff(same_user) != 0))


def bundle_of_shape(data: TrainingData) -> Bundle:
    items = np.zeros((len(data.item_ids), 1), dtype=np.float32)
    users = np.zeros((len(data.user_ids), 1), dtype=np.float32)
    return make_bundle(data, items, users)


@pytest.mark.parametrize("rows", [0, 1, 2, 9, 200])
def test_oblivious_trees_score_each_row_as_one_walk_per_tree_summed_in_order(rows) -> None:
    """The vectorised ensemble equals the textbook evaluation: per tree, the leaf from the
    comparisons of its levels, then the leaf values added one tree after another (the order
    CatBoost adds them in; another order changes the last bits)."""
    rng = np.random.default_rng(rows)
    n_trees, depth, n_features = 300, 6, 7
    features = rng.integers(0, n_features, size=(n_trees, depth))
    borders = np.round(rng.normal(size=(n_trees, depth)), 1).astype(np.float32)
    borders[::5, -1] = np.inf  # padding levels of shallower trees
    trees = ObliviousTrees(
        features,
        borders,
        rng.normal(size=(n_trees, 2**depth)) * 1e3,
        ("f",) * n_features,
        scale=0.5,
        bias=2.0,
    )
    x = np.round(rng.normal(size=(rows, n_features)), 1).astype(np.float32)  # on borders too
    expected = []
    for row in x:
        total = 0.0
        for t in range(n_trees):
            leaf = sum(int(row[features[t, j]] > borders[t, j]) << j for j in range(depth))
            total += float(trees.leaves[t, leaf])
        expected.append(total * 0.5 + 2.0)
    assert trees.predict(x).tolist() == expected


def test_oblivious_trees_without_splits_add_their_one_leaf() -> None:
    trees = ObliviousTrees(
        np.zeros((3, 0), np.int32), np.zeros((3, 0)), np.array([[1.0], [2.0], [4.0]]), ("f",)
    )
    assert trees.predict(np.zeros((2, 1))).tolist() == [7.0, 7.0]
