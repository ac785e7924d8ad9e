"""Optional parts of a bundle: groups of arrays some policies need, stored beside the core.

Each part is a frozen dataclass that knows its on-disk array names (``ARRAYS``: file name ->
(attribute, dtype)), the metadata entry that describes it (``KEY``), and what makes it
consistent with the bundle (:meth:`problems`). A bundle without a part still serves every
policy that does not need it; a part whose arrays or metadata are incomplete is dropped on
load (the policies that need it then refuse the bundle with a clear error).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

#: dtypes of array attributes, by part: applied on construction
_ArraySpec = Mapping[str, tuple[str, type]]


def _coerce(part: Any) -> None:
    for attr, dtype in type(part).ARRAYS.values():
        object.__setattr__(part, attr, np.ascontiguousarray(getattr(part, attr), dtype=dtype))


def _csr_problems(name: str, indptr: np.ndarray, values: np.ndarray, rows: int) -> list[str]:
    ok = (
        indptr.shape == (rows + 1,)
        and int(indptr[0]) == 0
        and int(indptr[-1]) == len(values)
        and not np.any(np.diff(indptr) < 0)
    )
    return [] if ok else [f"{name} is not a CSR index of {rows} rows over {len(values)} values"]


@dataclass(frozen=True)
class ServedAnswers:
    """The served answer of every known visitor without session, precomputed at export
    (by ``recsys.serving.precompute_answers``), and the ranking it was made for.

    Any ``k' <= K`` answer is a prefix of a row, so one table serves every request size up
    to ``K``; a serving ranking uses it only if ``policy`` and ``recent_slots`` are its own.

    Attributes
    ----------
    items : numpy.ndarray
        int32 (n_users, K) item positions, -1 where fewer are allowed.
    reasons : numpy.ndarray
        int8 (n_users, K) why each item is shown (codes of ``recsys.serving.REASONS``).
    scores : numpy.ndarray
        float64 (n_users, K) their scores (the bits live ranking computes).
    policy : str
        Policy the answers were ranked with.
    recent_slots : int
        Its recent slots.
    """

    KEY: ClassVar[str] = "precomputed"
    ARRAYS: ClassVar[_ArraySpec] = {
        "top_items": ("items", np.int32),
        "top_reasons": ("reasons", np.int8),
        "top_scores": ("scores", np.float64),
    }

    items: np.ndarray
    reasons: np.ndarray
    scores: np.ndarray
    policy: str
    recent_slots: int

    def __post_init__(self) -> None:
        _coerce(self)

    def meta(self) -> dict[str, Any]:
        """The metadata entry: what the answers were made for."""
        return {"policy": str(self.policy), "recent_slots": int(self.recent_slots)}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], meta: Any) -> ServedAnswers | None:
        """The part from stored arrays and metadata, None when the metadata is not its own."""
        if not isinstance(meta, dict) or set(meta) != {"policy", "recent_slots"}:
            return None
        return cls(**arrays, policy=meta["policy"], recent_slots=meta["recent_slots"])

    def problems(self, n_items: int, n_users: int, history_len: int) -> list[str]:
        """What is inconsistent with a bundle of these sizes."""
        if (
            self.items.ndim != 2
            or self.items.shape[0] != n_users
            or self.items.max(initial=-1) >= n_items
        ):
            return [f"top_items are not ({n_users}, K) item positions"]
        if self.reasons.shape != self.items.shape or self.scores.shape != self.items.shape:
            return ["top_reasons and top_scores must have the shape of top_items"]
        return []


@dataclass(frozen=True)
class Covisitation:
    """Strongest co-visitation neighbours per item (``recsys.models.covisit``): row ``i`` is
    ``items[indptr[i]:indptr[i + 1]]`` (item positions, strongest first) with ``weights``."""

    KEY: ClassVar[str] = "covisitation"
    ARRAYS: ClassVar[_ArraySpec] = {
        "covisit_indptr": ("indptr", np.int64),
        "covisit_items": ("items", np.int32),
        "covisit_weights": ("weights", np.float32),
    }

    indptr: np.ndarray
    items: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        _coerce(self)

    def neighbours(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour positions and weights of item position ``item``."""
        start, end = self.indptr[item], self.indptr[item + 1]
        return self.items[start:end], self.weights[start:end]

    def meta(self) -> dict[str, Any]:
        """The metadata entry (nothing beyond the arrays)."""
        return {}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], meta: Any) -> Covisitation | None:
        """The part from stored arrays."""
        return cls(**arrays)

    def problems(self, n_items: int, n_users: int, history_len: int) -> list[str]:
        """What is inconsistent with a bundle of these sizes."""
        found = _csr_problems("covisit_indptr", self.indptr, self.items, n_items)
        if len(self.items) and (self.items.min() < 0 or self.items.max() >= n_items):
            found.append(f"covisit_items holds positions outside 0..{n_items - 1}")
        if self.weights.shape != self.items.shape:
            found.append("covisit_weights must have the shape of covisit_items")
        return found


