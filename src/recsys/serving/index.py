"""Cluster index over item vectors with per-cluster score upper bounds (see recsys.serving)."""

from __future__ import annotations

import math

import numpy as np

from recsys.arrays import rank_in_runs

#: grid points of the per-cluster bound table
_GRID = 33


def tree_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis in a fixed pairwise order (same bits whatever the batch shape)."""
    width = x.shape[-1]
    if width == 0:
        return np.zeros(x.shape[:-1], dtype=x.dtype)
    power = 1 << (width.bit_length() - 1)  # largest power of two <= width
    head = x[..., :power]
    while head.shape[-1] > 1:
        half = head.shape[-1] // 2
        head = head[..., :half] + head[..., half:]
    total = head[..., 0]
    return total + tree_sum(x[..., power:]) if power < width else total


def exact_scores(w: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Dot products of ``w`` (one vector or a batch) with ``vectors`` in float64, summed in
    :func:`tree_sum` order: the canonical scores, the same bits whatever the batch shape."""
    return tree_sum(w.astype(np.float64) * vectors.astype(np.float64))


def _nearest(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center of every point and its squared Euclidean distance minus ``|point|^2``,
    in blocks to bound memory (a block's matrix is built in place)."""
    sq = (centers * centers).sum(axis=1)
    index = np.empty(len(points), dtype=np.int64)
    value = np.empty(len(points), dtype=np.result_type(points, centers))
    for s in range(0, len(points), 16384):
        gap = points[s : s + 16384] @ centers.T
        gap *= -2
        gap += sq
        index[s : s + 16384] = best = gap.argmin(axis=1)
        value[s : s + 16384] = gap[np.arange(len(best)), best]
    return index, value


def _centroids(points: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of each label's points (zeros for empty labels)."""
    counts = np.bincount(labels, minlength=k)
    used = np.flatnonzero(counts)
    centers = np.zeros((k, points.shape[1]), dtype=np.float32)
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.cumsum(counts[used])[:-1]]
    centers[used] = np.add.reduceat(points[order], starts, axis=0) / counts[used, None]
    return centers


def _kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd k-means trained on a sample, then one assignment of every point.

    Returns (labels, centers).
    """
    n = len(x)
    if k <= 1 or n <= k:
        labels = np.zeros(n, dtype=np.int64) if k <= 1 else np.arange(n, dtype=np.int64)
        return labels, _centroids(x, labels, int(labels.max(initial=0)) + 1)
    sample = x[rng.choice(n, size=min(n, 64 * k), replace=False)]
    centers = sample[rng.choice(len(sample), size=k, replace=False)].copy()
    for _ in range(iters):
        labels = _nearest(sample, centers)[0]
        fresh = _centroids(sample, labels, k)
        used = np.bincount(labels, minlength=k) > 0
        centers[used] = fresh[used]
    return _nearest(x, centers)[0], centers


def _cluster_labels(emb: np.ndarray, leaf_size: int, rng: np.random.Generator) -> np.ndarray:
    """About ``len(emb) / leaf_size`` clusters of nearby embeddings, cheaply.

    Two-level k-means (sqrt(#clusters) groups, then clusters inside each group), then one
    reassignment of every item to the nearest cluster among those of its 3 nearest groups:
    items near group borders otherwise inflate cluster radii, which loosens every bound.
    """
    n = len(emb)
    n_clusters = max(1, n // max(1, leaf_size))
    top, top_centers = _kmeans(emb, int(math.sqrt(n_clusters)), rng)
    labels = np.empty(n, dtype=np.int64)
    group_of: list[np.ndarray] = []
    offset = 0
    for g in range(len(top_centers)):
        members = np.flatnonzero(top == g)
        if len(members) == 0:
            continue
        sub, _ = _kmeans(emb[members], max(1, round(len(members) / max(1, leaf_size))), rng)
        labels[members] = offset + sub
        group_of.append(np.full(int(sub.max()) + 1, g))
        offset += int(sub.max()) + 1
    groups = np.concatenate(group_of)
    near = min(3, len(top_centers))
    if near > 1:
        centers = _centroids(emb, labels, offset)
        counts = np.bincount(labels, minlength=offset)
        gap = emb @ top_centers.T  # squared distance minus |e|^2, built in place
        gap *= -2
        gap += (top_centers * top_centers).sum(axis=1)
        nearest = np.argpartition(gap, near - 1, axis=1)[:, :near].copy()
        del gap
        best = np.full(n, np.inf)
        fresh = labels.copy()
        for g in range(len(top_centers)):
            items = np.flatnonzero((nearest == g).any(axis=1))
            mine = np.flatnonzero((groups == g) & (counts > 0))
            if len(items) == 0 or len(mine) == 0:
                continue
            pick, value = _nearest(emb[items], centers[mine])
            better = value < best[items]
            best[items[better]] = value[better]
            fresh[items[better]] = mine[pick[better]]
        labels = fresh
    return np.unique(labels, return_inverse=True)[1]


# ---------------------------------------------------------------------------- cluster index


class ClusterIndex:
    """Items grouped into clusters, with per-cluster score upper bounds (see module doc).

    ``order`` maps index positions to the caller's item rows; cluster ``c`` holds index
    positions ``starts[c]:starts[c + 1]``.
    """

    def __init__(self, vectors: np.ndarray, leaf_size: int, seed: int = 0) -> None:
        emb = np.ascontiguousarray(vectors[:, :-1], dtype=np.float32)
        bias = vectors[:, -1].astype(np.float64)
        rng = np.random.default_rng(seed)
        labels = _cluster_labels(emb, leaf_size, rng)
        # split clusters into pieces of <= leaf_size items by descending bias: pieces of
        # low-bias items get lower bounds, and no piece is expensive to scan
        order = np.lexsort((-bias, labels))
        sorted_labels = labels[order]
        rank = rank_in_runs(sorted_labels)
        pieces = np.empty_like(labels)
        pieces[order] = sorted_labels * (len(labels) + 1) + rank // max(1, leaf_size)
        labels = np.unique(pieces, return_inverse=True)[1]
        n_clusters = int(labels.max(initial=-1)) + 1
        self.order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=n_clusters)
        self.starts = np.r_[0, np.cumsum(counts)].astype(np.int64)
        self.sizes = counts.astype(np.int64)
        self.n_clusters = n_clusters
        emb_sorted = emb[self.order].astype(np.float64)
        bias_sorted = bias[self.order]
        self.t_max = float(max(np.linalg.norm(emb, axis=1).max(initial=0.0), 1e-6))
        self.dt = self.t_max / (_GRID - 1)
        centroids, self.table, self.slope, self.radius = self._envelope(
            emb_sorted, bias_sorted, self.starts
        )
        # transposed: ``W @ centroids_t`` is fast for 2 rows as well as for many
        self.centroids_t = np.ascontiguousarray(centroids.T)
        head = self.starts[:-1]
        self.bias_max = np.maximum.reduceat(bias_sorted, head).astype(np.float32)
        self.bias_min = np.minimum.reduceat(bias_sorted, head).astype(np.float32)

    def _envelope(
        self, emb: np.ndarray, bias: np.ndarray, starts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Centroids, bound table, its slopes and radii of consecutive item blocks.

        ``table[g, c]`` = max over items of block c of ``(g * dt) * |e - m_c| + bias``, a
        convex function of ``t = g * dt``, rounded up so float32 keeps it an upper bound.
        """
        head = starts[:-1]
        counts = np.diff(starts)
        owner = np.repeat(np.arange(len(counts)), counts)
        centroids = np.add.reduceat(emb, head, axis=0) / counts[:, None]
        offsets = emb - centroids[owner]
        dist = np.sqrt(np.square(offsets, out=offsets).sum(axis=1))
        del offsets
        table = np.stack(
            [np.maximum.reduceat(g * self.dt * dist + bias, head) for g in range(_GRID)]
        )
        table = (table + 1e-6 * (np.abs(table) + 1)).astype(np.float32)
        radius = np.maximum.reduceat(dist, head).astype(np.float32)
        return centroids.astype(np.float32), table, np.diff(table, axis=0), radius

    def bounds(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds and estimates (n_users x n_clusters, float32) of clusters' best scores.

        The estimate ``u.m_c + max bias`` ranks clusters for the probe far better than the
        (loose) bound does. Rounding errors are far below the search's tolerance.
        """
        emb, last = w[:, :-1], w[:, -1]
        # a 1-row product goes through a different BLAS kernel (gemv): pad to 2 rows so that a
        # single request gets bit-identical bounds to the same user inside a batch
        padded = np.vstack([emb, emb]) if len(emb) == 1 else emb
        dot = (padded @ self.centroids_t)[: len(emb)]
        t = np.sqrt(tree_sum(emb * emb))  # same bits for a row alone or in a batch
        pos = np.minimum(t / np.float32(self.dt), np.float32(_GRID - 1))
        g = np.minimum(pos.astype(np.int64), _GRID - 2)
        env = self.slope[g]
        env *= (pos - g.astype(np.float32))[:, None]
        env += self.table[g]  # chord of a convex function: above it
        beyond = np.maximum(t - np.float32(self.t_max), np.float32(0))
        if beyond.any():  # past the grid the slope is at most the cluster radius
            env += beyond[:, None] * self.radius
        unit = last == 1.0
        if not unit.all():  # the bias is not weighted by 1: the looser ball bound
            weight = last[:, None]
            loose = t[:, None] * self.radius + np.where(
                weight >= 0, weight * self.bias_max, weight * self.bias_min
            )
            env = np.where(unit[:, None], env, loose)
        estimate = dot + self.bias_max
        dot += env
        return dot, estimate
