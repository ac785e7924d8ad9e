import math

import numpy as np
import pandas as pd
import pytest

from recsys.columns import ADDTOCART, EVENT, EVENT_TYPES, ITEM, PURCHASE, TIMESTAMP, VIEW, VISITOR
from recsys.evaluation import (
    COLD,
    RELEVANT,
    SEGMENT,
    WARM,
    coverage,
    evaluate_policy,
    hit_rate_at_k,
    hits_matrix,
    holdout_targets,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

pytestmark = pytest.mark.model

# Golden case, k = 3. Per user: recommended, relevant, and the hand-computed scores.
#   u0 hit at rank 2 of 2 relevant:        P 1/3  R 1/2  AP (1/2)/2=1/4  NDCG d2/(d1+d2)
#   u1 more relevant (4) than k, empties:  P 1/3  R 1/4  AP 1/3          NDCG d1/(d1+d2+d3)
#   u2 fewer relevant (1) than k, repeat:  P 1/3  R 1    AP 1            NDCG 1
#   u3 no relevant item: excluded from every mean
#   u4 relevant has a duplicate (|rel|=2): P 1/3  R 1/2  AP (1/3)/2=1/6  NDCG d3/(d1+d2)
#   u5 no hit:                             P 0    R 0    AP 0            NDCG 0
# with d_i = 1/log2(i+1): d1 = 1, d2 = 1/log2(3), d3 = 1/2.
RECOMMENDED = np.array(
    [
        [1, 2, 3],
        [4, -1, -1],
        [8, 8, 5],
        [1, 2, 3],
        [5, 6, 7],
        [10, 11, 12],
    ]
)
RELEVANT_ITEMS = [
    np.array([2, 9]),
    np.array([4, 5, 6, 7]),
    np.array([8]),
    np.array([], dtype=np.int64),
    np.array([7, 7, 1]),
    np.array([13]),
]
D1, D2, D3 = 1.0, 1 / math.log2(3), 0.5
GOLDEN = {
    "precision@3": (4 / 3) / 5,
    "recall@3": (1 / 2 + 1 / 4 + 1 + 1 / 2 + 0) / 5,
    "map@3": (1 / 4 + 1 / 3 + 1 + 1 / 6 + 0) / 5,
    "ndcg@3": (D2 / (D1 + D2) + D1 / (D1 + D2 + D3) + 1 + D3 / (D1 + D2) + 0) / 5,
    "hitrate@3": 4 / 5,
}


def test_hits_matrix_golden() -> None:
    expected = np.array(
        [
            [False, True, False],
            [True, False, False],
            [True, False, False],  # the repeated 8 is not a second hit
            [False, False, False],
            [False, False, True],
            [False, False, False],
        ]
    )
    np.testing.assert_array_equal(hits_matrix(RECOMMENDED, RELEVANT_ITEMS), expected)


def test_hits_matrix_never_matches_empty_slots_or_repeats() -> None:
    rec = np.array([[-1, 3, 3, -1, 3]])
    np.testing.assert_array_equal(
        hits_matrix(rec, [np.array([-1, 3])]), [[False, True, False, False, False]]
    )


def test_hits_matrix_matches_a_brute_force_reference() -> None:
    rng = np.random.default_rng(3)
    n, k = 2_000, 6
    rec = rng.integers(-1, 40, size=(n, k))
    relevant = [rng.integers(0, 40, size=rng.integers(0, 6)) for _ in range(n)]
    expected = np.zeros((n, k), dtype=bool)
    for u in range(n):
        seen: set[int] = set()
        for j, item in enumerate(rec[u].tolist()):
            expected[u, j] = item != -1 and item in set(relevant[u].tolist()) and item not in seen
            seen.add(item)
    np.testing.assert_array_equal(hits_matrix(rec, relevant), expected)


@pytest.mark.parametrize(
    ("metric", "name"),
    [
        (precision_at_k, "precision@3"),
        (recall_at_k, "recall@3"),
        (map_at_k, "map@3"),
        (ndcg_at_k, "ndcg@3"),
        (hit_rate_at_k, "hitrate@3"),
    ],
)
def test_metric_golden(metric, name: str) -> None:
    assert metric(RECOMMENDED, RELEVANT_ITEMS, 3) == pytest.approx(GOLDEN[name], rel=1e-12)


def test_metrics_at_smaller_k_use_the_first_columns_only() -> None:
    # k = 1: hits in column 1 for u1 and u2 only; ideal DCG of one slot is 1
    assert precision_at_k(RECOMMENDED, RELEVANT_ITEMS, 1) == pytest.approx(2 / 5)
    assert recall_at_k(RECOMMENDED, RELEVANT_ITEMS, 1) == pytest.approx((1 / 4 + 1) / 5)
    assert map_at_k(RECOMMENDED, RELEVANT_ITEMS, 1) == pytest.approx(2 / 5)
    assert ndcg_at_k(RECOMMENDED, RELEVANT_ITEMS, 1) == pytest.approx(2 / 5)
    assert hit_rate_at_k(RECOMMENDED, RELEVANT_ITEMS, 1) == pytest.approx(2 / 5)


def test_metrics_at_larger_k_count_missing_columns_as_empty_slots() -> None:
    rec = np.array([[7, 8]])
    relevant = [np.array([7, 8, 9, 10, 11])]
    assert precision_at_k(rec, relevant, 4) == pytest.approx(2 / 4)
    assert recall_at_k(rec, relevant, 4) == pytest.approx(2 / 5)
    assert map_at_k(rec, relevant, 4) == pytest.approx((1 + 1) / 4)
    ideal = 1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)
    assert ndcg_at_k(rec, relevant, 4) == pytest.approx((1 + 1 / math.log2(3)) / ideal)


