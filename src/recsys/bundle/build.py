"""Building a :class:`~recsys.bundle.Bundle` from training data and a model's vectors.

The fallback ranking, the per-user history / bought lists and the count statistics are
computed here, once, so that serving only indexes arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from recsys.arrays import index_of, rank_in_runs
from recsys.bundle.core import HISTORY_CAP, Bundle
from recsys.bundle.parts import Activity, Covisitation
from recsys.columns import ADDTOCART, DAY_MS, EVENT, ITEM, PURCHASE, TIMESTAMP, VIEW, VISITOR

if TYPE_CHECKING:  # the builders need pandas; loading and serving a bundle must not
    from recsys.interactions import TrainingData


def _csr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """CSR index pointer for ``rows`` (already sorted ascending)."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """True where a run of equal key tuples starts (keys sorted together)."""
    starts = np.ones(len(keys[0]), dtype=bool)
    same = np.ones(max(len(keys[0]) - 1, 0), dtype=bool)
    for key in keys:
        same &= key[1:] == key[:-1]
    starts[1:] = ~same
    return starts


def popularity_ranking(data: TrainingData, window_days: int = 14) -> np.ndarray:
    """Item positions ranked by event-weighted popularity over the last ``window_days``.

    Events weigh as in the interactions (``data.event_weights``). Ties (and items without
    events in the window) are ordered by the all-time number of events, then by position, so
    every item appears exactly once.

    Parameters
    ----------
    data : TrainingData
        Training data; its ``events`` are before ``cutoff_ms``.
    window_days : int
        Length of the window ending at ``cutoff_ms``.

    Returns
    -------
    numpy.ndarray
        int32 permutation of ``0..n_items-1``, most popular first.
    """
    from recsys.interactions import event_weight_array

    n_items = len(data.item_ids)
    events = data.events
    items = index_of(data.item_ids, events[ITEM].to_numpy(dtype=np.int64))
    ts = events[TIMESTAMP].to_numpy(dtype=np.int64)
    weights = event_weight_array(events, data.event_weights)
    known = items >= 0
    recent = known & (ts >= data.cutoff_ms - window_days * DAY_MS)
    recent_weight = np.bincount(items[recent], weights=weights[recent], minlength=n_items)
    total_count = np.bincount(items[known], minlength=n_items)
    # lexsort: the last key is the primary one
    order = np.lexsort((np.arange(n_items), -total_count, -recent_weight))
    return order.astype(np.int32)


class UserItemLists(NamedTuple):
    """Per-user history and purchases as CSR arrays over item positions."""

    #: viewed or carted items, most recent first, distinct, capped
    history_indptr: np.ndarray
    history_items: np.ndarray
    #: when each history item was last viewed or carted (epoch ms)
    history_ts: np.ndarray
    #: how often the visitor viewed / carted each history item
    history_views: np.ndarray
    history_carts: np.ndarray
    #: purchased items (ascending positions)
    bought_indptr: np.ndarray
    bought_items: np.ndarray


def user_item_lists(data: TrainingData, history_cap: int = HISTORY_CAP) -> UserItemLists:
    """Per-user history (viewed / carted, most recent first, with counts) and bought lists.

    Vectorised: one sort of the events, a duplicate drop and a rank within each user.
    """
    n_users, n_items = len(data.user_ids), len(data.item_ids)
    events = data.events
    visitors = events[VISITOR].to_numpy(dtype=np.int64)
    item_ids = events[ITEM].to_numpy(dtype=np.int64)
    ts = events[TIMESTAMP].to_numpy(dtype=np.int64)
    event = events[EVENT]

    seen = event.isin([VIEW, ADDTOCART]).to_numpy(dtype=bool)
    v, raw, t = visitors[seen], item_ids[seen], ts[seen]
    cart = (event == ADDTOCART).to_numpy(dtype=bool)[seen]
    order = np.lexsort((raw, -t, v))  # by visitor, newest first; item breaks timestamp ties
    v, raw, t, cart = v[order], raw[order], t[order], cart[order]
    # looking up visitors in sorted order reads the (large) id array sequentially
    u, i = index_of(data.user_ids, v), index_of(data.item_ids, raw)
    known = (u >= 0) & (i >= 0)
    u, i, t, cart = u[known], i[known], t[known], cart[known]
    key = u * np.int64(n_items) + i
    # first occurrence of each (user, item) in this order is its most recent one
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    carts = np.bincount(inverse, weights=cart, minlength=len(first)).astype(np.int32)
    views = np.bincount(inverse, minlength=len(first)).astype(np.int32) - carts
    by_time = np.argsort(first)
    first = first[by_time]
    u, i, t = u[first], i[first], t[first]
    views, carts = views[by_time], carts[by_time]
    keep = rank_in_runs(u) < history_cap  # u ascends: rank within each user
    u, i, t, views, carts = u[keep], i[keep], t[keep], views[keep], carts[keep]
    history_indptr = _csr(u, n_users)

    bought = (event == PURCHASE).to_numpy(dtype=bool)
    users = index_of(data.user_ids, visitors[bought])
    items = index_of(data.item_ids, item_ids[bought])
    known = (users >= 0) & (items >= 0)
    pairs = np.unique(users[known] * np.int64(n_items) + items[known])
    bought_users, bought_items = pairs // n_items, pairs % n_items
    return UserItemLists(
        history_indptr,
        i.astype(np.int32),
        t,
        views,
        carts,
        _csr(bought_users, n_users),
        bought_items.astype(np.int32),
    )


#: windows of the item counts, in days (None: all time)
COUNT_WINDOWS: tuple[tuple[str, int | None], ...] = (
    ("1d", 1),
    ("7d", 7),
    ("28d", 28),
    ("all", None),
)
COUNT_EVENTS = ((VIEW, "views"), (ADDTOCART, "carts"), (PURCHASE, "buys"))


def item_counts(data: TrainingData) -> tuple[np.ndarray, tuple[str, ...]]:
    """Views, add-to-carts and purchases of every item over windows ending at the cutoff.

    Returns
    -------
    tuple
        float32 (n_items, 12) counts and their names (``views_1d`` ... ``buys_all``).
    """
    events = data.events
    items = index_of(data.item_ids, events[ITEM].to_numpy(dtype=np.int64))
    age = data.cutoff_ms - events[TIMESTAMP].to_numpy(dtype=np.int64)
    event = events[EVENT].to_numpy()
    n_items = len(data.item_ids)
    columns, names = [], []
    for label, days in COUNT_WINDOWS:
        recent = items >= 0 if days is None else (items >= 0) & (age <= days * DAY_MS)
        for kind, noun in COUNT_EVENTS:
            mask = recent & (event == kind)
            columns.append(np.bincount(items[mask], minlength=n_items))
            names.append(f"{noun}_{label}")
    return np.stack(columns, axis=1).astype(np.float32), tuple(names)


#: a co-visitation pair's later item weighs this much more when it was added to cart
CART_WEIGHT = 3.0
#: a pair seen backwards (B before A) counts this much for A -> B
BACKWARD_WEIGHT = 0.5


def covisitation(
    data: TrainingData, top_n: int = 20, max_lag: int = 5, window_ms: int = DAY_MS
) -> Covisitation:
    """Item-to-item co-visitation: "visitors who looked at A then looked at or carted B".

    The standard candidate source of session-based e-commerce recommenders: for every pair of
    items one visitor interacted with close together in time, the later item gains weight as
    a neighbour of the earlier one (and, less, the other way round); carts weigh more than
    views. Each visitor counts once per pair, so one visitor refreshing a page cannot
    dominate. Vectorised (seconds at full scale).

    Parameters
    ----------
    data : TrainingData
        Views and add-to-carts before the cutoff (a bought item is not recommended again).
    top_n : int
        Strongest neighbours kept per item.
    max_lag : int
        Pairs are formed between a visitor's event and each of their next ``max_lag`` events
        (distinct consecutive items) ...
    window_ms : int
        ... when the two are less than this apart.

    Examples
    --------
    Two visitors view 10 then 20; one of them then carts 30:

    >>> import pandas as pd
    >>> from scipy import sparse
    >>> from recsys.interactions import TrainingData
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
    # a run of events on one item (views, then a cart) is one step: it weighs as its
    # strongest event and is as old as its first
    fresh = _run_starts(visitor, item)
    starts = np.flatnonzero(fresh)
    weight = np.maximum.reduceat(weight, starts) if len(starts) else weight
    visitor, item, ts = visitor[fresh], item[fresh], ts[fresh]

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
    key = row * np.int64(n_items) + col
    order = np.lexsort((-val, vis, key))
    key, val, vis = key[order], val[order], vis[order]
    first = _run_starts(key, vis)
    pairs, inverse = np.unique(key[first], return_inverse=True)
    total = np.bincount(inverse, weights=val[first], minlength=len(pairs))
    row, col = pairs // n_items, pairs % n_items
    order = np.lexsort((col, -total, row))  # per row: strongest first, ties by position
    row, col, total = row[order], col[order], total[order]
    top = rank_in_runs(row) < top_n
    row, col, total = row[top], col[top], total[top]
    return Covisitation(_csr(row, n_items), col.astype(np.int32), total.astype(np.float32))


