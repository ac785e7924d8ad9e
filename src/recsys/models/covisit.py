"""Item-to-item co-visitation: "visitors who looked at A then looked at or carted B".

The standard candidate source of session-based e-commerce recommenders: for every pair of
items one visitor interacted with close together in time, the later item gains weight as a
neighbour of the earlier one (and, less, the other way round); carts weigh more than views.
Each visitor counts once per pair, so one visitor refreshing a page cannot dominate. Only the
strongest ``top_n`` neighbours of every item are kept, as a CSR matrix over item positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.arrays import index_of, rank_in_runs
from recsys.columns import ADDTOCART, EVENT, ITEM, TIMESTAMP, VIEW, VISITOR
from recsys.interactions import TrainingData

#: the later item of a pair weighs this much more when it was added to cart
CART_WEIGHT = 3.0
#: a pair seen backwards (B before A) counts this much for A -> B
BACKWARD_WEIGHT = 0.5


@dataclass(frozen=True)
class Covisitation:
    """Strongest neighbours per item: row ``i`` = ``items[indptr[i]:indptr[i + 1]]`` with
    ``weights`` in the same slots, strongest first (positions in the training item ids)."""

    indptr: np.ndarray
    items: np.ndarray
    weights: np.ndarray

    def neighbours(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour positions and weights of item position ``item``."""
        start, end = self.indptr[item], self.indptr[item + 1]
        return self.items[start:end], self.weights[start:end]


def covisitation(
    data: TrainingData, top_n: int = 20, max_lag: int = 5, window_ms: int = 24 * 3_600_000
) -> Covisitation:
    """Co-visitation neighbours of every item of ``data`` (vectorised; seconds at full scale).

    Parameters
    ----------
    data : TrainingData
        Views and add-to-carts before the cutoff (purchases are left out: a bought item is
        not recommended again anyway).
    top_n : int
        Neighbours kept per item.
    max_lag : int
        Pairs are formed between a visitor's event and each of their next ``max_lag`` events
        (distinct consecutive items).
    window_ms : int
        ... when the two events are less than this apart.

    Returns
    -------
    Covisitation

    Examples
    --------
    Two visitors view 10 then 20; one of them then carts 30:

    >>> import pandas as pd
    >>> from scipy import sparse
    >>> events = pd.DataFrame({"timestamp": [0, 1, 0, 1, 2], "visitorid": [1, 1, 2, 2, 2],
    ...     "event": ["view", "view", "view", "view", "addtocart"], "itemid": [10, 20, 10, 20, 30]})
    >>> data = TrainingData(3, np.array([1, 2]), np.array([10, 20, 30]), sparse.csr_matrix((2, 3)),
    ...     sparse.csr_matrix((3, 0)), [], np.zeros(3), np.ones(3, bool), events)
    >>> cv = covisitation(data)
    >>> items, weights = cv.neighbours(0)  # neighbours of item 10: 30 (a cart), then 20
    >>> items.tolist(), weights.tolist()
    ([2, 1], [3.0, 2.0])
    >>> cv.neighbours(2)[1].tolist()  # 30 <- 10 and 20, seen backwards by one visitor
    [0.5, 0.5]
    """
    n_items = len(data.item_ids)
    ev = data.events
    keep = ev[EVENT].isin([VIEW, ADDTOCART]).to_numpy(dtype=bool)
    visitor = ev[VISITOR].to_numpy(dtype=np.int64)[keep]
    item = index_of(data.item_ids, ev[ITEM].to_numpy(dtype=np.int64)[keep])
    ts = ev[TIMESTAMP].to_numpy(dtype=np.int64)[keep]
    weight = np.where(ev[EVENT].to_numpy()[keep] == ADDTOCART, CART_WEIGHT, 1.0)
    order = np.lexsort((ts, visitor))
    visitor, item, ts, weight = visitor[order], item[order], ts[order], weight[order]
    # repeated views of one item in a row say nothing about a second item
    fresh = np.r_[True, (visitor[1:] != visitor[:-1]) | (item[1:] != item[:-1])]
    visitor, item, ts, weight = visitor[fresh], item[fresh], ts[fresh], weight[fresh]

    rows, cols, vals, who = [], [], [], []
    for lag in range(1, max_lag + 1):
        pair = (visitor[lag:] == visitor[:-lag]) & (ts[lag:] - ts[:-lag] < window_ms)
        pair &= item[lag:] != item[:-lag]
        a, b = item[:-lag][pair], item[lag:][pair]
        rows += [a, b]
        cols += [b, a]
        vals += [weight[lag:][pair], BACKWARD_WEIGHT * weight[:-lag][pair]]
        who += [visitor[lag:][pair]] * 2
    row, col = np.concatenate(rows), np.concatenate(cols)
    val, vis = np.concatenate(vals), np.concatenate(who)
    # one visitor counts once per (pair, direction): their strongest occurrence
    key = (row * np.int64(n_items) + col).astype(np.int64)
    order = np.lexsort((-val, vis, key))
    first = np.r_[True, (key[order][1:] != key[order][:-1]) | (vis[order][1:] != vis[order][:-1])]
    key, val = key[order][first], val[order][first]
    pairs, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, weights=val, minlength=len(pairs))
    row, col = pairs // n_items, pairs % n_items
    order = np.lexsort((col, -total, row))  # per row: strongest first, ties by position
    row, col, total = row[order], col[order], total[order]
    top = rank_in_runs(row) < top_n
    row, col, total = row[top], col[top], total[top]
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n_items), out=indptr[1:])
    return Covisitation(indptr, col.astype(np.int32), total.astype(np.float32))