def test_metrics_are_nan_without_any_relevant_item() -> None:
    rec = np.array([[1, 2], [3, 4]])
    relevant = [np.array([], dtype=np.int64), np.array([], dtype=np.int64)]
    for metric in (precision_at_k, recall_at_k, map_at_k, ndcg_at_k, hit_rate_at_k):
        assert math.isnan(metric(rec, relevant, 2))
    assert ranking_metrics(rec, relevant, 2, 10)["users"] == 0


def test_perfect_ranking_scores_one() -> None:
    rec = np.array([[5, 6, 7], [1, -1, -1]])
    relevant = [np.array([7, 6, 5]), np.array([1])]
    assert ndcg_at_k(rec, relevant, 3) == pytest.approx(1.0)
    assert map_at_k(rec, relevant, 3) == pytest.approx(1.0)
    assert recall_at_k(rec, relevant, 3) == pytest.approx(1.0)
    assert precision_at_k(rec, relevant, 3) == pytest.approx((1 + 1 / 3) / 2)


def test_coverage_golden() -> None:
    # distinct non-empty items: 1 2 3 4 8 5 6 7 10 11 12 = 11 of 20
    assert coverage(RECOMMENDED, 20) == pytest.approx(11 / 20)
    assert coverage(np.full((3, 2), -1), 5) == 0.0
    with pytest.raises(ValueError):
        coverage(RECOMMENDED, 0)


def test_ranking_metrics_golden() -> None:
    metrics = ranking_metrics(RECOMMENDED, RELEVANT_ITEMS, 3, 20)
    assert list(metrics) == [
        "precision@3", "recall@3", "ndcg@3", "map@3", "hitrate@3", "coverage", "users",
    ]  # fmt: skip
    for name, value in GOLDEN.items():
        assert metrics[name] == pytest.approx(value, rel=1e-12)
    assert metrics["coverage"] == pytest.approx(11 / 20)
    assert metrics["users"] == 5


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="relevant"):
        precision_at_k(RECOMMENDED, RELEVANT_ITEMS[:2], 3)
    with pytest.raises(ValueError, match="2-D"):
        precision_at_k(np.array([1, 2, 3]), [np.array([1])], 3)
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(RECOMMENDED, RELEVANT_ITEMS, 0)