@dataclass(frozen=True)
class ServingLists:
    """The bundle arrays that depend on the training data but not on the model.

    Built once per training data by :func:`serving_lists` and shared (read-only) by every
    bundle made from that data: a learning curve exports a bundle after every epoch, and the
    baselines and LightFM of one run share them.

    Attributes
    ----------
    lists : UserItemLists
        Histories and purchases (see :func:`user_item_lists`).
    popular : numpy.ndarray
        See :func:`popularity_ranking`.
    covisit : Covisitation
        See :func:`covisitation`.
    activity : Activity
        Item counts (:func:`item_counts`) and the history's view / cart counts.
    popularity_window_days, history_cap : int
        What they were built with (recorded in the bundle's metadata).
    """

    lists: UserItemLists
    popular: np.ndarray
    covisit: Covisitation
    activity: Activity
    popularity_window_days: int
    history_cap: int


def serving_lists(
    data: TrainingData, popularity_window_days: int = 14, history_cap: int = HISTORY_CAP
) -> ServingLists:
    """Histories, purchases, popularity, co-visitation and counts of ``data`` (read-only).

    Parameters
    ----------
    data : TrainingData
        Training data (its ``event_weights`` weigh the popularity).
    popularity_window_days : int
        Window of the fallback popularity ranking (see :func:`popularity_ranking`).
    history_cap : int
        Most recent distinct items kept per user.
    """
    lists = user_item_lists(data, history_cap)
    counts, names = item_counts(data)
    activity = Activity(counts, names, lists.history_views, lists.history_carts)
    covisit = covisitation(data)
    popular = popularity_ranking(data, popularity_window_days)
    for array in (*lists, popular, counts, covisit.indptr, covisit.items, covisit.weights):
        array.flags.writeable = False
    return ServingLists(lists, popular, covisit, activity, popularity_window_days, history_cap)


