"""Offline ranking metrics (pure numpy): precision, recall, NDCG, MAP, hit rate, coverage.

Conventions shared by every metric:

- ``recommended`` is an ``n_users x width`` int array of item ids, best first; ``-1`` marks
  an empty slot (the policy had fewer than ``k`` items to offer) and is never a hit.
- An item recommended twice to the same user counts once: only its first slot can be a hit.
- ``relevant[u]`` holds the items user ``u`` actually interacted with; duplicates in it
  count once.
- Means are over users with at least one relevant item; users with none are excluded
  (they carry no information about ranking quality). With no such user a metric is NaN.
- Only the first ``k`` columns are scored; a narrower array is treated as padded with
  empty slots, so precision still divides by ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.arrays import sorted_unique

#: result keys beside the ``<metric>@k`` ones
USERS = "users"
COVERAGE = "coverage"
#: an empty slot of a recommendation list
EMPTY = -1
#: the ranking metrics, in report order (keys ``<name>@k``)
METRICS = ("precision", "recall", "ndcg", "map", "hitrate")


def metric_key(name: str, k: int) -> str:
    """The result key of metric ``name`` at cut-off ``k``.

    >>> metric_key("precision", 10)
    'precision@10'
    """
    return f"{name}@{k}"


def _hits_and_counts(
    recommended: np.ndarray, relevant: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Hit matrix and the number of distinct relevant items per user."""
    rec = np.asarray(recommended, dtype=np.int64)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be 2-D (n_users x k), got shape {rec.shape}")
    n_users = rec.shape[0]
    if len(relevant) != n_users:
        raise ValueError(f"{n_users} rows of recommendations but {len(relevant)} relevant sets")
    lengths = np.fromiter(map(len, relevant), dtype=np.int64, count=n_users)
    flat = (
        np.concatenate(list(relevant)).astype(np.int64, copy=False)
        if lengths.sum()
        else np.empty(0, dtype=np.int64)
    )
    # Give every item id (relevant or recommended) a dense code by one sort, so that a
    # (user row, item) pair becomes one int64 key ``row * n_codes + code`` without overflow.
    codes, n_codes = _dense_codes(np.concatenate([flat, rec.ravel()]))
    owner = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    relevant_keys = sorted_unique(owner * n_codes + codes[: len(flat)])
    n_relevant = np.bincount(relevant_keys // n_codes, minlength=n_users)

    hits = np.zeros(rec.shape, dtype=bool)
    if len(relevant_keys) and rec.size:
        # row-major keys ascend row by row, so the binary searches stay cache-local
        keys = np.arange(n_users, dtype=np.int64)[:, None] * n_codes + codes[len(flat) :].reshape(
            rec.shape
        )
        found = np.minimum(np.searchsorted(relevant_keys, keys), len(relevant_keys) - 1)
        hits = (relevant_keys[found] == keys) & (rec != EMPTY) & ~_repeats(rec)
    return hits, n_relevant


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes ``0..m-1`` such that equal values share a code; returns (codes, max(m, 1))."""
    order = np.argsort(values)
    ordered = values[order]
    first = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    codes = np.empty(len(values), dtype=np.int64)
    codes[order] = np.cumsum(first) - 1
    return codes, max(int(first.sum()), 1)


def _repeats(rec: np.ndarray) -> np.ndarray:
    """True where a row repeats an item already recommended in an earlier slot."""
    order = np.argsort(rec, axis=1, kind="stable")  # equal ids keep slot order
    ranked = np.take_along_axis(rec, order, axis=1)
    repeat_sorted = np.zeros(rec.shape, dtype=bool)
    repeat_sorted[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    repeats = np.zeros(rec.shape, dtype=bool)
    np.put_along_axis(repeats, order, repeat_sorted, axis=1)
    return repeats


def first_k(recommended: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` columns of ``recommended``, padded with empty slots when narrower."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rec = np.asarray(recommended, dtype=np.int64)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be 2-D (n_users x k), got shape {rec.shape}")
    if rec.shape[1] >= k:
        return rec[:, :k]
    padding = np.full((rec.shape[0], k - rec.shape[1]), EMPTY, dtype=np.int64)
    return np.hstack([rec, padding])


def _mean(per_user: np.ndarray, n_relevant: np.ndarray) -> float:
    scored = n_relevant > 0
    return float(per_user[scored].mean()) if scored.any() else float("nan")


def _per_user(
    recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every metric per user (first ``k`` slots) and the distinct relevant counts."""
    hits, n_relevant = _hits_and_counts(first_k(recommended, k), relevant)
    n_hits = hits.sum(axis=1)
    capped = np.maximum(np.minimum(n_relevant, k), 1)  # 1 only guards users with none
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[capped - 1]
    scores = {
        "precision": n_hits / k,
        "recall": n_hits / np.maximum(n_relevant, 1),
        "ndcg": hits @ discount / ideal,
        "map": (precision_at_i * hits).sum(axis=1) / capped,
        "hitrate": hits.any(axis=1).astype(np.float64),
    }
    return scores, n_relevant


def _metric(name: str, recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    scores, n_relevant = _per_user(recommended, relevant, k)
    return _mean(scores[name], n_relevant)


def per_user_metrics(
    recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int
) -> dict[str, np.ndarray]:
    """Every metric at ``k`` for every user (NaN for users without a relevant item): the
    values whose means :func:`ranking_metrics` reports, for paired comparisons.

    Examples
    --------
    >>> rec = np.array([[1, 2, 3], [4, 5, -1]])
    >>> per_user_metrics(rec, [np.array([2, 9]), np.array([], int)], 3)["precision@3"]
    array([0.33333333,        nan])
    """
    scores, n_relevant = _per_user(recommended, relevant, k)
    return {
        metric_key(name, k): np.where(n_relevant > 0, values, np.nan)
        for name, values in scores.items()
    }


def hits_matrix(recommended: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """Which recommended slots hold a relevant item.

    Parameters
    ----------
    recommended : numpy.ndarray
        ``n_users x k`` item ids, ``-1`` for an empty slot.
    relevant : sequence of numpy.ndarray
        ``n_users`` arrays of relevant item ids.

    Returns
    -------
    numpy.ndarray
        bool ``n_users x k``; False for empty slots and for repeats of an earlier slot.

    Examples
    --------
    >>> hits_matrix(np.array([[3, 1, 3], [7, -1, 2]]), [np.array([3]), np.array([2, 5])])
    array([[ True, False, False],
           [False, False,  True]])
    """
    return _hits_and_counts(recommended, relevant)[0]


def precision_at_k(recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean of ``hits / k`` over users with at least one relevant item.

    Parameters
    ----------
    recommended : numpy.ndarray
        ``n_users x width`` item ids, ``-1`` for an empty slot.
    relevant : sequence of numpy.ndarray
        Relevant item ids per user.
    k : int
        Cut-off; the denominator is always ``k``, even for empty slots.

    Returns
    -------
    float

    Examples
    --------
    >>> rec = np.array([[1, 2, 3], [4, 5, -1]])
    >>> round(precision_at_k(rec, [np.array([2, 9]), np.array([4, 5])], k=3), 4)
    0.5
    """
    return _metric("precision", recommended, relevant, k)


def recall_at_k(recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean of ``hits / |relevant|`` over users with at least one relevant item.

    Parameters
    ----------
    recommended : numpy.ndarray
        ``n_users x width`` item ids, ``-1`` for an empty slot.
    relevant : sequence of numpy.ndarray
        Relevant item ids per user.
    k : int
        Cut-off.

    Returns
    -------
    float
        Note that a user with more than ``k`` relevant items cannot reach 1.

    Examples
    --------
    >>> rec = np.array([[1, 2, 3], [4, 5, -1]])
    >>> round(recall_at_k(rec, [np.array([2, 9]), np.array([4, 5])], k=3), 4)
    0.75
    """
    return _metric("recall", recommended, relevant, k)


def map_at_k(recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean average precision: ``sum_{i<=k} P@i * rel_i / min(|relevant|, k)``.

    Parameters
    ----------
    recommended : numpy.ndarray
        ``n_users x width`` item ids, ``-1`` for an empty slot.
    relevant : sequence of numpy.ndarray
        Relevant item ids per user.
    k : int
        Cut-off.

    Returns
    -------
    float

    Examples
    --------
    User 1 hits at rank 2 only: ``(1/2) / min(2, 3)`` = 0.25. User 2 hits at ranks 1 and 2:
    ``(1 + 1) / 2`` = 1.

    >>> rec = np.array([[1, 2, 3], [4, 5, -1]])
    >>> round(map_at_k(rec, [np.array([2, 9]), np.array([4, 5])], k=3), 4)
    0.625
    """
    return _metric("map", recommended, relevant, k)


def ndcg_at_k(recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Normalised DCG with binary gains and ``log2(rank + 1)`` discount.

    The ideal DCG puts ``min(|relevant|, k)`` hits in the first slots.

    Parameters
    ----------
    recommended : numpy.ndarray
        ``n_users x width`` item ids, ``-1`` for an empty slot.
    relevant : sequence of numpy.ndarray
        Relevant item ids per user.
    k : int
        Cut-off.

    Returns
    -------
    float

    Examples
    --------
    User 1: ``(1/log2 3) / (1 + 1/log2 3)`` = 0.3869; user 2 is ideal (1.0).

    >>> rec = np.array([[1, 2, 3], [4, 5, -1]])
    >>> round(ndcg_at_k(rec, [np.array([2, 9]), np.array([4, 5])], k=3), 4)
    0.6934
    """
    return _metric("ndcg", recommended, relevant, k)


def hit_rate_at_k(recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Share of users with at least one relevant item among the first ``k``.

    Parameters
    ----------
    recommended : numpy.ndarray
        ``n_users x width`` item ids, ``-1`` for an empty slot.
    relevant : sequence of numpy.ndarray
        Relevant item ids per user.
    k : int
        Cut-off.

    Returns
    -------
    float

    Examples
    --------
    >>> rec = np.array([[1, 2, 3], [4, 5, -1], [6, 7, 8]])
    >>> hit_rate_at_k(rec, [np.array([2]), np.array([9]), np.array([], dtype=int)], k=3)
    0.5
    """
    return _metric("hitrate", recommended, relevant, k)


def coverage(recommended: np.ndarray, n_catalogue: int) -> float:
    """Distinct recommended items (empty slots ignored) divided by the catalogue size.

    Parameters
    ----------
    recommended : numpy.ndarray
        ``n_users x k`` item ids, ``-1`` for an empty slot; every row counts.
    n_catalogue : int
        Number of items that could have been recommended (> 0).

    Returns
    -------
    float

    Examples
    --------
    >>> coverage(np.array([[1, 2], [2, -1]]), n_catalogue=10)
    0.2
    """
    if n_catalogue <= 0:
        raise ValueError(f"n_catalogue must be > 0, got {n_catalogue}")
    rec = np.asarray(recommended, dtype=np.int64)
    return len(sorted_unique(rec[rec != EMPTY])) / n_catalogue


def ranking_metrics(
    recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int, n_catalogue: int
) -> dict[str, float]:
    """All ranking metrics at ``k`` in one pass.

    Parameters
    ----------
    recommended : numpy.ndarray
        ``n_users x width`` item ids, ``-1`` for an empty slot.
    relevant : sequence of numpy.ndarray
        Relevant item ids per user.
    k : int
        Cut-off; the keys carry its value, e.g. ``"precision@5"``.
    n_catalogue : int
        Catalogue size for :func:`coverage` (computed over all rows, first ``k`` columns).

    Returns
    -------
    dict
        ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``hitrate@k``, ``coverage``
        and ``users`` (int: users with at least one relevant item, the denominator).

    Examples
    --------
    >>> rec = np.array([[1, 2, 3], [4, 5, -1]])
    >>> metrics = ranking_metrics(rec, [np.array([2, 9]), np.array([4, 5])], 3, 100)
    >>> {name: round(value, 4) for name, value in metrics.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'precision@3': 0.5, 'recall@3': 0.75, 'ndcg@3': 0.6934, 'map@3': 0.625,
     'hitrate@3': 1.0, 'coverage': 0.05, 'users': 2}
    """
    scores, n_relevant = _per_user(recommended, relevant, k)
    metrics: dict[str, float] = {
        metric_key(name, k): _mean(per_user, n_relevant) for name, per_user in scores.items()
    }
    metrics[COVERAGE] = coverage(first_k(recommended, k), n_catalogue)
    metrics[USERS] = int((n_relevant > 0).sum())
    return metrics
