"""Candidates and features of a learned ranking: one definition for training and serving.

A visitor's candidates come from four sources: their own recent items, the co-visitation
neighbours of their most recent items, the model's top items for their vector and the most
popular items. Every (visitor, candidate) pair gets the :data:`FEATURES` below, computed from
the bundle's arrays only (pure numpy). The same function builds the ranker's training
examples (many visitors as of a cutoff), the offline evaluation and every live request (one
visitor with the events they posted), so the model is served exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from recsys.arrays import index_of
from recsys.bundle import Bundle
from recsys.exceptions import ConfigurationError
from recsys.serving.search import Exclusions, ItemSearch

#: a candidate the visitor never touched: its history rank and age
NOT_SEEN_RANK: Final = 1_000.0
NOT_SEEN_HOURS: Final = 100_000.0
_HOUR_MS: Final = 3_600_000.0

#: the per-visitor, per-candidate features, in column order (item counts follow as ``item_*``)
BASE_FEATURES: Final = (
    "hist_rank",  # position in the visitor's history, most recent first (NOT_SEEN_RANK)
    "hist_age_h",  # hours since the visitor last viewed / carted it (NOT_SEEN_HOURS)
    "hist_views",  # times the visitor viewed it
    "hist_carts",  # times the visitor added it to cart
    "covisit",  # co-visitation weight from the visitor's most recent items, by recency
    "model_score",  # the model's score for the visitor's vector (user, fold-in or bias)
    "cart_rate",  # the item's all-time carts per view (smoothed)
    "category_share",  # share of the visitor's history in the item's category
    "available",  # 1 if the item was available at the cutoff
    "visitor_items",  # distinct items in the visitor's history
    "visitor_idle_h",  # hours since the visitor's last event (NOT_SEEN_HOURS)
    "known",  # 1 if the model knows the visitor
)


def feature_names(bundle: Bundle) -> tuple[str, ...]:
    """The feature columns for ``bundle``: :data:`BASE_FEATURES` then its item counts."""
    if bundle.activity is None or bundle.covisit is None:
        raise ConfigurationError(
            "this bundle carries no activity counts or co-visitation (built by an older "
            "version): learned and co-visitation policies cannot rank with it"
        )
    return BASE_FEATURES + tuple(f"item_{name}" for name in bundle.activity.names)


@dataclass(frozen=True)
class History:
    """Visitors' recent items as flat row-ordered arrays, most recent first within a row,
    each item once per row."""

    rows: NDArray[np.int64]
    items: NDArray[np.int64]
    #: epoch ms of the last view / cart
    times: NDArray[np.int64]
    views: NDArray[np.int64]
    carts: NDArray[np.int64]


@dataclass(frozen=True)
class Visits:
    """``n`` visitors as a ranking sees them at ``now_ms``.

    Attributes
    ----------
    known : numpy.ndarray
        bool (n,): the model knows the visitor.
    now_ms : numpy.ndarray
        int64 (n,): when they are ranked (ages are measured from it).
    vectors : numpy.ndarray
        float32 (n, d + 1): the vector scoring their candidates (user vector, session fold-in
        or the bias-only vector).
    history : History
        Their recent items.
    bought : Exclusions
        (row, item position) pairs never recommended.
    """

    known: NDArray[np.bool_]
    now_ms: NDArray[np.int64]
    vectors: NDArray[np.float32]
    history: History
    bought: Exclusions

    @property
    def n(self) -> int:
        """Number of visitors."""
        return len(self.known)


def concat_visits(parts: Sequence[Visits]) -> Visits:
    """Several batches of visitors as one (rows renumbered in order)."""
    offsets = np.cumsum([0, *(p.n for p in parts)])
    return Visits(
        known=np.concatenate([p.known for p in parts]),
        now_ms=np.concatenate([p.now_ms for p in parts]),
        vectors=np.concatenate([p.vectors for p in parts]),
        history=History(
            rows=np.concatenate([p.history.rows + o for p, o in zip(parts, offsets, strict=False)]),
            items=np.concatenate([p.history.items for p in parts]),
            times=np.concatenate([p.history.times for p in parts]),
            views=np.concatenate([p.history.views for p in parts]),
            carts=np.concatenate([p.history.carts for p in parts]),
        ),
        bought=(
            np.concatenate([p.bought[0] + o for p, o in zip(parts, offsets, strict=False)]),
            np.concatenate([p.bought[1] for p in parts]),
        ),
    )


@dataclass(frozen=True)
class Candidates:
    """(row, item) pairs, sorted by row then item, and their feature matrix."""

    rows: NDArray[np.int64]
    items: NDArray[np.int64]
    #: float32 (n_pairs, n_features), columns as :func:`feature_names`
    x: NDArray[np.float32]
    #: where each pair came from: bit 0 history, 1 co-visitation, 2 model, 3 popular
    sources: NDArray[np.int8]


HISTORY_SOURCE, COVISIT_SOURCE, MODEL_SOURCE, POPULAR_SOURCE = 1, 2, 4, 8


def candidates(
    bundle: Bundle,
    search: ItemSearch,
    visits: Visits,
    n_model: int = 50,
    n_popular: int = 30,
    covisit_sources: int = 5,
) -> Candidates:
    """Candidates of ``visits`` and their features.

    Parameters
    ----------
    bundle, search : Bundle, ItemSearch
        The model and its search (``search.bundle is bundle``).
    visits : Visits
        The visitors.
    n_model : int
        The model's top items per visitor (rows whose model is constant get none).
    n_popular : int
        Most popular items every visitor gets as candidates.
    covisit_sources : int
        Most recent history items whose co-visitation neighbours are candidates.

    Returns
    -------
    Candidates
        Never a bought item; unavailable items are kept (``available`` is a feature).
    """
    names = feature_names(bundle)
    assert bundle.activity is not None and bundle.covisit is not None
    n, n_items = visits.n, bundle.n_items
    hist = visits.history
    hist_rank = np.arange(len(hist.rows)) - np.searchsorted(hist.rows, hist.rows)

    # co-visitation neighbours of each visitor's most recent items, weighed by recency
    source = hist_rank < covisit_sources
    s_rows, s_items, s_rank = hist.rows[source], hist.items[source], hist_rank[source]
    cv = bundle.covisit
    starts, ends = cv.indptr[s_items], cv.indptr[s_items + 1]
    lengths = ends - starts
    owner = np.repeat(np.arange(len(s_items)), lengths)
    slots = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = np.repeat(starts, lengths) + slots
    c_rows = s_rows[owner]
    c_items = cv.items[flat].astype(np.int64)
    c_weight = cv.weights[flat] / (1.0 + s_rank[owner])

    parts_rows = [hist.rows, c_rows]
    parts_items = [hist.items, c_items]
    parts_source = [
        np.full(len(hist.rows), HISTORY_SOURCE, np.int8),
        np.full(len(c_rows), COVISIT_SOURCE, np.int8),
    ]
    if n_model > 0 and not search.constant and n:
        top = search.top_k(visits.vectors, n_model, visits.bought)
        m_rows, m_cols = np.nonzero(top >= 0)
        parts_rows.append(m_rows.astype(np.int64))
        parts_items.append(top[m_rows, m_cols])
        parts_source.append(np.full(len(m_rows), MODEL_SOURCE, np.int8))
    popular = search.popular[:n_popular].astype(np.int64)
    parts_rows.append(np.repeat(np.arange(n, dtype=np.int64), len(popular)))
    parts_items.append(np.tile(popular, n))
    parts_source.append(np.full(n * len(popular), POPULAR_SOURCE, np.int8))

    keys = np.concatenate(parts_rows) * n_items + np.concatenate(parts_items)
    unique, inverse = np.unique(keys, return_inverse=True)
    sources = np.zeros(len(unique), np.int8)
    np.bitwise_or.at(sources, inverse, np.concatenate(parts_source))

    # the history and co-visitation features of every pair, through the pairs' positions in
    # ``unique`` (the history's first, then co-visitation's, as concatenated above)
    x = np.zeros((len(unique), len(names)), np.float32)
    col = {name: i for i, name in enumerate(names)}
    n_hist = len(hist.rows)
    h_at = inverse[:n_hist]  # each item is once in its row's history
    x[:, col["hist_rank"]] = NOT_SEEN_RANK
    x[:, col["hist_age_h"]] = NOT_SEEN_HOURS
    x[h_at, col["hist_rank"]] = hist_rank
    ages = (visits.now_ms[hist.rows] - hist.times) / _HOUR_MS
    x[h_at, col["hist_age_h"]] = np.maximum(ages, 0.0)
    x[h_at, col["hist_views"]] = hist.views
    x[h_at, col["hist_carts"]] = hist.carts
    c_at = inverse[n_hist : n_hist + len(c_rows)]
    x[:, col["covisit"]] = np.bincount(c_at, weights=c_weight, minlength=len(unique))
    b_rows, b_items = visits.bought
    if len(b_items):
        keep = index_of(np.unique(b_rows * n_items + b_items), unique) < 0
        unique, sources, x = unique[keep], sources[keep], x[keep]
    rows, items = unique // n_items, unique % n_items

    # float32 products, as the search scores: a feature, not the canonical order
    x[:, col["model_score"]] = np.einsum(
        "ij,ij->i", visits.vectors[rows], bundle.item_vectors[items]
    )
    counts = bundle.activity.item_counts[items]
    first_count = len(BASE_FEATURES)
    x[:, first_count:] = counts
    views_all = bundle.activity.column("views_all")[items]
    carts_all = bundle.activity.column("carts_all")[items]
    x[:, col["cart_rate"]] = (carts_all + 0.1) / (views_all + 5.0)
    x[:, col["available"]] = bundle.item_available[items]

    # the visitor's category mix
    h_count = np.bincount(hist.rows, minlength=n)
    x[:, col["visitor_items"]] = h_count[rows]
    cats = bundle.item_category
    n_cats = bundle.n_category_keys
    cat_keys, cat_n = np.unique(hist.rows * n_cats + cats[hist.items] + 1, return_counts=True)
    at = index_of(cat_keys, rows * n_cats + cats[items] + 1)
    share = np.where(at >= 0, cat_n[np.maximum(at, 0)], 0) / np.maximum(h_count[rows], 1)
    x[:, col["category_share"]] = np.where(cats[items] >= 0, share, 0.0)
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, hist.rows, hist.times)
    idle = np.where(last >= 0, (visits.now_ms - last) / _HOUR_MS, NOT_SEEN_HOURS)
    x[:, col["visitor_idle_h"]] = np.maximum(idle, 0.0)[rows]
    x[:, col["known"]] = visits.known[rows]
    return Candidates(rows, items, x, sources)
