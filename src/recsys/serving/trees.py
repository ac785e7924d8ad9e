"""A learned ranker as plain arrays: an ensemble of oblivious trees, evaluated with numpy.

CatBoost grows *oblivious* (symmetric) trees: every node of one depth level splits on the same
feature and border, so a tree is ``depth`` (feature, border) pairs and ``2**depth`` leaf
values, and the leaf of a row is the binary number of its ``depth`` comparisons. That makes
the whole ensemble one vectorised expression over (rows x trees x levels): scoring a few
hundred candidates costs tens of microseconds, and the service needs neither CatBoost nor a
pickle. :func:`recsys.models.ranker` exports the arrays; tests check they reproduce CatBoost's
own predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ObliviousTrees:
    """An oblivious tree ensemble.

    Attributes
    ----------
    features : numpy.ndarray
        int32 (n_trees, depth): the feature index each level of each tree splits on.
    borders : numpy.ndarray
        float32 (n_trees, depth): a row goes right (bit 1) where ``feature > border``; padding
        levels of shallower trees have border ``+inf`` (always bit 0).
    leaves : numpy.ndarray
        float64 (n_trees, 2**depth): leaf values, indexed by ``sum(bit_level << level)``.
    scale, bias : float
        ``score = scale * sum(leaf values) + bias``.

    Examples
    --------
    One tree of depth 1 (feature 0 > 0.5 adds 1) and one of depth 2 padded:

    >>> trees = ObliviousTrees(
    ...     features=np.array([[0, 0], [1, 0]], np.int32),
    ...     borders=np.array([[0.5, np.inf], [2.0, np.inf]], np.float32),
    ...     leaves=np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]]), scale=1.0, bias=0.0)
    >>> trees.predict(np.array([[1.0, 3.0], [0.0, 3.0], [0.0, 0.0]])).tolist()
    [11.0, 10.0, 0.0]
    """

    features: NDArray[np.int32]
    borders: NDArray[np.float32]
    leaves: NDArray[np.float64]
    scale: float = 1.0
    bias: float = 0.0

    @property
    def n_features(self) -> int:
        """Number of feature columns the ensemble reads (highest index + 1)."""
        return int(self.features.max(initial=-1)) + 1

    def predict(self, x: NDArray[np.floating]) -> NDArray[np.float64]:
        """Scores of the rows of ``x`` (n_rows x n_features), float64.

        Features are compared in float32, as CatBoost quantizes them, and leaf values are
        summed in tree order, so the scores equal CatBoost's to the last bit.
        """
        x32 = np.asarray(x, dtype=np.float32)
        n_trees, depth = self.features.shape
        bits = x32[:, self.features] > self.borders  # (rows, trees, levels)
        index = bits.astype(np.int64) @ (np.int64(1) << np.arange(depth, dtype=np.int64))
        values = self.leaves[np.arange(n_trees), index]  # (rows, trees)
        total = np.cumsum(values, axis=1)[:, -1] if n_trees else np.zeros(len(x32))
        return np.asarray(total * self.scale + self.bias, dtype=np.float64)
