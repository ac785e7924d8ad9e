"""Statistics of an A/B test, per metric: intervals, tests, sample-ratio check, MDE, CUPED.

The unit of randomisation is the visitor, so every variance is computed over visitors:

* proportions (add-to-cart conversion) get Wilson intervals and the pooled two-proportion
  z-test;
* ratio metrics (items added per adding visitor, cart-to-purchase conversion, the
  recommended-item share) are ratios of two per-visitor sums whose denominator is random:
  their variance comes from the delta method, ``Var(X̄/Ȳ) ≈ (σx² − 2Rσxy + R²σy²) / (n μy²)``,
  and two variants are compared with a z-test on that variance (a naive t-test over the
  adding visitors would ignore that the set of adders itself is random);
* the lift ``t/c − 1`` gets its interval from the delta method on the log of the ratio of the
  two independent estimates, ``Var(log t/c) ≈ Var(t)/t² + Var(c)/c²`` (asymmetric, never
  below −100%);
* the sample-ratio-mismatch check is Pearson's chi-square of visitor counts against the
  configured weights;
* the minimum detectable effect is the difference a two-sided test at level α detects with the
  stated power for the current sample sizes and the control's variance;
* CUPED (Deng et al. 2013) removes from each visitor's outcome the part its pre-experiment
  covariate predicts, ``y − θ(x − x̄)`` with ``θ = cov(x, y) / var(x)`` pooled over variants;
  the variance reduction achieved is ``1 − var(y_adj)/var(y)`` (= the squared correlation).

Everything is numpy/scipy and vectorised; sample variances use ``ddof=1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

#: two-sided level and power of the tests and of the MDE
ALPHA: Final = 0.05
POWER: Final = 0.80
#: below this p-value the sample-ratio check raises its warning
SRM_ALPHA: Final = 0.001

_NAN = float("nan")


def z_critical(confidence: float = 1 - ALPHA) -> float:
    """The two-sided normal quantile of a confidence level.

    >>> round(z_critical(0.95), 6)
    1.959964
    """
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _p_value(z: float) -> float:
    return float(2 * stats.norm.sf(abs(z))) if math.isfinite(z) else _NAN


def _div(a: float, b: float) -> float:
    return a / b if b else _NAN


def wilson_interval(successes: int, n: int, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    Examples
    --------
    10 of 100 (the textbook example: 0.0552 .. 0.1744):

    >>> tuple(round(v, 4) for v in wilson_interval(10, 100))
    (0.0552, 0.1744)

    It stays inside [0, 1], also with no successes:

    >>> tuple(round(v, 4) for v in wilson_interval(0, 20))
    (0.0, 0.1611)
    """
    if n <= 0:
        return _NAN, _NAN
    z = z_critical(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class Comparison:
    """A treatment against the control on one metric.

    ``diff = treatment − control`` and ``lift = treatment / control − 1``, each with its
    interval; ``z`` and ``p_value`` are the test's (two-sided).
    """

    control: float
    treatment: float
    diff: float
    diff_low: float
    diff_high: float
    lift: float
    lift_low: float
    lift_high: float
    z: float
    p_value: float

    def significant(self, alpha: float = ALPHA) -> bool:
        """Whether the test rejects "no difference" at level ``alpha``."""
        return bool(self.p_value < alpha)


def _comparison(
    c: float, t: float, var_c: float, var_t: float, z: float, confidence: float
) -> Comparison:
    """Intervals of the difference and of the lift from the two estimates' variances."""
    q = z_critical(confidence)
    diff, se = t - c, math.sqrt(var_c + var_t)
    lift = _div(t, c) - 1
    # delta method on log(t/c): the interval of a ratio of estimates is skewed, symmetric only
    # on the log scale
    se_log = math.sqrt(var_t / t**2 + var_c / c**2) if c > 0 and t > 0 else _NAN
    return Comparison(
        control=c,
        treatment=t,
        diff=diff,
        diff_low=diff - q * se,
        diff_high=diff + q * se,
        lift=lift,
        lift_low=(lift + 1) * math.exp(-q * se_log) - 1,
        lift_high=(lift + 1) * math.exp(q * se_log) - 1,
        z=z,
        p_value=_p_value(z),
    )


def proportion_test(
    x_c: int, n_c: int, x_t: int, n_t: int, confidence: float = 1 - ALPHA
) -> Comparison:
    """Two-proportion z-test (pooled variance under the null); unpooled interval of the
    difference, delta-method interval of the lift.

    Examples
    --------
    50 of 500 against 70 of 500: pooled p = 0.12, se = sqrt(0.12 * 0.88 * (2/500)) = 0.020553,
    z = 0.04 / 0.020553 = 1.9462, p = 0.0516; the difference's interval uses
    sqrt(0.1 * 0.9/500 + 0.14 * 0.86/500) = 0.020513 (0.04 ± 0.040206), the lift is
    0.14/0.1 - 1 = 0.4 and its interval 1.4 · exp(±1.96 · sqrt(0.86/70 + 0.9/50)) - 1, with
    sqrt(0.012286 + 0.018) = 0.174029: 1.4 · (0.71098, 1.40650) - 1 = (-0.0046, 0.9691):

    >>> r = proportion_test(50, 500, 70, 500)
    >>> round(r.z, 4), round(r.p_value, 4), round(r.lift, 4)
    (1.9462, 0.0516, 0.4)
    >>> round(r.diff_low, 4), round(r.diff_high, 4)
    (-0.0002, 0.0802)
    >>> round(r.lift_low, 4), round(r.lift_high, 4)
    (-0.0046, 0.9691)
    """
    if n_c <= 0 or n_t <= 0:
        return _comparison(_div(x_c, n_c), _div(x_t, n_t), _NAN, _NAN, _NAN, confidence)
    p_c, p_t = x_c / n_c, x_t / n_t
    pooled = (x_c + x_t) / (n_c + n_t)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    z = _div(p_t - p_c, se0)
    return _comparison(p_c, p_t, p_c * (1 - p_c) / n_c, p_t * (1 - p_t) / n_t, z, confidence)


def ratio_estimate(numerator: ArrayLike, denominator: ArrayLike) -> tuple[float, float]:
    """``Σ numerator / Σ denominator`` over visitors and its delta-method variance.

    Examples
    --------
    Four visitors adding 1, 2, 0, 3 items, three of whom added: the ratio is 6/3 = 2. With
    means 1.5 and 0.75, sample variances 5/3 and 1/4 and covariance 1/2, the variance is
    (5/3 - 2·2·1/2 + 2²·1/4) / (4 · 0.75²) = (2/3) / 2.25 = 0.2963:

    >>> ratio, variance = ratio_estimate([1, 2, 0, 3], [1, 1, 0, 1])
    >>> ratio, round(variance, 4)
    (2.0, 0.2963)
    """
    x = np.asarray(numerator, dtype=np.float64)
    y = np.asarray(denominator, dtype=np.float64)
    n = len(x)
    if n < 2 or y.sum() == 0:
        return (_div(float(x.sum()), float(y.sum())) if n else _NAN), _NAN
    mx, my = x.mean(), y.mean()
    ratio = float(mx / my)
    cov = np.cov(x, y, ddof=1)
    variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (n * my**2)
    return ratio, float(max(variance, 0.0))


def ratio_test(
    num_c: ArrayLike,
    den_c: ArrayLike,
    num_t: ArrayLike,
    den_t: ArrayLike,
    confidence: float = 1 - ALPHA,
) -> Comparison:
    """Delta-method z-test of two ratio metrics (per-visitor numerators and denominators).

    Examples
    --------
    Control ratio 2 (variance 0.2963, as in :func:`ratio_estimate`); treatment visitors add
    2, 4, 0, 6 items: ratio 4, variance 4 x 0.2963 = 1.1852; z = 2 / sqrt(1.4815) = 1.6432:

    >>> r = ratio_test([1, 2, 0, 3], [1, 1, 0, 1], [2, 4, 0, 6], [1, 1, 0, 1])
    >>> r.control, r.treatment, round(r.z, 4), round(r.p_value, 4)
    (2.0, 4.0, 1.6432, 0.1003)
    """
    c, var_c = ratio_estimate(num_c, den_c)
    t, var_t = ratio_estimate(num_t, den_t)
    z = _div(t - c, math.sqrt(var_c + var_t)) if math.isfinite(var_c + var_t) else _NAN
    return _comparison(c, t, var_c, var_t, z, confidence)


def mean_test(y_c: ArrayLike, y_t: ArrayLike, confidence: float = 1 - ALPHA) -> Comparison:
    """Welch z-test of two means (large samples), e.g. of CUPED-adjusted outcomes.

    Means 0.5 and 0.75, variances of the means (1/3)/4 and (1/4)/4: z = 0.25 / sqrt(0.14583)
    = 0.6547:

    >>> r = mean_test([0, 1, 0, 1], [1, 1, 0, 1])
    >>> r.diff, round(r.z, 4)
    (0.25, 0.6547)
    """
    a = np.asarray(y_c, dtype=np.float64)
    b = np.asarray(y_t, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return _comparison(_NAN, _NAN, _NAN, _NAN, _NAN, confidence)
    var_c, var_t = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    z = _div(float(b.mean() - a.mean()), math.sqrt(var_c + var_t))
    return _comparison(float(a.mean()), float(b.mean()), var_c, var_t, z, confidence)


@dataclass(frozen=True)
class SampleRatio:
    """Pearson's chi-square of the visitors per variant against the configured weights."""

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float

    @property
    def mismatch(self) -> bool:
        """True below :data:`SRM_ALPHA`: the split is broken, the results are not to be trusted."""
        return bool(self.p_value < SRM_ALPHA)


def srm_test(observed: Sequence[int], weights: Sequence[float]) -> SampleRatio:
    """Sample-ratio-mismatch check.

    Examples
    --------
    510 and 490 visitors for a 50/50 split: chi2 = 10²/500 + 10²/500 = 0.4, p = 0.527:

    >>> s = srm_test([510, 490], [1, 1])
    >>> round(s.chi2, 4), round(s.p_value, 3), s.mismatch
    (0.4, 0.527, False)
    >>> srm_test([600, 400], [1, 1]).mismatch
    True
    """
    counts = np.asarray(observed, dtype=np.float64)
    shares = np.asarray(weights, dtype=np.float64)
    shares = shares / shares.sum()
    expected = counts.sum() * shares
    keep = expected > 0  # a variant of weight 0 expects nobody
    if counts.sum() == 0 or keep.sum() < 2:
        return SampleRatio(tuple(map(int, counts)), tuple(expected), _NAN, _NAN)
    chi2 = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    p = float(stats.chi2.sf(chi2, keep.sum() - 1))
    return SampleRatio(tuple(map(int, counts)), tuple(map(float, expected)), chi2, p)


def mde(sd: float, n_c: int, n_t: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable absolute difference of means for per-visitor standard deviation ``sd``.

    ``(z_{1-α/2} + z_{power}) · sd · sqrt(1/n_c + 1/n_t)``. For a proportion ``sd`` is
    ``sqrt(p(1-p))``; for a ratio it is ``sqrt(n · Var(ratio))`` of the control.

    Examples
    --------
    p = 0.1 (sd 0.3), 1,000 visitors per variant: 2.8016 x 0.3 x 0.044721 = 0.037587:

    >>> round(mde(0.3, 1000, 1000), 6)
    0.037587
    """
    if n_c <= 0 or n_t <= 0 or not math.isfinite(sd):
        return _NAN
    factor = z_critical(1 - alpha) + float(stats.norm.ppf(power))
    return factor * sd * math.sqrt(1 / n_c + 1 / n_t)


@dataclass(frozen=True)
class Cuped:
    """The CUPED adjustment of one outcome by one pre-experiment covariate."""

    theta: float
    #: ``1 - var(adjusted) / var(outcome)``, over all visitors of the compared variants
    variance_reduction: float
    adjusted: NDArray[np.float64]


def cuped(y: ArrayLike, x: ArrayLike) -> Cuped:
    """Adjust outcomes ``y`` by covariate ``x``: ``y - θ (x - x̄)``, ``θ = cov(x, y) / var(x)``.

    Pass the visitors of every compared variant together (one pooled θ), then compare the
    adjusted outcomes per variant with :func:`mean_test`: the means keep their expected
    difference (x is independent of the assignment), the variance shrinks by the squared
    correlation of x and y.

    Examples
    --------
    Outcomes 0, 1, 1, 0, 1 and pre-experiment counts 0, 2, 1, 0, 2: cov = 0.5, var(x) = 1,
    θ = 0.5; adjusted 0.5, 0.5, 1, 0.5, 0.5, variance 0.05 against 0.3: a reduction of 5/6.

    >>> c = cuped([0, 1, 1, 0, 1], [0, 2, 1, 0, 2])
    >>> c.theta, c.adjusted.tolist(), round(c.variance_reduction, 4)
    (0.5, [0.5, 0.5, 1.0, 0.5, 0.5], 0.8333)
    """
    outcome = np.asarray(y, dtype=np.float64)
    covariate = np.asarray(x, dtype=np.float64)
    if len(outcome) < 2 or covariate.var() == 0 or outcome.var() == 0:
        return Cuped(0.0, 0.0, outcome.copy())
    cov = np.cov(covariate, outcome, ddof=1)
    theta = float(cov[0, 1] / cov[0, 0])
    adjusted = outcome - theta * (covariate - covariate.mean())
    reduction = 1 - adjusted.var(ddof=1) / outcome.var(ddof=1)
    return Cuped(theta, float(reduction), adjusted)