def make_events(rows: list[tuple[int, int, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[TIMESTAMP, VISITOR, EVENT, ITEM]).astype(
        {TIMESTAMP: "int64", VISITOR: "int64", ITEM: "int64"}
    )
    frame[EVENT] = pd.Categorical(frame[EVENT], categories=list(EVENT_TYPES))
    return frame


KNOWN = np.array([1, 2, 9])  # visitors seen before the holdout
HOLDOUT = make_events(
    [
        (10, 2, ADDTOCART, 30),
        (11, 2, ADDTOCART, 20),
        (12, 2, ADDTOCART, 30),  # carted twice: one relevant item
        (13, 2, PURCHASE, 40),
        (14, 5, VIEW, 50),  # cold, views only
        (15, 6, ADDTOCART, 60),  # cold with a cart
        (16, 1, VIEW, 10),  # warm, views only
        (17, 6, VIEW, 61),
    ]
)


def test_holdout_targets_addtocart() -> None:
    targets = holdout_targets(KNOWN, HOLDOUT, ADDTOCART)
    assert list(targets.columns) == [VISITOR, RELEVANT, SEGMENT]
    assert targets[VISITOR].tolist() == [2, 6]
    assert targets[VISITOR].dtype == np.int64
    assert [r.tolist() for r in targets[RELEVANT]] == [[20, 30], [60]]
    assert targets[SEGMENT].tolist() == [WARM, COLD]
    assert targets.index.tolist() == [0, 1]


def test_holdout_targets_any_event() -> None:
    targets = holdout_targets(KNOWN, HOLDOUT, "any")
    assert targets[VISITOR].tolist() == [1, 2, 5, 6]
    assert [r.tolist() for r in targets[RELEVANT]] == [[10], [20, 30, 40], [50], [60, 61]]
    assert targets[SEGMENT].tolist() == [WARM, WARM, COLD, COLD]


def test_holdout_targets_empty_and_invalid() -> None:
    targets = holdout_targets(KNOWN, HOLDOUT.iloc[:0], ADDTOCART)
    assert targets.empty
    assert list(targets.columns) == [VISITOR, RELEVANT, SEGMENT]
    with pytest.raises(ValueError, match="target"):
        holdout_targets(KNOWN, HOLDOUT, PURCHASE)


class RecordingPolicy:
    """Recommends a fixed list to everyone and remembers each call."""

    def __init__(self, items: list[int]) -> None:
        self.items = np.array(items)
        self.calls: list[tuple[list[int], int]] = []

    def __call__(self, user_ids: np.ndarray, k: int) -> np.ndarray:
        self.calls.append((user_ids.tolist(), k))
        return np.tile(self.items[:k], (len(user_ids), 1))


def test_evaluate_policy_per_segment() -> None:
    targets = holdout_targets(KNOWN, HOLDOUT, "any")  # warm 1, 2; cold 5, 6
    policy = RecordingPolicy([30, 60, 10])
    table = evaluate_policy(policy, targets, k=2, n_catalogue=8)
    assert policy.calls == [([1, 2], 2), ([5, 6], 2)]
    assert table.index.tolist() == [WARM, COLD, "all"]
    assert table.index.name == SEGMENT
    assert list(table.columns) == [
        "precision@2", "recall@2", "ndcg@2", "map@2", "hitrate@2", "coverage", "users",
    ]  # fmt: skip
    # warm: user 1 no hit; user 2 hit at rank 1 of 3 relevant. cold: user 6 hit at rank 2 of 2
    assert table.loc[WARM, "precision@2"] == pytest.approx((0 + 1 / 2) / 2)
    assert table.loc[WARM, "recall@2"] == pytest.approx((0 + 1 / 3) / 2)
    assert table.loc[COLD, "precision@2"] == pytest.approx((0 + 1 / 2) / 2)
    assert table.loc[COLD, "map@2"] == pytest.approx((0 + (1 / 2) / 2) / 2)
    assert table.loc["all", "precision@2"] == pytest.approx(1 / 4)
    assert table.loc["all", "hitrate@2"] == pytest.approx(2 / 4)
    assert table.loc["all", "coverage"] == pytest.approx(2 / 8)
    assert table["users"].tolist() == [2, 2, 4]


def test_evaluate_policy_with_an_empty_segment_and_short_lists() -> None:
    targets = holdout_targets(KNOWN, HOLDOUT, ADDTOCART).iloc[:1]  # warm user 2 only
    policy = RecordingPolicy([20])  # returns one column although k = 3
    table = evaluate_policy(policy, targets, 3, 100)
    assert policy.calls == [([2], 3)]
    assert table.loc[WARM, "precision@3"] == pytest.approx(1 / 3)
    assert table.loc[COLD, "users"] == 0
    assert math.isnan(table.loc[COLD, "precision@3"])
    assert table.loc["all", "recall@3"] == pytest.approx(1 / 2)


def test_evaluate_policy_checks_its_inputs() -> None:
    targets = holdout_targets(KNOWN, HOLDOUT, "any")
    with pytest.raises(ValueError, match="rows"):
        evaluate_policy(lambda users, k: np.zeros((1, k), dtype=int), targets, 2, 8)
    with pytest.raises(ValueError, match="n_catalogue"):
        evaluate_policy(RecordingPolicy([1, 2]), targets, 2)
