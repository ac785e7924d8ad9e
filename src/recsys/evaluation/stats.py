"""Is a difference between two policies more than noise? A paired bootstrap over visitors.

Two policies scored on the same holdout visitors give paired per-visitor values (e.g. each
visitor's precision@5). Resampling visitors with replacement and recomputing the mean
difference gives its sampling distribution; the gate promotes only when the lower end of the
95% interval is above zero (or above a stated minimum lift).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Difference:
    """Mean of ``a - b`` over paired visitors with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    #: share of resamples where a does not beat b (a one-sided bootstrap p-value)
    p_not_better: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}] (n={self.n})"


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = 2_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """Bootstrap interval of ``mean(a - b)`` over paired per-visitor values.

    Parameters
    ----------
    a, b : numpy.ndarray
        Values of the same visitors, in the same order, under two policies.
    n_resamples : int
        Bootstrap resamples.
    confidence : float
        Two-sided coverage of the interval (percentile method).
    seed : int
        Seed of the resampling (the same seed gives the same interval).

    Returns
    -------
    Difference

    Examples
    --------
    A policy that is exactly 0.1 better on every visitor has a zero-width interval:

    >>> d = paired_bootstrap(np.full(50, 0.3), np.full(50, 0.2), n_resamples=200)
    >>> round(d.mean, 6), round(d.low, 6), round(d.high, 6), d.p_not_better
    (0.1, 0.1, 0.1, 0.0)

    Equal policies: the interval straddles zero.

    >>> rng = np.random.default_rng(1)
    >>> x = rng.random(400)
    >>> d = paired_bootstrap(x, rng.permutation(x))
    >>> d.low < 0 < d.high
    True
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired values must be two 1-d arrays of one length, got {a.shape}, {b.shape}"
        )
    diff = a - b
    n = len(diff)
    if n == 0:
        nan = float("nan")
        return Difference(nan, nan, nan, nan, 0)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    # in blocks: bounded memory for large holdouts
    block = max(1, 2_000_000 // n)
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        means[start : start + size] = diff[rng.integers(0, n, size=(size, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Difference(
        mean=float(diff.mean()),
        low=float(low),
        high=float(high),
        p_not_better=float((means <= 0).mean()),
        n=n,
    )
