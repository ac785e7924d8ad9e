"""Building a :class:`~recsys.bundle.Bundle` from training data and a model's vectors.

The fallback ranking, the per-user history / bought lists and the count statistics are
computed here, once, so that serving only indexes arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.arrays import index_of, rank_in_runs
from recsys.bundle.core import HISTORY_CAP, Bundle
from recsys.columns import ADDTOCART, DAY_MS, EVENT, ITEM, PURCHASE, TIMESTAMP, VIEW, VISITOR

if TYPE_CHECKING:  # the builders need pandas; loading and serving a bundle must not
    from recsys.interactions import TrainingData


def _csr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """CSR index pointer for ``rows`` (already sorted ascending)."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


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


def user_item_lists(
    data: TrainingData, history_cap: int = HISTORY_CAP
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-user history (viewed / carted, most recent first) and bought lists as CSR arrays.

    Vectorised: one sort of the events, a duplicate drop and a rank within each user.

    Returns
    -------
    tuple
        ``(history_indptr, history_items, history_ts, bought_indptr, bought_items)``.
    """
    n_users, n_items = len(data.user_ids), len(data.item_ids)
    events = data.events
    visitors = events[VISITOR].to_numpy(dtype=np.int64)
    item_ids = events[ITEM].to_numpy(dtype=np.int64)
    ts = events[TIMESTAMP].to_numpy(dtype=np.int64)
    event = events[EVENT]

    seen = event.isin([VIEW, ADDTOCART]).to_numpy(dtype=bool)
    v, raw, t = visitors[seen], item_ids[seen], ts[seen]
    order = np.lexsort((raw, -t, v))  # by visitor, newest first; item breaks timestamp ties
    v, raw, t = v[order], raw[order], t[order]
    # looking up visitors in sorted order reads the (large) id array sequentially
    u, i = index_of(data.user_ids, v), index_of(data.item_ids, raw)
    known = (u >= 0) & (i >= 0)
    u, i, t = u[known], i[known], t[known]
    key = u * np.int64(n_items) + i
    # first occurrence of each (user, item) in this order is its most recent one
    _, first = np.unique(key, return_index=True)
    first.sort()
    u, i, t = u[first], i[first], t[first]
    keep = rank_in_runs(u) < history_cap  # u ascends: rank within each user
    u, i, t = u[keep], i[keep], t[keep]
    history_indptr = _csr(u, n_users)

    bought = (event == PURCHASE).to_numpy(dtype=bool)
    users = index_of(data.user_ids, visitors[bought])
    items = index_of(data.item_ids, item_ids[bought])
    known = (users >= 0) & (items >= 0)
    pairs = np.unique(users[known] * np.int64(n_items) + items[known])
    bought_users, bought_items = pairs // n_items, pairs % n_items
    return (
        history_indptr,
        i.astype(np.int32),
        t,
        _csr(bought_users, n_users),
        bought_items.astype(np.int32),
    )


@dataclass(frozen=True)
class ServingLists:
    """The bundle arrays that depend on the training data but not on the model.

    Built once per training data by :func:`serving_lists` and shared (read-only) by every
    bundle made from that data: a learning curve exports a bundle after every epoch, and the
    baselines and LightFM of one run share them.

    Attributes
    ----------
    history_indptr, history_items, history_ts, bought_indptr, bought_items : numpy.ndarray
        See :func:`user_item_lists`.
    popular : numpy.ndarray
        See :func:`popularity_ranking`.
    popularity_window_days, history_cap : int
        What they were built with (recorded in the bundle's metadata).
    """

    history_indptr: np.ndarray
    history_items: np.ndarray
    history_ts: np.ndarray
    bought_indptr: np.ndarray
    bought_items: np.ndarray
    popular: np.ndarray
    popularity_window_days: int
    history_cap: int


def serving_lists(
    data: TrainingData, popularity_window_days: int = 14, history_cap: int = HISTORY_CAP
) -> ServingLists:
    """Histories, purchases and the popularity fallback of ``data`` (read-only arrays).

    Parameters
    ----------
    data : TrainingData
        Training data (its ``event_weights`` weigh the popularity).
    popularity_window_days : int
        Window of the fallback popularity ranking (see :func:`popularity_ranking`).
    history_cap : int
        Most recent distinct items kept per user.
    """
    arrays = (
        *user_item_lists(data, history_cap),
        popularity_ranking(data, popularity_window_days),
    )
    for array in arrays:
        array.flags.writeable = False
    return ServingLists(*arrays, popularity_window_days, history_cap)


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
        history_indptr=lists.history_indptr,
        history_items=lists.history_items,
        history_ts=lists.history_ts,
        bought_indptr=lists.bought_indptr,
        bought_items=lists.bought_items,
        metadata=meta,
    )
    bundle.validate()
    return bundle