def make_bundle(
    data: TrainingData,
    item_vectors: np.ndarray,
    user_vectors: np.ndarray,
    lists: ServingLists | None = None,
    metadata: dict[str, Any] | None = None,
) -> Bundle:
    """Assemble a :class:`Bundle` from training data and a model's exported vectors.

    Parameters
    ----------
    data : TrainingData
        The data the model was trained on (defines ids, categories, availability, histories).
    item_vectors : numpy.ndarray
        (n_items, d + 1) with the item bias as the last column.
    user_vectors : numpy.ndarray
        (n_users, d + 1) with 1.0 as the last column.
    lists : ServingLists, optional
        :func:`serving_lists` of ``data``; computed with the defaults when omitted.
    metadata : dict, optional
        Merged over the defaults (trained_at, cutoff_ms, popularity_window_days, history_cap,
        sizes, data window).

    Returns
    -------
    Bundle
        Validated.
    """
    lists = serving_lists(data) if lists is None else lists
    meta: dict[str, Any] = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cutoff_ms": int(data.cutoff_ms),
        "popularity_window_days": lists.popularity_window_days,
        "history_cap": lists.history_cap,
        "n_items": len(data.item_ids),
        "n_users": len(data.user_ids),
    }
    if len(data.events):
        meta["data_start_ms"] = int(data.events[TIMESTAMP].min())
        meta["data_end_ms"] = int(data.events[TIMESTAMP].max()) + 1
    meta.update(metadata or {})
    bundle = Bundle(
        item_ids=data.item_ids,
        item_vectors=item_vectors,
        user_ids=data.user_ids,
        user_vectors=user_vectors,
        popular=lists.popular,
        item_category=data.item_category,
        item_available=data.item_available,
        history_indptr=lists.lists.history_indptr,
        history_items=lists.lists.history_items,
        history_ts=lists.lists.history_ts,
        bought_indptr=lists.lists.bought_indptr,
        bought_items=lists.lists.bought_items,
        metadata=meta,
        covisit=lists.covisit,
        activity=lists.activity,
    )
    bundle.validate()
    return bundle
