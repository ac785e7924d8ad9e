"""Online ranking from a :class:`~recsys.bundle.Bundle`: pure numpy, no LightFM, no pandas.

Fast exact top-k
----------------
Scoring every item (235k x 65 floats, 61 MB) costs ~4-9 ms per request, so model scores come
from a cluster index with a pruning certificate. It is exact, not approximate:

* Available items are grouped into clusters by a cheap two-level k-means on their embeddings
  (plus one reassignment pass), then split into pieces of at most ``leaf_size`` items by
  descending bias. Built once per bundle object (~3-5 s at full scale), lazily, shared by
  every Recommender of that bundle.
* For a user vector ``w = [u, 1]`` and item ``[e_i, b_i]`` in cluster ``c`` with centroid
  ``m_c``: ``u.e_i + b_i <= u.m_c + max_i(|u| |e_i - m_c| + b_i)``. The last term is a convex
  function of ``t = |u|``, tabulated per cluster on a grid; the chord between grid points lies
  above a convex function, so interpolating keeps it an upper bound.
* The ``probe`` clusters with the best estimate ``u.m_c + max bias`` are scored first; their
  k-th best allowed score ``theta`` is a lower bound of the true k-th best, so every cluster
  whose bound is below ``theta`` is skipped. The rest is scored: the result is the exact top-k
  (typically ~1% of the catalogue is read).
* The ranking is canonical: final candidates (float32 score within a rounding tolerance of the
  k-th best) are re-scored in float64 with a fixed summation order and sorted by
  (score desc, popularity rank). Ties therefore go to popular items, a constant model ranks
  like ``"popular"``, and :meth:`Recommender.recommend` (one gather + one product) and
  :meth:`Recommender.recommend_batch` (users grouped by cluster, one matrix product per
  cluster) return identical rankings.

Served answers
--------------
Known visitors without online events get the answer precomputed at export
(:meth:`Recommender.attach_precomputed`: items, how many lead from the history, float64
scores), equal bit for bit to the live ranking; unknown visitors without events share one
answer per ``k``. Visitors with online events, rows not precomputed (popular padding) and
requests for more items than were stored are ranked per request.

``candidates`` optionally caps the items scored per user after the probe (approximate,
bounded worst-case latency; single and batch paths still agree). :meth:`Recommender.top_k`
is the served model ranking of any vector and :meth:`Recommender.exact_top_k` the brute-force
reference, for measuring agreement.

Set ``OPENBLAS_NUM_THREADS=1`` in a latency-sensitive service: the products here are small
and multi-threaded BLAS only adds synchronisation.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np

from recsys.arrays import index_of, rank_in_runs
from recsys.bundle import Bundle
from recsys.serving.index import ClusterIndex, exact_scores

POLICIES = ("model", "popular", "recent", "blend")
#: policy served when a bundle's metadata names none
DEFAULT_POLICY = "blend"
SOURCES = ("model", "recent", "blend", "fold_in", "popular")
REASON_VIEWED = "you viewed it"
REASON_SIMILAR = "similar to an item you viewed"
REASON_CATEGORY = "popular in its category"
REASON_POPULAR = "popular now"
#: blend: the visitor's recent views fill the head, the model the rest (won offline at full scale)
DEFAULT_RECENT_SLOTS = 5
REASON_FOR_YOU = "recommended for you"

#: extra slots kept per user while scanning, to detect near-ties beyond the k-th item
_SLACK = 16
#: float32 unit roundoff
_U32 = 2.0**-24
_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False


@dataclass
class Recommendation:
    """One answer: parallel lists of items, scores and reasons, plus where they came from.

    ``scores`` are model scores ``user_vector . item_vector`` (for unknown visitors without
    session the user vector is ``[0, ..., 0, 1]``, i.e. the item bias).
    """

    user_id: int
    item_ids: list[int]
    scores: list[float]
    reasons: list[str]
    source: str


# ---------------------------------------------------------------------------- small helpers


def _csr_rows(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray):
    """Flatten CSR rows ``rows`` into (row number in ``rows``, value) pairs, row order kept."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    owner = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, values[np.repeat(starts, lengths) + offsets].astype(np.int64)


# ---------------------------------------------------------------------------- recommender


