"""Exact model top-k over a bundle's available items: :class:`ItemSearch`.

Scoring every item (235k x 65 floats, 61 MB) costs ~4-9 ms per request, so model scores come
from a cluster index with a pruning certificate (:class:`~recsys.serving.index.ClusterIndex`).
It is exact, not approximate:

* Available items are grouped into clusters of at most ``leaf_size`` items, built once per
  :class:`ItemSearch` (~3-5 s at full scale), lazily and thread-safely; every
  :class:`~recsys.serving.Recommender` given the same search shares it.
* For a user vector ``w = [u, 1]`` the index gives an upper bound of every cluster's best
  score. The ``probe`` clusters with the best estimate are scored first; their k-th best
  allowed score ``theta`` is a lower bound of the true k-th best, so every cluster whose bound
  is below ``theta`` is skipped. The rest is scored: the result is the exact top-k (typically
  ~1% of the catalogue is read).
* The ranking is canonical: final candidates (float32 score within a rounding tolerance of the
  k-th best) are re-scored in float64 with a fixed summation order and sorted by
  (score desc, popularity rank). Ties therefore go to popular items, a constant model ranks
  like the popularity order, and any number of rows ranked together get the same answer as
  each row alone: float32 scores only choose candidates, never the order.

There is one search for any number of rows. Only how the products of (row, cluster) pairs are
computed depends on the shape: one row gathers its clusters' items and takes one
matrix-vector product (a live request: ~0.15 ms in all), several rows take one matrix product
per cluster over the rows that need it (batch ranking). Both are within the tolerance of the
exact score, which is all the certificate needs.

One row's answer is kept in a bounded LRU (:data:`MEMO_ROWS`), keyed by everything it depends
on (the vector's bytes, ``k``, the exclusions, ``probe``, ``candidates``), so it is exact: a
browsing visitor asks again after each view with the same vector and purchases, and the
learned ranking's model candidates then cost a dictionary lookup instead of a search.

``candidates`` optionally caps the items scored per row after the probe (approximate, bounded
worst-case latency; a row alone and in a batch still agree). :meth:`ItemSearch.exact_top_k`
is the brute-force reference, for measuring agreement.

Set ``OPENBLAS_NUM_THREADS=1`` in a latency-sensitive service: the products here are small
and multi-threaded BLAS only adds synchronisation.

(A little over 400 lines: the layout, the pruning search, its canonical re-scoring and the
brute-force reference share the layout and the tolerance, and are one proof of exactness.)

Why one module of this size: the cluster layout, the certificate and the canonical re-scoring
share their tolerance and ordering rules; together they are the one definition of the model's
top-k.
"""

from __future__ import annotations

import math
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recsys.arrays import index_of
from recsys.bundle import Bundle
from recsys.serving.index import ClusterIndex, exact_scores
from recsys.serving.memo import Memo

#: float32 unit roundoff
_U32 = 2.0**-24
_NONE = np.zeros(0, dtype=np.int64)
_NONE.flags.writeable = False

#: single-row answers :meth:`ItemSearch.top_k` keeps (at k = 50: 3.3 MB of answers plus keys)
MEMO_ROWS = 8192

#: (row numbers, item positions): the items each row must not get
Exclusions = tuple[NDArray[np.int64], NDArray[np.int64]]


def no_exclusions() -> Exclusions:
    """An empty :data:`Exclusions` pair."""
    return _NONE, _NONE


def first_allowed(
    ranking: NDArray[np.int64], exclude: Exclusions, n: int, k: int, n_items: int
) -> NDArray[np.int64]:
    """Per row, the first ``k`` items of ``ranking`` that row may get.

    Parameters
    ----------
    ranking : numpy.ndarray
        Item positions, best first (each at most once).
    exclude : Exclusions
        (row, item position) pairs to skip.
    n, k : int
        Rows and items per row.
    n_items : int
        Upper bound of the item positions (makes (row, item) keys unique).

    Returns
    -------
    numpy.ndarray
        int64 (n, k) item positions, -1 padded.

    Examples
    --------
    >>> first_allowed(np.array([3, 1, 2]), (np.array([1]), np.array([3])), 2, 2, 4)
    array([[3, 1],
           [1, 2]])
    """
    rows, items = exclude
    keys = np.sort(rows * n_items + items)
    per_row = np.bincount(rows, minlength=n)
    width = min(len(ranking), k + int(per_row.max(initial=0)))
    cand = ranking[:width]
    free = index_of(keys, np.arange(n)[:, None] * n_items + cand) < 0
    order = np.cumsum(free, axis=1) - 1
    r, c = np.nonzero(free & (order < k))
    out = np.full((n, k), -1, dtype=np.int64)
    out[r, order[r, c]] = cand[c]
    return out


