"""The bundle: every array the service needs to rank items, as plain numpy (never a pickle).

A bundle is a folder holding ``arrays.npz`` (uncompressed ``np.savez``, loaded with
``allow_pickle=False``) and ``metadata.json``. :func:`make_bundle` builds one from the training
data and a model's exported vectors; the fallback ranking and the per-user history / bought
lists are computed here, once, so serving only indexes arrays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.arrays import index_of, rank_in_runs
from recsys.columns import ADDTOCART, DAY_MS, EVENT, ITEM, PURCHASE, TIMESTAMP, VIEW, VISITOR
from recsys.exceptions import DataValidationError, ModelNotFoundError

if TYPE_CHECKING:  # the builders need pandas; loading and serving a bundle must not
    from recsys.interactions import TrainingData

ARRAYS_FILE = "arrays.npz"
METADATA_FILE = "metadata.json"
#: most recent distinct items kept per visitor (bundle history and the service's online one)
HISTORY_CAP = 50

#: array fields and the dtype each is stored with
_DTYPES: dict[str, type] = {
    "item_ids": np.int64,
    "item_vectors": np.float32,
    "user_ids": np.int64,
    "user_vectors": np.float32,
    "popular": np.int32,
    "item_category": np.int64,
    "item_available": np.bool_,
    "history_indptr": np.int64,
    "history_items": np.int32,
    "history_ts": np.int64,
    "bought_indptr": np.int64,
    "bought_items": np.int32,
}

#: arrays a bundle may carry (precomputed served answers)
_OPTIONAL_DTYPES = {"top_items": np.int32, "top_head": np.int8, "top_scores": np.float64}


@dataclass
class Bundle:
    """A trained model as the service sees it: vectors, id maps, fallback ranking, histories.

    ``score(user, item) = user_vectors[u] @ item_vectors[i]``; the item bias is the last column of
    ``item_vectors`` and the last column of ``user_vectors`` is 1.0. Item arguments of the
    history / bought / popular arrays are *positions* in ``item_ids``.

    Attributes
    ----------
    item_ids : numpy.ndarray
        int64 (n_items,), ascending.
    item_vectors : numpy.ndarray
        float32 (n_items, d + 1): embedding with the bias as the last column.
    user_ids : numpy.ndarray
        int64 (n_users,), ascending.
    user_vectors : numpy.ndarray
        float32 (n_users, d + 1), last column 1.0.
    popular : numpy.ndarray
        int32 item positions, most popular first (every item exactly once).
    item_category : numpy.ndarray
        int64 (n_items,), -1 when unknown.
    item_available : numpy.ndarray
        bool (n_items,).
    history_indptr, history_items, history_ts : numpy.ndarray
        CSR rows per user: viewed or carted items, most recent first, deduplicated, capped.
    bought_indptr, bought_items : numpy.ndarray
        CSR rows per user: purchased items (ascending positions).
    metadata : dict
        JSON-serialisable: model_version, trained_at, cutoff_ms, params, metrics, policy, ...
    top_items, top_head, top_scores : numpy.ndarray, optional
        Served answers precomputed at export (see ``Recommender.precompute``): int32
        (n_users, K) item positions, row -1 where not precomputed, int8 (n_users,) how many
        of them lead from the visitor's history, and float64 (n_users, K) their scores.
        ``metadata["precomputed"]`` says for which policy.
    """

    item_ids: np.ndarray
    item_vectors: np.ndarray
    user_ids: np.ndarray
    user_vectors: np.ndarray
    popular: np.ndarray
    item_category: np.ndarray
    item_available: np.ndarray
    history_indptr: np.ndarray
    history_items: np.ndarray
    history_ts: np.ndarray
    bought_indptr: np.ndarray
    bought_items: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    top_items: np.ndarray | None = None
    top_head: np.ndarray | None = None
    top_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name, dtype in _DTYPES.items():
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        for name, dtype in _OPTIONAL_DTYPES.items():
            if getattr(self, name) is not None:
                setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        """Number of known (warm) users."""
        return len(self.user_ids)

    def history(self, user: int) -> np.ndarray:
        """Item positions user position ``user`` viewed or carted, most recent first."""
        return self.history_items[self.history_indptr[user] : self.history_indptr[user + 1]]

    def bought(self, user: int) -> np.ndarray:
        """Item positions user position ``user`` purchased."""
        return self.bought_items[self.bought_indptr[user] : self.bought_indptr[user + 1]]

    def validate(self) -> None:
        """Check shapes, orders and index ranges.

        Raises
        ------
        ValueError
            Naming the first inconsistent array.
        """
        n_items, n_users = self.n_items, self.n_users
        items_v, users_v = self.item_vectors, self.user_vectors
        problems = []
        if items_v.ndim != 2 or items_v.shape[0] != n_items:
            problems.append(f"item_vectors has shape {items_v.shape}, want ({n_items}, d)")
        if users_v.ndim != 2 or users_v.shape[0] != n_users:
            problems.append(f"user_vectors has shape {users_v.shape}, want ({n_users}, d)")
        elif items_v.ndim == 2 and users_v.shape[1] != items_v.shape[1]:
            problems.append(
                f"user_vectors has {users_v.shape[1]} columns, item_vectors {items_v.shape[1]}"
            )
        for name, ids in (("item_ids", self.item_ids), ("user_ids", self.user_ids)):
            if ids.ndim != 1 or np.any(np.diff(ids) <= 0):
                problems.append(f"{name} must be 1-d, ascending and unique")
        for name in ("item_category", "item_available"):
            if getattr(self, name).shape != (n_items,):
                problems.append(f"{name} has shape {getattr(self, name).shape}, want ({n_items},)")
        if self.popular.shape != (n_items,) or not np.array_equal(
            np.sort(self.popular), np.arange(n_items)
        ):
            problems.append("popular must be a permutation of the item positions")
        for prefix in ("history", "bought"):
            indptr, items = getattr(self, f"{prefix}_indptr"), getattr(self, f"{prefix}_items")
            if (
                indptr.shape != (n_users + 1,)
                or indptr[0] != 0
                or indptr[-1] != len(items)
                or np.any(np.diff(indptr) < 0)
            ):
                problems.append(
                    f"{prefix}_indptr is not a CSR index of {n_users} rows over {len(items)} items"
                )
            if len(items) and (items.min() < 0 or items.max() >= n_items):
                problems.append(f"{prefix}_items holds positions outside 0..{n_items - 1}")
        if self.history_ts.shape != self.history_items.shape:
            problems.append(
                f"history_ts has shape {self.history_ts.shape}, want {self.history_items.shape}"
            )
        if self.top_items is not None and (
            self.top_items.ndim != 2
            or self.top_items.shape[0] != n_users
            or self.top_head is None
            or self.top_head.shape != (n_users,)
            or self.top_items.max(initial=-1) >= n_items
        ):
            problems.append(f"top_items / top_head are not ({n_users}, K) / ({n_users},) positions")
        if self.top_scores is not None and (
            self.top_items is None or self.top_scores.shape != self.top_items.shape
        ):
            problems.append("top_scores must have the shape of top_items")
        if problems:
            raise ValueError("invalid bundle: " + "; ".join(problems))

    def save(self, path: Path) -> None:
        """Write the bundle into folder ``path`` (created if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        names = [*_DTYPES, *(n for n in _OPTIONAL_DTYPES if getattr(self, n) is not None)]
        np.savez(path / ARRAYS_FILE, **{name: getattr(self, name) for name in names})
        text = json.dumps(self.metadata, indent=2, sort_keys=True, default=_json_default)
        (path / METADATA_FILE).write_text(text + "\n")

    @classmethod
    def load(cls, path: Path) -> Bundle:
        """Read a bundle folder written by :meth:`save` and validate it.

        Raises
        ------
        ModelNotFoundError
            If the folder or one of its two files is missing.
        DataValidationError
            If an array is missing or the arrays are inconsistent.
        """
        path = Path(path)
        arrays_file, meta_file = path / ARRAYS_FILE, path / METADATA_FILE
        for file in (arrays_file, meta_file):
            if not file.is_file():
                raise ModelNotFoundError(f"no bundle at {path}: {file.name} is missing")
        with np.load(arrays_file, allow_pickle=False) as npz:
            missing = sorted(set(_DTYPES) - set(npz.files))
            if missing:
                raise DataValidationError(
                    f"bundle arrays missing: {missing}", file=str(arrays_file)
                )
            arrays = {
                name: npz[name] for name in (*_DTYPES, *_OPTIONAL_DTYPES) if name in npz.files
            }
        try:
            metadata = json.loads(meta_file.read_text())
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"not JSON: {exc}", file=str(meta_file)) from exc
        bundle = cls(**arrays, metadata=metadata)
        try:
            bundle.validate()
        except ValueError as exc:
            raise DataValidationError(str(exc), file=str(arrays_file)) from exc
        return bundle


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")


def _csr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """CSR index pointer for ``rows`` (already sorted ascending)."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


def popularity_ranking(
    data: TrainingData, window_days: int = 14, weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """Item positions ranked by event-weighted popularity over the last ``window_days``.

    Events weigh as in the interactions (``data.event_weights``) unless ``weights`` says
    otherwise. Ties (and items without events in the window) are ordered by the all-time
    number of events, then by position, so every item appears exactly once.

    Parameters
    ----------
    data : TrainingData
        Training data; its ``events`` are before ``cutoff_ms``.
    window_days : int
        Length of the window ending at ``cutoff_ms``.
    weights : mapping of str to float, optional
        Weight per event type, e.g. ``{"addtocart": 1.0}`` counts add-to-carts only.

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
    per_event = event_weight_array(events, data.event_weights if weights is None else weights)
    known = items >= 0
    recent = known & (ts >= data.cutoff_ms - window_days * DAY_MS)
    recent_weight = np.bincount(items[recent], weights=per_event[recent], minlength=n_items)
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


__all__ = [
    "HISTORY_CAP",
    "Bundle",
    "ServingLists",
    "make_bundle",
    "popularity_ranking",
    "serving_lists",
    "user_item_lists",
]