@dataclass(frozen=True)
class Activity:
    """Counts as of the cutoff: per item (recent and all-time views, carts, purchases) and per
    stored history slot (how often the visitor viewed / carted that item).

    Attributes
    ----------
    item_counts : numpy.ndarray
        float32 (n_items, len(names)).
    names : tuple of str
        Column names of ``item_counts``, e.g. ``carts_7d``.
    history_views, history_carts : numpy.ndarray
        int32, parallel to the bundle's ``history_items``.
    """

    KEY: ClassVar[str] = "activity"
    ARRAYS: ClassVar[_ArraySpec] = {
        "item_counts": ("item_counts", np.float32),
        "history_views": ("history_views", np.int32),
        "history_carts": ("history_carts", np.int32),
    }

    item_counts: np.ndarray
    names: tuple[str, ...]
    history_views: np.ndarray
    history_carts: np.ndarray

    def __post_init__(self) -> None:
        _coerce(self)
        object.__setattr__(self, "names", tuple(self.names))

    def column(self, name: str) -> np.ndarray:
        """One column of ``item_counts`` by name."""
        return self.item_counts[:, self.names.index(name)]

    def meta(self) -> dict[str, Any]:
        """The metadata entry: the column names."""
        return {"names": list(self.names)}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], meta: Any) -> Activity | None:
        """The part from stored arrays and metadata, None without column names."""
        if not isinstance(meta, dict) or not isinstance(meta.get("names"), list):
            return None
        return cls(**arrays, names=tuple(meta["names"]))

    def problems(self, n_items: int, n_users: int, history_len: int) -> list[str]:
        """What is inconsistent with a bundle of these sizes."""
        found = []
        if self.item_counts.shape != (n_items, len(self.names)):
            found.append(f"item_counts is not ({n_items}, {len(self.names)})")
        for name in ("history_views", "history_carts"):
            if getattr(self, name).shape != (history_len,):
                found.append(f"{name} is not parallel to history_items")
        return found