def single_threaded_blas() -> AbstractContextManager[Any]:
    """One BLAS thread while batch ranking: its many small products only lose from
    threading (measured 1.5-3x faster on 2 cores). A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional dependency
        return nullcontext()
    limits: AbstractContextManager[Any] = threadpool_limits(limits=1, user_api="blas")
    return limits


@dataclass(frozen=True)
class _Layout:
    """The cluster index and the available items in its order (built once, then read-only).

    Index positions number the available items cluster by cluster.
    """

    index: ClusterIndex
    items: NDArray[np.int64]  # index position -> bundle item position
    internal: NDArray[np.int64]  # bundle item position -> index position, -1 if unavailable
    vectors: NDArray[np.float32]  # item vectors in index order, contiguous
    records: NDArray[np.void]  # one record per vector: ``take`` gathers rows much faster
    rank: NDArray[np.int64]  # popularity rank per index position: the tie-break
    cluster: NDArray[np.int64]  # cluster per index position
    leaf: int  # largest cluster size


class ItemSearch:
    """Exact model top-k over the available items of one bundle (see module doc).

    Build one per bundle and pass it to every :class:`~recsys.serving.Recommender` of that
    bundle: the index and its reordered copy of the item vectors then exist once.

    Parameters
    ----------
    bundle : Bundle
        The model whose items are searched.
    leaf_size : int
        Maximum cluster size of the index.

    Attributes
    ----------
    popular : numpy.ndarray
        Available item positions, most popular first (the canonical order of equal scores).
    constant : bool
        True when all available items have the same vector (or there are none): every model
        ranking is then the popularity order, and no index is built.
    """

    def __init__(self, bundle: Bundle, leaf_size: int = 64) -> None:
        self.bundle = bundle
        self.leaf_size = max(1, int(leaf_size))
        vectors = bundle.item_vectors
        self.popular: NDArray[np.int64] = bundle.popular[
            bundle.item_available[bundle.popular]
        ].astype(np.int64)
        self._available = np.flatnonzero(bundle.item_available)
        first = vectors[self._available[:1]]
        self.constant = len(self._available) == 0 or bool(np.all(vectors[self._available] == first))
        self._vmax = float(np.linalg.norm(vectors, axis=1).max(initial=0.0))
        self._layout: _Layout | None = None
        self._lock = threading.Lock()
        self._memo = Memo[NDArray[np.int64]](MEMO_ROWS)

    @property
    def index(self) -> ClusterIndex:
        """The cluster index (built on first use)."""
        return self._built().index

    def build(self) -> None:
        """Build the index now, so that no request pays for it (a no-op once built)."""
        if not self.constant:
            self._built()

    def _built(self) -> _Layout:
        layout = self._layout
        if layout is None:
            with self._lock:  # concurrent first requests build it once
                if self._layout is None:
                    self._layout = self._make_layout()
                layout = self._layout
        return layout

    def _make_layout(self) -> _Layout:
        b = self.bundle
        index = ClusterIndex(b.item_vectors[self._available], self.leaf_size)
        items = self._available[index.order]
        internal = np.full(b.n_items, -1, dtype=np.int64)
        internal[items] = np.arange(len(items))
        vectors = np.ascontiguousarray(b.item_vectors[items], dtype=np.float32)
        rank = np.empty(b.n_items, dtype=np.int64)
        rank[b.popular] = np.arange(b.n_items)
        return _Layout(
            index=index,
            items=items,
            internal=internal,
            vectors=vectors,
            records=vectors.view(np.dtype((np.void, vectors.shape[1] * 4))).ravel(),
            rank=rank[items],
            cluster=np.repeat(np.arange(index.n_clusters), index.sizes),
            leaf=int(index.sizes.max()),
        )

    # ------------------------------------------------------------------ public

    def top_k(
        self,
        vectors: NDArray[Any],
        k: int,
        exclude: Exclusions | None = None,
        probe: int = 8,
        candidates: int | None = None,
    ) -> NDArray[np.int64]:
        """The canonical model top-``k`` of each row of ``vectors``.

        Parameters
        ----------
        vectors : numpy.ndarray
            (n, d + 1) vectors in the bundle's space.
        k : int
            Items per row.
        exclude : Exclusions, optional
            (row, item position) pairs a row must not get.
        probe : int
            Clusters scored first to find the pruning threshold.
        candidates : int, optional
            None: exact. An int caps the items scored per row after the probe (approximate).

        Returns
        -------
        numpy.ndarray
            int64 (n, k) item positions, best first, -1 padded when fewer are allowed
            (read-only for one row: it may be the kept answer of an earlier call).
        """
        probe = max(1, probe)
        if len(vectors) != 1:
            return self._run(vectors, k, exclude, probe, candidates)
        items = exclude[1] if exclude is not None else _NONE
        key = (
            np.ascontiguousarray(vectors, dtype=np.float32).tobytes(),
            k,
            np.asarray(items, dtype=np.int64).tobytes(),
            probe,
            candidates,
        )
        kept = self._memo.get(key)
        if kept is not None:
            return kept
        out = self._run(vectors, k, exclude, probe, candidates)
        out.flags.writeable = False
        self._memo.put(key, out)
        return out

    def exact_top_k(
        self, vectors: NDArray[Any], k: int, exclude: Exclusions | None = None
    ) -> NDArray[np.int64]:
        """Reference for :meth:`top_k`: scores every available item (slow; for measuring)."""
        return self._run(vectors, k, exclude, None, None)

    def _run(
        self,
        vectors: NDArray[Any],
        k: int,
        exclude: Exclusions | None,
        probe: int | None,
        candidates: int | None,
    ) -> NDArray[np.int64]:
        """Bundle positions of :meth:`_search` (``probe`` None: :meth:`_exact`)."""
        n = len(vectors)
        rows, items = exclude if exclude is not None else no_exclusions()
        if k <= 0 or n == 0:
            return np.full((n, max(k, 0)), -1, dtype=np.int64)
        if self.constant:  # all scores equal: the canonical order is the popularity order
            return first_allowed(self.popular, (rows, items), n, k, self.bundle.n_items)
        layout = self._built()
        w = np.ascontiguousarray(vectors, dtype=np.float32)
        internal = layout.internal[items]
        ok = internal >= 0
        excl = (rows[ok], internal[ok])
        if probe is None:
            out = self._exact(layout, w, excl, k)
        else:
            out = self._search(layout, w, excl, k, probe, candidates)
        return np.where(out >= 0, layout.items[np.maximum(out, 0)], -1)

    # ------------------------------------------------------------------ kernels

    def _tol(self, w: NDArray[np.float32]) -> NDArray[np.float64]:
        """Bound of float32 rounding differences between two ways of computing a score."""
        # |w| <= sqrt(D) max|w_j|; a max is exact, so every row gets the same tolerance alone
        # or in a batch
        dim = w.shape[1]
        norm = math.sqrt(dim) * np.abs(w).max(axis=1, initial=0.0).astype(np.float64)
        tol: NDArray[np.float64] = 16.0 * (dim + 4) * _U32 * norm * self._vmax + 1e-12
        return tol

    def _pair_scores(
        self,
        layout: _Layout,
        w: NDArray[np.float32],
        rows: NDArray[np.int64],
        clusters: NDArray[np.int64],
        excl: Exclusions,
    ) -> NDArray[np.float32]:
        """Float32 scores of the items of each (row, cluster) pair, pairs ascending: (pairs x
        largest cluster size), -inf past a cluster's end and for excluded items."""
        index = layout.index
        offsets = np.arange(layout.leaf)
        if len(w) == 1:  # one gather and one matrix-vector product
            ids = np.minimum(index.starts[clusters][:, None] + offsets, len(layout.items) - 1)
            gathered = np.take(layout.records, ids.ravel()).view(np.float32)
            scores: NDArray[np.float32] = (gathered.reshape(ids.size, w.shape[1]) @ w[0]).reshape(
                ids.shape
            )
            scores[offsets >= index.sizes[clusters][:, None]] = -np.inf
        else:  # one matrix product per cluster over the rows that need it
            scores = np.full((len(rows), layout.leaf), -np.inf, dtype=np.float32)
            order = np.argsort(clusters, kind="stable")
            cuts = np.flatnonzero(np.diff(clusters[order])) + 1
            for block in np.split(order, cuts) if len(order) else []:
                s, e = index.starts[clusters[block[0]]], index.starts[clusters[block[0]] + 1]
                scores[block, : e - s] = w[rows[block]] @ layout.vectors[s:e].T
        ex_rows, ex_ids = excl
        if len(ex_ids):  # pairs ascend by (row, cluster): find each excluded item's pair
            cluster = layout.cluster[ex_ids]
            nc = index.n_clusters
            at = index_of(rows * nc + clusters, ex_rows * nc + cluster)
            hit = at >= 0
            scores[at[hit], ex_ids[hit] - index.starts[cluster[hit]]] = -np.inf
        return scores

    def _canonical(
        self,
        layout: _Layout,
        w: NDArray[np.float32],
        rows: NDArray[np.int64],
        ids: NDArray[np.int64],
        vals: NDArray[np.float32],
        k: int,
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Canonical top-k from flat (row, index position, float32 score) candidates that
        include every item able to make a row's top-k (-inf scores are left out).

        Re-scores them in float64 and sorts by (score desc, popularity rank). Returns n x k
        index positions (-1 padded) and each row's k-th best float64 score (-inf for rows
        with fewer than k candidates).
        """
        keep = np.isfinite(vals)
        rows, ids = rows[keep], ids[keep]
        s64 = exact_scores(w[rows], layout.vectors[ids])
        order = np.lexsort((layout.rank[ids], -s64, rows))
        rows, ids, s64 = rows[order], ids[order], s64[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
        out = np.full((len(w), k), -1, dtype=np.int64)
        top = rank < k
        out[rows[top], rank[top]] = ids[top]
        kth = np.full(len(w), -np.inf)
        kth[rows[rank == k - 1]] = s64[rank == k - 1]
        return out, kth

    def _budget_cut(
        self,
        layout: _Layout,
        rows: NDArray[np.int64],
        clusters: NDArray[np.int64],
        bound_values: NDArray[np.float32],
        candidates: int,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Keep each row's best-bound clusters until ``candidates`` items are reached
        (pairs stay in their order)."""
        order = np.lexsort((clusters, -bound_values, rows))
        sizes = layout.index.sizes[clusters[order]]
        before = np.cumsum(sizes) - sizes
        keep = np.empty(len(rows), dtype=bool)
        keep[order] = before - before[np.searchsorted(rows[order], rows[order])] < candidates
        return rows[keep], clusters[keep]

    def _search(
        self,
        layout: _Layout,
        w: NDArray[np.float32],
        excl: Exclusions,
        k: int,
        probe: int,
        candidates: int | None,
    ) -> NDArray[np.int64]:
        """Top-k index positions per row of ``w`` (n x k, -1 padded); ``excl`` in index
        positions.

        Probe: each row's ``probe`` best-estimate clusters fill a dense (row x probe slot x
        cluster size) score matrix whose k-th best allowed score per row, ``kth``, less the
        rounding tolerance, is the pruning threshold ``theta``. Every other cluster whose
        bound reaches it is scored. Candidates are the scores reaching ``theta - tol``: every
        item of the top-k is one, whatever the rounding of its float32 score.
        """
        index = layout.index
        n = len(w)
        tol = self._tol(w)
        bound, estimate = index.bounds(w)
        nc = index.n_clusters
        p = min(probe, nc)
        # (selecting the largest via a high kth is faster than via -x and a low kth)
        probes = (
            np.sort(np.argpartition(estimate, nc - p, axis=1)[:, nc - p :], axis=1)
            if p < nc
            else np.broadcast_to(np.arange(nc), (n, nc))
        )
        leaf = layout.leaf
        pairs = (np.repeat(np.arange(n), p), probes.ravel())
        dense = self._pair_scores(layout, w, *pairs, excl).reshape(n, p * leaf)
        cut = dense.shape[1] - k
        kth = (
            np.partition(dense, cut, axis=1)[:, cut].astype(np.float64)
            if cut >= 0
            else np.full(n, -np.inf)
        )
        r, col = np.nonzero(dense >= (kth - 2 * tol)[:, None])
        slot, offset = np.divmod(col, leaf)
        probed = (r, index.starts[probes[r, slot]] + offset, dense[r, col])
        # exact: any lower bound of the k-th best score will do; a budget cut must see the
        # same threshold for a row alone and in a batch: the canonical k-th best
        best = kth if candidates is None else self._canonical(layout, w, *probed, k)[1]
        theta = best - tol
        need = bound >= (theta - tol)[:, None]
        need[np.arange(n)[:, None], probes] = False
        rows, clusters = np.nonzero(need)
        if candidates is not None:
            rows, clusters = self._budget_cut(
                layout, rows, clusters, bound[rows, clusters], candidates
            )
        scores = self._pair_scores(layout, w, rows, clusters, excl)
        pair, offset = np.nonzero(scores >= (theta - tol)[rows][:, None])
        return self._canonical(
            layout,
            w,
            np.concatenate([probed[0], rows[pair]]),
            np.concatenate([probed[1], index.starts[clusters[pair]] + offset]),
            np.concatenate([probed[2], scores[pair, offset]]),
            k,
        )[0]

    def _exact(
        self, layout: _Layout, w: NDArray[np.float32], excl: Exclusions, k: int
    ) -> NDArray[np.int64]:
        """Brute-force canonical top-k over every available item (index positions)."""
        tol = self._tol(w)
        out = np.full((len(w), k), -1, dtype=np.int64)
        for row in range(len(w)):
            scores = layout.vectors @ w[row]
            scores[excl[1][excl[0] == row]] = -np.inf
            # only scores near the k-th best can reach the canonical top-k
            cut = len(scores) - k
            kth = float(np.partition(scores, cut)[cut]) if cut >= 0 else -np.inf
            ids = np.flatnonzero(scores >= kth - 2 * tol[row])
            rows = np.zeros(len(ids), dtype=np.int64)
            out[row] = self._canonical(layout, w[row : row + 1], rows, ids, scores[ids], k)[0]
        return out