class Recommender:
    """Rank items for visitors from a bundle: filters, fallbacks, session fold-in, fast top-k.

    Parameters
    ----------
    bundle : Bundle
        The model to serve.
    policy : str
        One of :data:`POLICIES`: ``"model"`` (model scores), ``"popular"``, ``"recent"`` (the
        visitor's own viewed / carted items, most recent first, then popular), ``"blend"``
        (up to ``recent_slots`` recent items first, then model scores).
    candidates : int, optional
        None (default): exact top-k. An int caps the items scored per user after the probe
        (approximate; bounds the worst-case latency).
    recent_slots : int, optional
        Leading slots of ``"blend"`` and of session fold-in taken by recent items; default:
        the bundle's ``metadata["recent_slots"]``, else :data:`DEFAULT_RECENT_SLOTS`.
    leaf_size : int
        Maximum cluster size of the index.
    probe : int
        Clusters scored first to find the pruning threshold.

    Notes
    -----
    Never returns an item the user bought or an unavailable item, never a duplicate, and
    exactly ``k`` items whenever that many are allowed (padding with popular items). Model
    ties are broken by popularity, so a model with constant scores ranks like ``"popular"``.
    """

    def __init__(
        self,
        bundle: Bundle,
        policy: str = DEFAULT_POLICY,
        candidates: int | None = None,
        recent_slots: int | None = None,
        leaf_size: int = 64,
        probe: int = 8,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
        if candidates is not None and candidates < 1:
            raise ValueError(f"candidates must be >= 1 or None, got {candidates}")
        self.bundle = bundle
        self.policy = policy
        self.candidates = candidates
        if recent_slots is None:  # what training chose, recorded in the bundle
            recent_slots = int(bundle.metadata.get("recent_slots", DEFAULT_RECENT_SLOTS))
        self.recent_slots = max(0, int(recent_slots))
        self.leaf_size = max(1, int(leaf_size))
        self.probe = max(1, int(probe))
        n_items = bundle.n_items
        self._pop_rank = np.empty(n_items, dtype=np.int64)
        self._pop_rank[bundle.popular] = np.arange(n_items)
        self._popular = bundle.popular[bundle.item_available[bundle.popular]].astype(np.int64)
        vectors = bundle.item_vectors
        self._avail = np.flatnonzero(bundle.item_available)
        first = vectors[self._avail[:1]]
        self._constant = len(self._avail) == 0 or bool(np.all(vectors[self._avail] == first))
        self._vmax = float(np.linalg.norm(vectors, axis=1).max(initial=0.0))
        self._index: ClusterIndex | None = None
        self._lock = threading.Lock()
        self._top = self._usable_top()
        self._cold: dict[int, Recommendation] = {}

    # ------------------------------------------------------------------ index

    def _ensure_index(self) -> ClusterIndex:
        """Build (or reuse the bundle's) cluster index over the available items."""
        if self._index is not None:
            return self._index
        with self._lock:  # concurrent first requests build it once
            if self._index is not None:
                return self._index
            # cached on the bundle object: every Recommender of one bundle shares the index
            # and its reordered copy of the vectors
            cache = self.bundle.__dict__.setdefault("_serving_index_cache", {})
            if self.leaf_size not in cache:
                index = ClusterIndex(self.bundle.item_vectors[self._avail], self.leaf_size)
                items = self._avail[index.order]  # index position -> bundle position
                internal = np.full(self.bundle.n_items, -1, dtype=np.int64)
                internal[items] = np.arange(len(items))
                vec = np.ascontiguousarray(self.bundle.item_vectors[items])
                cache[self.leaf_size] = (index, items, internal, vec)
            index, self._items, self._internal, self._vec = cache[self.leaf_size]
            # one record per row: ``take`` on records gathers rows much faster than 2-d indexing
            self._rows = self._vec.view(np.dtype((np.void, self._vec.shape[1] * 4))).ravel()
            self._rank_of_internal = self._pop_rank[self._items]
            self._index = index
        return self._index

    def warm_up(self) -> None:
        """Build the index and answer one request now, so that no visitor pays for either
        (the first ``recommend`` would do the same)."""
        if self.bundle.n_users:
            self.recommend(int(self.bundle.user_ids[0]), 5)
        if not self._constant:
            self._ensure_index()

    def _tol(self, w: np.ndarray) -> np.ndarray:
        """Bound of float32 rounding differences between two ways of computing a score."""
        # |w| <= sqrt(D) max|w_j|; a max is exact, so every path gets the same tolerance
        dim = w.shape[1]
        norm = math.sqrt(dim) * np.abs(w).max(axis=1, initial=0.0).astype(np.float64)
        return 16.0 * (dim + 4) * _U32 * norm * self._vmax + 1e-12

    def _tol_one(self, w: np.ndarray) -> float:
        """:meth:`_tol` of one vector (same operations, same bits)."""
        dim = len(w)
        norm = math.sqrt(dim) * float(np.abs(w).max(initial=0.0))
        return 16.0 * (dim + 4) * _U32 * norm * self._vmax + 1e-12

    def _budget_cut(self, rows, clusters, bound_values) -> tuple[np.ndarray, np.ndarray]:
        """Keep each row's best-bound clusters until ``candidates`` items are reached."""
        assert self._index is not None and self.candidates is not None
        order = np.lexsort((clusters, -bound_values, rows))
        rows, clusters = rows[order], clusters[order]
        sizes = self._index.sizes[clusters]
        before = np.cumsum(sizes) - sizes
        first = np.r_[0, np.flatnonzero(rows[1:] != rows[:-1]) + 1]
        row_start = np.repeat(before[first], np.diff(np.r_[first, len(rows)]))
        keep = before - row_start < self.candidates
        return rows[keep], clusters[keep]

    # ------------------------------------------------------------------ model top-k, many rows

    def _cluster_scores(self, w, rows, clusters, excl, payload):
        """Yield (rows, first index position, scores, payload) per cluster of (row, cluster)
        pairs: one matrix product per cluster over the rows that need it. Excluded
        (row, index position) pairs score -inf; ``payload`` is sliced along with the rows.
        """
        index = self._index
        assert index is not None
        if len(rows) == 0:
            return
        order = np.lexsort((rows, clusters))
        rows, clusters, payload = rows[order], clusters[order], payload[order]
        cuts = np.flatnonzero(np.r_[True, clusters[1:] != clusters[:-1], True])
        by_item = np.argsort(excl[1], kind="stable")
        ex_items, ex_rows = excl[1][by_item], excl[0][by_item]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            c = clusters[a]
            r = rows[a:b]
            s, e = index.starts[c], index.starts[c + 1]
            scores = w[r] @ self._vec[s:e].T
            lo, hi = np.searchsorted(ex_items, [s, e])
            if hi > lo:
                er, ei = ex_rows[lo:hi], ex_items[lo:hi]
                local = np.minimum(np.searchsorted(r, er), len(r) - 1)
                hit = r[local] == er
                scores[local[hit], ei[hit] - s] = -np.inf
            yield r, s, scores, payload[a:b]

    def _canonical_many(self, w, rows, ids, vals, tol, n, k):
        """Exact top-k from flat (row, index position, float32 score) candidates.

        Keeps each row's candidates within ``tol`` of its k-th best float32 score, re-scores
        them in float64 and sorts by (score desc, popularity rank). Returns (n x k index
        positions, -1 padded; k-th best float64 score; k-th best float32 score), the k-th
        scores being -inf for rows with fewer than k candidates.
        """
        keep = np.isfinite(vals)
        rows, ids, vals = rows[keep], ids[keep], vals[keep]
        order = np.lexsort((-vals, rows))
        rows, ids, vals = rows[order], ids[order], vals[order]
        rank = rank_in_runs(rows)
        kth32 = np.full(n, -np.inf, dtype=np.float64)
        kth32[rows[rank == k - 1]] = vals[rank == k - 1]
        keep = vals >= kth32[rows] - tol[rows]
        rows, ids = rows[keep], ids[keep]
        s64 = exact_scores(w[rows], self._vec[ids])
        order = np.lexsort((self._rank_of_internal[ids], -s64, rows))
        rows, ids, s64 = rows[order], ids[order], s64[order]
        rank = rank_in_runs(rows)
        out = np.full((n, k), -1, dtype=np.int64)
        top = rank < k
        out[rows[top], rank[top]] = ids[top]
        kth64 = np.full(n, -np.inf)
        kth64[rows[rank == k - 1]] = s64[rank == k - 1]
        return out, kth64, kth32

    def _search_many(self, w: np.ndarray, excl: tuple[np.ndarray, np.ndarray], k: int):
        """Top-k index positions per row of ``w`` (n x k, -1 padded); ``excl`` = (rows, ids).

        Probe: each row's ``probe`` best-estimate clusters fill a dense (row x probe slot x
        cluster size) score matrix whose k-th best per row is the pruning threshold. Then every
        other cluster whose bound reaches the threshold is scored, and only scores reaching
        it are kept (flat), so there is no per-cluster top-k merging.
        """
        n = len(w)
        index = self._ensure_index()
        w = np.ascontiguousarray(w, dtype=np.float32)
        width = k + _SLACK
        leaf = int(index.sizes.max())
        tol = self._tol(w)
        bound, estimate = index.bounds(w)
        nc = index.n_clusters
        p = min(self.probe, nc)
        # (selecting the largest via a high kth is faster than via -x and a low kth)
        probe = np.argpartition(estimate, nc - p, axis=1)[:, nc - p :] if p < nc else None
        if probe is None:
            probe = np.broadcast_to(np.arange(nc), (n, nc))
        dense = np.full((n, p * leaf), -np.inf, dtype=np.float32)
        dense_ids = np.full((n, p * leaf), -1, dtype=np.int64)
        slots = np.tile(np.arange(p) * leaf, n)
        pairs = (np.repeat(np.arange(n), p), probe.ravel())
        for r, s, scores, slot in self._cluster_scores(w, *pairs, excl, slots):
            cols = slot[:, None] + np.arange(scores.shape[1])
            dense[r[:, None], cols] = scores
            dense_ids[r[:, None], cols] = np.arange(s, s + scores.shape[1])
        truncated = dense.shape[1] > width
        if truncated:  # the probe buffer: best ``width`` per row
            cut = dense.shape[1] - width
            keep = np.argpartition(dense, cut, axis=1)[:, cut:]
            dense = np.take_along_axis(dense, keep, axis=1)
            dense_ids = np.take_along_axis(dense_ids, keep, axis=1)
        flat = (np.repeat(np.arange(n), dense.shape[1]), dense_ids.ravel(), dense.ravel())
        if self.candidates is None:  # any lower bound of the k-th best score keeps it exact
            cut = dense.shape[1] - k
            theta = (
                np.partition(dense, cut, axis=1)[:, cut].astype(np.float64) - tol
                if cut >= 0
                else np.full(n, -np.inf)
            )
        else:  # the budget cut must see the same threshold in every path: canonical
            theta = self._canonical_many(w, *flat, tol, n, k)[1] - tol
        need = bound >= (theta - tol)[:, None]
        need[np.arange(n)[:, None], probe] = False
        rows, clusters = np.nonzero(need)
        if self.candidates is not None:
            rows, clusters = self._budget_cut(rows, clusters, bound[rows, clusters])
        found = [flat]
        for r, s, scores, _ in self._cluster_scores(w, rows, clusters, excl, rows):
            i, j = np.nonzero(scores >= (theta[r] - tol[r])[:, None])
            found.append((r[i], s + j, scores[i, j]))
        found_rows, found_ids, found_vals = (np.concatenate(p) for p in zip(*found, strict=True))
        out, _, kth32 = self._canonical_many(w, found_rows, found_ids, found_vals, tol, n, k)
        if truncated:  # the probe buffer may have dropped near-ties: score everything
            overflow = np.isfinite(dense).all(axis=1) & (dense.min(axis=1) >= kth32 - tol)
            for row in np.flatnonzero(overflow):
                mine = np.unique(excl[1][excl[0] == row])
                best = self._exact_internal(w[row], mine, k)
                out[row] = -1
                out[row, : len(best)] = best
        return out

    # ------------------------------------------------------------------ model top-k, one row

    def _scan_one(self, w, clusters, excl) -> tuple[np.ndarray, np.ndarray]:
        """Scores and index positions of the items of ``clusters``; ``excl`` sorted."""
        index = self._index
        assert index is not None
        clusters = np.sort(clusters)  # then ``ids`` ascend
        starts, sizes = index.starts[clusters], index.sizes[clusters]
        ids = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        if len(ids) == 0:
            return np.zeros(0, dtype=np.float32), ids
        gathered = np.take(self._rows, ids).view(np.float32).reshape(len(ids), -1)
        scores = gathered @ w
        if len(excl):
            at = np.minimum(np.searchsorted(ids, excl), len(ids) - 1)
            scores[at[ids[at] == excl]] = -np.inf
        return scores, ids

    @staticmethod
    def _keep_best(vals, ids, width) -> tuple[np.ndarray, np.ndarray]:
        if len(vals) <= width:
            return vals, ids
        keep = np.argpartition(vals, len(vals) - width)[len(vals) - width :]
        return vals[keep], ids[keep]

    def _canonical_one(self, w, vals, ids, tol, k, width):
        """One-row twin of :meth:`_canonical_many` (same result, less overhead)."""
        finite = np.isfinite(vals)
        count = int(finite.sum())
        kth = float(-np.partition(-vals, k - 1)[k - 1]) if count >= k else -np.inf
        cand = ids[finite & (vals >= kth - tol)]
        s64 = exact_scores(w, self._vec[cand])
        order = np.lexsort((self._rank_of_internal[cand], -s64))
        top = cand[order[:k]]
        kth64 = float(s64[order[k - 1]]) if len(order) >= k else -np.inf
        overflow = len(vals) == width and count == width and float(vals.min()) >= kth - tol
        return top, kth64, overflow

    def _search_one(self, w: np.ndarray, excl: np.ndarray, k: int) -> np.ndarray:
        """Top-k index positions for one vector; ``excl`` sorted unique index positions."""
        index = self._ensure_index()
        w = np.ascontiguousarray(w, dtype=np.float32)
        width = k + _SLACK
        tol = self._tol_one(w)
        bound, estimate = index.bounds(w[None, :])
        bound, estimate = bound[0], estimate[0]
        nc = index.n_clusters
        p = min(self.probe, nc)
        probe = np.argpartition(estimate, nc - p)[nc - p :] if p < nc else np.arange(nc)
        vals, ids = self._keep_best(*self._scan_one(w, probe, excl), width)
        if self.candidates is None:
            finite = vals[np.isfinite(vals)]
            theta = float(-np.partition(-finite, k - 1)[k - 1]) if len(finite) >= k else -np.inf
            theta -= tol
        else:
            theta = self._canonical_one(w, vals, ids, tol, k, width)[1] - tol
        need = bound >= theta - tol
        need[probe] = False
        clusters = np.flatnonzero(need)
        if self.candidates is not None and len(clusters):
            zeros = np.zeros(len(clusters), dtype=np.int64)
            clusters = self._budget_cut(zeros, clusters, bound[clusters])[1]
        if len(clusters):
            more_vals, more_ids = self._scan_one(w, clusters, excl)
            vals, ids = self._keep_best(
                np.concatenate([vals, more_vals]), np.concatenate([ids, more_ids]), width
            )
        top, _, overflow = self._canonical_one(w, vals, ids, tol, k, width)
        if overflow:  # near-ties beyond the buffer: score everything
            return self._exact_internal(w, excl, k)
        return top

    def _exact_internal(self, w: np.ndarray, excl: np.ndarray, k: int) -> np.ndarray:
        """Brute-force canonical top-k over every available item (index positions)."""
        self._ensure_index()
        w = np.asarray(w, dtype=np.float32)
        scores = self._vec @ w
        scores[excl] = -np.inf
        tol = self._tol_one(w)
        ids = np.arange(len(scores))
        return self._canonical_one(w, scores, ids, tol, k, len(scores) + 1)[0]

    # ------------------------------------------------------------------ model top-k, public

    def _model_one(self, w: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
        """Served model top-k bundle positions for one vector (fewer if fewer are allowed)."""
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        if self._constant:  # all scores equal: the canonical order is the popularity order
            return self._popular[~np.isin(self._popular, exclude)][:k]
        self._ensure_index()
        internal = self._internal[exclude] if len(exclude) else np.zeros(0, dtype=np.int64)
        excl = np.unique(internal[internal >= 0])
        return self._items[self._search_one(w, excl, k)]

    def _model_many(self, w, excl_rows, excl_items, k) -> np.ndarray:
        """Served model top-k bundle positions per row (n x k, -1 padded)."""
        n = len(w)
        if k <= 0 or n == 0:
            return np.full((n, max(k, 0)), -1, dtype=np.int64)
        if self._constant:
            out = np.full((n, k), -1, dtype=np.int64)
            for i in range(n):
                picks = self._model_one(w[i], excl_items[excl_rows == i], k)
                out[i, : len(picks)] = picks
            return out
        self._ensure_index()
        internal = self._internal[excl_items]
        ok = internal >= 0
        out = self._search_many(w, (excl_rows[ok], internal[ok]), k)
        return np.where(out >= 0, self._items[np.maximum(out, 0)], -1)

    def top_k(self, user_vector: np.ndarray, k: int, exclude: Sequence[int] = ()) -> np.ndarray:
        """The served model ranking of one vector (the fast path).

        Parameters
        ----------
        user_vector : numpy.ndarray
            (d + 1,) vector in the bundle's space.
        k : int
            Number of items.
        exclude : sequence of int
            Item *positions* (in ``bundle.item_ids``) to leave out.

        Returns
        -------
        numpy.ndarray
            Item positions, best first (fewer than ``k`` when fewer are allowed).
        """
        return self._model_one(np.asarray(user_vector), np.asarray(exclude, dtype=np.int64), k)

    def exact_top_k(
        self, user_vector: np.ndarray, k: int, exclude: Sequence[int] = ()
    ) -> np.ndarray:
        """Reference for :meth:`top_k`: scores every available item (slow; for measuring)."""
        positions = np.asarray(exclude, dtype=np.int64)
        if self._constant or k <= 0:
            return self._model_one(np.asarray(user_vector), positions, k)
        self._ensure_index()
        internal = self._internal[positions] if len(positions) else positions
        excl = np.unique(internal[internal >= 0])
        return self._items[self._exact_internal(np.asarray(user_vector), excl, k)]

    # ------------------------------------------------------------------ policies

    def _policy_shape(self, policy: str, k: int) -> tuple[int, bool]:
        """(leading recent slots, use model scores) of a policy.

        A constant model (e.g. a baseline's zero vectors) ranks exactly like the popular
        padding, which then also explains its items honestly.
        """
        head, model = {
            "model": (0, True),
            "popular": (0, False),
            "recent": (k, False),
            "blend": (min(self.recent_slots, k), True),
        }[policy]
        return head, model and not self._constant

    def _rank_one(
        self,
        w: np.ndarray | None,
        hist: np.ndarray,
        bought: np.ndarray,
        k: int,
        head_slots: int,
        use_model: bool,
    ) -> tuple[list[int], list[int]]:
        """One visitor: (bundle positions, part codes 0 recent / 1 model / 2 popular).

        Same result as one row of :meth:`_rank_many`, with Python sets on short lists.
        """
        available = self.bundle.item_available
        banned = {int(i) for i in bought}
        chosen: list[int] = []
        parts: list[int] = []
        for item in hist.tolist():
            if len(chosen) >= min(head_slots, k):
                break
            if item not in banned and available[item]:
                chosen.append(item)
                parts.append(0)
                banned.add(item)
        if use_model and w is not None and len(chosen) < k:
            exclude = np.fromiter(banned, dtype=np.int64, count=len(banned))
            model = self._model_one(w, exclude, k)[: k - len(chosen)].tolist()
            chosen += model
            parts += [1] * len(model)
            banned.update(model)
        if len(chosen) < k:
            for item in self._popular[: k + len(banned)].tolist():
                if item not in banned:
                    chosen.append(item)
                    parts.append(2)
                    if len(chosen) == k:
                        break
        return chosen, parts

    def _rank_many(self, w, hist, bought, n, k, head_slots, use_model):
        """Vectorised :meth:`_rank_one` for n visitors; ``hist`` / ``bought`` are (row, pos)
        pairs in row order (history most recent first). Returns n x k positions (-1 padded)
        and, per row, how many come from the history and how many from the model."""
        n_items = self.bundle.n_items
        out = np.full((n, k), -1, dtype=np.int64)
        bought_keys = np.unique(bought[0] * n_items + bought[1])
        filled = np.zeros(n, dtype=np.int64)

        h_rows, h_items = hist
        allowed = self.bundle.item_available[h_items] & ~np.isin(
            h_rows * n_items + h_items, bought_keys
        )
        h_rows, h_items = h_rows[allowed], h_items[allowed]
        rank = rank_in_runs(h_rows)
        take = rank < min(head_slots, k)
        h_rows, h_items, rank = h_rows[take], h_items[take], rank[take]
        out[h_rows, rank] = h_items
        filled += np.bincount(h_rows, minlength=n)
        n_head = filled.copy()

        if use_model and w is not None and k > 0:
            excl_rows = np.concatenate([bought[0], h_rows])
            excl_items = np.concatenate([bought[1], h_items])
            model = self._model_many(w, excl_rows, excl_items, k)
            need = k - filled
            valid = (model >= 0) & (np.arange(k)[None, :] < need[:, None])
            r, c = np.nonzero(valid)
            out[r, filled[r] + c] = model[r, c]
            filled += valid.sum(axis=1)
        n_model = filled - n_head

        # pad with popular items not bought and not already chosen
        taken_r, taken_c = np.nonzero(out >= 0)
        ex_keys = np.unique(np.r_[bought_keys, taken_r * n_items + out[taken_r, taken_c]])
        per_row = np.bincount(ex_keys // n_items, minlength=n)
        width = min(len(self._popular), k + int(per_row.max(initial=0)))
        cand = np.broadcast_to(self._popular[:width], (n, width))
        free = ~np.isin(np.arange(n)[:, None] * n_items + cand, ex_keys)
        order = np.cumsum(free, axis=1) - 1
        pick = free & (order < (k - filled)[:, None])
        r, c = np.nonzero(pick)
        out[r, filled[r] + order[r, c]] = cand[r, c]
        return out, n_head, n_model

    def recommend(
        self,
        user_id: int,
        k: int = 5,
        session_items: Sequence[int] = (),
        session_bought: Sequence[int] = (),
    ) -> Recommendation:
        """Top-``k`` items for one visitor.

        Parameters
        ----------
        user_id : int
            Visitor id; ids missing from the bundle are cold visitors.
        k : int
            Number of items (>= 0).
        session_items : sequence of int
            Item ids the visitor interacted with online since the bundle was built, in the
            order the events happened (oldest first). For a known visitor they go in front
            of the stored history; for an unknown one they drive the fold-in. Unknown item
            ids are ignored.
        session_bought : sequence of int
            Item ids bought online: never recommended.

        Returns
        -------
        Recommendation
            ``source`` is the policy for a known visitor; for an unknown one with known
            session items ``"fold_in"`` (policies model / blend) or the policy name (recent /
            popular); ``"popular"`` otherwise.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        b = self.bundle
        user = int(b.user_ids.searchsorted(user_id))
        if user >= b.n_users or b.user_ids[user] != user_id:
            user = -1
        if len(session_items) or len(session_bought):
            return self._recommend_live(user_id, user, k, session_items, session_bought)
        top = self._top
        if top is not None and user >= 0 and k <= top.shape[1] and top[user, 0] >= 0:
            return self._explain(user_id, user, k)
        if user >= 0:
            return self._recommend_live(user_id, user, k, (), ())
        # an unknown visitor without session: the answer depends on nothing but k (most
        # traffic is such one-off visitors), computed once per k
        cold = self._cold.get(k)
        if cold is None:
            cold = self._cold[k] = self._recommend_live(user_id, user, k, (), ())
        return Recommendation(
            int(user_id), [*cold.item_ids], [*cold.scores], [*cold.reasons], cold.source
        )

    def _recommend_live(
        self,
        user_id: int,
        user: int,
        k: int,
        session_items: Sequence[int],
        session_bought: Sequence[int],
    ) -> Recommendation:
        """:meth:`recommend` ranked now; ``user`` is the bundle position (-1: unknown)."""
        b = self.bundle
        stored = b.history(user).astype(np.int64) if user >= 0 else _EMPTY
        bought = b.bought(user).astype(np.int64) if user >= 0 else _EMPTY
        sess = _EMPTY
        if len(session_items):
            sess = index_of(b.item_ids, np.asarray(session_items, dtype=np.int64)[::-1])
            sess = sess[sess >= 0]
        hist = stored
        if len(sess):
            hist = np.concatenate([sess, stored])
            _, first = np.unique(hist, return_index=True)
            hist = hist[np.sort(first)]  # dedup, most recent first
        if len(session_bought):
            sold = index_of(b.item_ids, np.asarray(session_bought, dtype=np.int64))
            bought = np.concatenate([bought, sold[sold >= 0]])

        w: np.ndarray | None
        if user >= 0:
            source, w = self.policy, b.user_vectors[user]
            head, use_model = self._policy_shape(self.policy, k)
        elif len(sess):
            fold = self.policy in ("model", "blend")
            source = "fold_in" if fold else self.policy
            w = np.append(b.item_vectors[sess, :-1].mean(axis=0), 1.0) if fold else None
            head = min(self.recent_slots, k) if fold else (k if self.policy == "recent" else 0)
            use_model = fold and not self._constant
        else:
            source, w, head, use_model = "popular", None, 0, False
        if w is not None:
            w = w.astype(np.float32)

        positions, parts = self._rank_one(w, hist, bought, k, head, use_model)
        pos = np.asarray(positions, dtype=np.int64)
        if w is None:  # cold: the score of an all-zero embedding, i.e. the item bias
            w = np.zeros(b.item_vectors.shape[1], dtype=np.float32)
            w[-1] = 1.0
        scores = exact_scores(w, b.item_vectors[pos])
        seen = set(b.item_category[hist].tolist()) - {-1} if 2 in parts else set()
        categories = b.item_category[pos].tolist()
        model_reason = REASON_FOR_YOU if user >= 0 else REASON_SIMILAR
        reasons = [
            REASON_VIEWED
            if part == 0
            else model_reason
            if part == 1
            else REASON_CATEGORY
            if category in seen
            else REASON_POPULAR
            for part, category in zip(parts, categories, strict=True)
        ]
        return Recommendation(
            user_id=int(user_id),
            item_ids=b.item_ids[pos].tolist(),
            scores=scores.tolist(),
            reasons=reasons,
            source=source,
        )

    def _explain(self, user_id: int, user: int, k: int) -> Recommendation:
        """The precomputed answer of a known visitor: history items first, then the model's."""
        b = self.bundle
        assert self._top is not None and b.top_head is not None and b.top_scores is not None
        n_head = min(int(b.top_head[user]), k)
        return Recommendation(
            user_id=int(user_id),
            item_ids=b.item_ids[self._top[user, :k]].tolist(),
            scores=b.top_scores[user, :k].tolist(),
            reasons=[REASON_VIEWED] * n_head + [REASON_FOR_YOU] * (k - n_head),
            source=self.policy,
        )

    def recommend_batch(self, user_ids: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
        """Top-``k`` item ids for many visitors without session: the ranking of
        :meth:`recommend`, computed with matrix products over chunks of visitors.

        Parameters
        ----------
        user_ids : numpy.ndarray
            Visitor ids (unknown ones get the popular fallback).
        k : int
            Items per visitor.
        chunk : int
            Visitors ranked together (peak memory ~ ``chunk * n_clusters * 40`` bytes, about
            200 MB for 2048 visitors at full scale).

        Returns
        -------
        numpy.ndarray
            int64 (n x k) item ids, -1 where fewer than ``k`` items are allowed.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        with _single_threaded_blas():
            return self._recommend_batch(np.asarray(user_ids, dtype=np.int64).ravel(), k, chunk)

    def _recommend_batch(self, user_ids: np.ndarray, k: int, chunk: int) -> np.ndarray:
        b = self.bundle
        users = index_of(b.user_ids, user_ids)
        result = np.full((len(users), k), -1, dtype=np.int64)
        cold = np.flatnonzero(users < 0)
        pad = b.item_ids[self._popular[:k]]
        result[cold[:, None], np.arange(len(pad))[None, :]] = pad
        warm = np.flatnonzero(users >= 0)
        head, use_model = self._policy_shape(self.policy, k)
        for s in range(0, len(warm), chunk):
            rows = warm[s : s + chunk]
            u = users[rows]
            hist = _csr_rows(b.history_indptr, b.history_items, u)
            bought = _csr_rows(b.bought_indptr, b.bought_items, u)
            out, _, _ = self._rank_many(b.user_vectors[u], hist, bought, len(u), k, head, use_model)
            result[rows] = np.where(out >= 0, b.item_ids[np.maximum(out, 0)], -1)
        return result

    def precompute(
        self, k: int = 10, chunk: int = 2048
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The served answer of every known visitor without session, for the bundle.

        Returns ``(top_items, top_head, top_scores)`` for :class:`~recsys.bundle.Bundle`:
        int32 (n_users, k) item positions, int8 (n_users,) leading history items and float64
        (n_users, k) scores (the bits :meth:`recommend` computes). Rows the model cannot fill
        (popular padding) are -1 (scores NaN): those visitors are ranked live. Any
        ``k' <= k`` answer is a prefix (the head takes ``min(recent_slots, k')`` history
        items, the model ranks the rest canonically), so one table serves every request size
        up to ``k``.
        """
        b = self.bundle
        top = np.full((b.n_users, k), -1, dtype=np.int32)
        heads = np.zeros(b.n_users, dtype=np.int8)
        scores = np.full((b.n_users, k), np.nan)
        head, use_model = self._policy_shape(self.policy, k)
        with _single_threaded_blas():
            for s in range(0, b.n_users, chunk):
                u = np.arange(s, min(s + chunk, b.n_users))
                hist = _csr_rows(b.history_indptr, b.history_items, u)
                bought = _csr_rows(b.bought_indptr, b.bought_items, u)
                out, n_head, n_model = self._rank_many(
                    b.user_vectors[u], hist, bought, len(u), k, head, use_model
                )
                full = n_head + n_model == k
                top[u[full]] = out[full]
                heads[u] = np.minimum(n_head, 127)
                w = b.user_vectors[u[full], None, :]
                scores[u[full]] = exact_scores(w, b.item_vectors[out[full]])
        return top, heads, scores

    def attach_precomputed(self, k: int = 10) -> None:
        """Compute :meth:`precompute` into the bundle and record what it is valid for."""
        b = self.bundle
        b.top_items, b.top_head, b.top_scores = self.precompute(k)
        b.metadata["precomputed"] = {"policy": self.policy, "recent_slots": self.recent_slots}
        self._top = self._usable_top()

    def _usable_top(self) -> np.ndarray | None:
        """The bundle's precomputed answers if they were made for this exact ranking."""
        b = self.bundle
        made_for = {"policy": self.policy, "recent_slots": self.recent_slots}
        usable = b.metadata.get("precomputed") == made_for and self.candidates is None
        complete = b.top_items is not None and b.top_head is not None and b.top_scores is not None
        return b.top_items if usable and complete else None


def _single_threaded_blas() -> AbstractContextManager:
    """One BLAS thread while batch ranking: its many small products only lose from
    threading (measured 1.5-3x faster on 2 cores). A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional dependency
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