@dataclass(frozen=True)
class ObliviousTrees:
    """A learned ranker as plain arrays: an ensemble of oblivious (symmetric) trees.

    CatBoost grows *oblivious* trees: every node of one level splits on the same feature and
    border, so a tree is ``depth`` (feature, border) pairs and ``2**depth`` leaf values, and
    the leaf of a row is the binary number of its comparisons. The whole ensemble is then one
    vectorised expression over (rows x trees x levels): a few hundred candidates score in tens
    of microseconds, and serving needs neither CatBoost nor a pickle.

    Attributes
    ----------
    features : numpy.ndarray
        int32 (n_trees, depth): the feature index each level splits on.
    borders : numpy.ndarray
        float32 (n_trees, depth): a row goes right (bit 1) where ``feature > border``; padding
        levels of shallower trees have border ``+inf`` (always bit 0).
    leaves : numpy.ndarray
        float64 (n_trees, 2**depth): leaf values, indexed by ``sum(bit_level << level)``.
    feature_names : tuple of str
        What the columns of the input are (checked against the serving features).
    scale, bias : float
        ``score = scale * sum(leaf values) + bias``.

    Examples
    --------
    One tree of depth 1 (feature 0 > 0.5 adds 1) and one of depth 2 padded:

    >>> trees = ObliviousTrees(
    ...     features=np.array([[0, 0], [1, 0]]), borders=np.array([[0.5, np.inf], [2.0, np.inf]]),
    ...     leaves=np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]]),
    ...     feature_names=("a", "b"))
    >>> trees.predict(np.array([[1.0, 3.0], [0.0, 3.0], [0.0, 0.0]])).tolist()
    [11.0, 10.0, 0.0]
    """

    KEY: ClassVar[str] = "ranker"
    ARRAYS: ClassVar[_ArraySpec] = {
        "ranker_features": ("features", np.int32),
        "ranker_borders": ("borders", np.float32),
        "ranker_leaves": ("leaves", np.float64),
    }

    features: NDArray[np.int32]
    borders: NDArray[np.float32]
    leaves: NDArray[np.float64]
    feature_names: tuple[str, ...]
    scale: float = 1.0
    bias: float = 0.0

    def __post_init__(self) -> None:
        _coerce(self)
        object.__setattr__(self, "feature_names", tuple(self.feature_names))

    def predict(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """Scores of the rows of ``x`` (n_rows x n_features), float64.

        Features are compared in float32, as CatBoost quantizes them, and leaf values are
        summed in tree order, so the scores equal CatBoost's to the last bit. Each distinct
        (feature, border) split is compared once per row, and a tree's leaf index is built
        from those bits level by level (a few vector operations per level, not per tree).
        """
        features, borders, splits, offsets = self._splits
        n_trees, depth = self.features.shape
        if n_trees == 0:
            return np.full(len(x), self.bias, dtype=np.float64)
        xt = np.asarray(x, dtype=np.float32).T
        bits = (xt[features] > borders).view(np.uint8)  # (distinct splits, rows)
        index = np.zeros((n_trees, bits.shape[1]), np.min_scalar_type(2**depth - 1))
        for level in range(depth):
            index |= bits[splits[level]] << level
        values = self.leaves.ravel().take(index + offsets)  # (trees, rows)
        # summed in tree order (a reduction may sum pairwise)
        return np.cumsum(values, axis=0)[-1] * self.scale + self.bias

    @functools.cached_property
    def _splits(self) -> tuple[NDArray[np.intp], NDArray[np.float32], list[Any], Any]:
        """The distinct (feature, border) splits (features, borders as a column), each
        level's split numbers per tree, and each tree's offset into the flat leaves."""
        pairs = np.stack([self.features.ravel(), self.borders.ravel()], axis=1).astype(float)
        distinct, inverse = np.unique(pairs, axis=0, return_inverse=True)
        splits = inverse.reshape(self.features.shape)
        return (
            distinct[:, 0].astype(np.intp),
            distinct[:, 1:].astype(np.float32),
            [np.ascontiguousarray(splits[:, level]) for level in range(self.features.shape[1])],
            (np.arange(len(self.leaves)) * self.leaves.shape[1])[:, None],
        )

    def meta(self) -> dict[str, Any]:
        """The metadata entry: feature names, scale and bias."""
        return {
            "features": list(self.feature_names),
            "scale": float(self.scale),
            "bias": float(self.bias),
        }

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], meta: Any) -> ObliviousTrees | None:
        """The part from stored arrays and metadata, None without feature names."""
        if not isinstance(meta, dict) or not isinstance(meta.get("features"), list):
            return None
        return cls(
            **arrays,
            feature_names=tuple(meta["features"]),
            scale=float(meta.get("scale", 1.0)),
            bias=float(meta.get("bias", 0.0)),
        )

    def problems(self, n_items: int, n_users: int, history_len: int) -> list[str]:
        """What is inconsistent: shapes and feature indexes."""
        found = []
        n_trees, depth = self.features.shape if self.features.ndim == 2 else (0, 0)
        if self.features.ndim != 2 or self.borders.shape != self.features.shape:
            found.append("ranker_features / ranker_borders are not (n_trees, depth)")
        if self.leaves.shape != (n_trees, 2**depth):
            found.append(f"ranker_leaves is not ({n_trees}, {2**depth})")
        if self.features.size and not 0 <= self.features.min() <= self.features.max() < len(
            self.feature_names
        ):
            found.append("ranker_features index features the ranker does not name")
        return found


#: the optional parts of a bundle: Bundle attribute -> part type
PARTS: Mapping[str, type[Any]] = {
    "answers": ServedAnswers,
    "covisit": Covisitation,
    "activity": Activity,
    "ranker": ObliviousTrees,
}
