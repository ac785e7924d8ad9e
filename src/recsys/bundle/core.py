"""The :class:`Bundle`: every array the service needs to rank items, and its file format.

A bundle is a folder holding ``arrays.npz`` (uncompressed ``np.savez``, loaded with
``allow_pickle=False``) and ``metadata.json``. Beside the core arrays it may carry optional
parts (:mod:`recsys.bundle.parts`), each stored as its own named arrays and one metadata entry.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bundle.parts import PARTS, Activity, Covisitation, ObliviousTrees, ServedAnswers
from recsys.exceptions import DataValidationError, ModelNotFoundError

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
    answers, covisit, activity, ranker : optional parts
        Served answers precomputed at export, item co-visitation neighbours, item and
        history counts, a learned ranker (:mod:`recsys.bundle.parts`). Each is stored as its
        own arrays and ``metadata[part.KEY]``; in memory the metadata does not repeat them.
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
    answers: ServedAnswers | None = None
    covisit: Covisitation | None = None
    activity: Activity | None = None
    ranker: ObliviousTrees | None = None

    def __post_init__(self) -> None:
        for name, dtype in _DTYPES.items():
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        """Number of known (warm) users."""
        return len(self.user_ids)

    @functools.cached_property
    def n_category_keys(self) -> int:
        """Bound of the category keys ``item_category + 1`` (unknown, -1, becomes 0), for
        (row, category) keys; computed once: a max over the catalogue costs ~30 us a request."""
        return int(self.item_category.max(initial=0)) + 2

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
        for attr in PARTS:
            part = getattr(self, attr)
            if part is not None:
                problems += part.problems(n_items, n_users, len(self.history_items))
        if problems:
            raise ValueError("invalid bundle: " + "; ".join(problems))

    def save(self, path: Path) -> None:
        """Write the bundle into folder ``path`` (created if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in _DTYPES}
        metadata = dict(self.metadata)
        for attr in PARTS:
            part = getattr(self, attr)
            if part is not None:
                arrays |= {name: getattr(part, a) for name, (a, _) in part.ARRAYS.items()}
                metadata[part.KEY] = part.meta()
        np.savez(path / ARRAYS_FILE, **arrays)
        text = json.dumps(metadata, indent=2, sort_keys=True, default=_json_default)
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
            arrays: dict[str, Any] = {name: npz[name] for name in _DTYPES}
            stored = {
                attr: {a: npz[name] for name, (a, _) in kind.ARRAYS.items() if name in npz.files}
                for attr, kind in PARTS.items()
            }
        try:
            metadata = json.loads(meta_file.read_text())
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"not JSON: {exc}", file=str(meta_file)) from exc
        parts: dict[str, Any] = {}
        for attr, kind in PARTS.items():
            meta = metadata.pop(kind.KEY, None)
            # a part of an older layout (an array missing) or unknown metadata is left out:
            # the policies that need it refuse the bundle
            complete = len(stored[attr]) == len(kind.ARRAYS)
            parts[attr] = kind.restore(stored[attr], meta) if complete else None
        bundle = cls(**arrays, metadata=metadata, **parts)
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
