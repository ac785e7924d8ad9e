"""Every statistic against hand-computed values, and the tests' calibration by simulation.

Golden values are worked out by hand in the comments (and in the functions' doctests).
The calibration runs vectorised simulations in process with fixed seeds: under A/A the share
of p < 0.05 is about 5%, and an injected effect equal to the reported MDE is detected in
about 80% of experiments (the MDE's promise).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.abtest import stats as S

pytestmark = pytest.mark.abtest

EXPERIMENTS = 400


def test_wilson_interval_golden() -> None:
    # 10/100: center (0.1 + 1.96²/200) / (1 + 1.96²/100) = 0.11920/1.03841 = 0.11479;
    # half 1.96·sqrt(0.0009 + 0.000096)/1.03841 = 0.05958 -> 0.0552 .. 0.1744
    low, high = S.wilson_interval(10, 100)
    assert (round(low, 4), round(high, 4)) == (0.0552, 0.1744)
    # all successes mirror no successes
    low0, high0 = S.wilson_interval(0, 20)
    low1, high1 = S.wilson_interval(20, 20)
    assert low0 == 0.0 and high1 == 1.0
    assert high0 == pytest.approx(1 - low1)
    assert all(math.isnan(v) for v in S.wilson_interval(0, 0))


def test_two_proportion_test_golden() -> None:
    # 50/500 vs 70/500: pooled 0.12, se0 = sqrt(0.12·0.88·0.004) = 0.0205524, z = 1.94625,
    # p = 2·(1 - Φ(1.94625)) = 0.05163
    r = S.proportion_test(50, 500, 70, 500)
    assert r.control == 0.1 and r.treatment == 0.14
    assert r.z == pytest.approx(1.94625, abs=1e-5)
    assert r.p_value == pytest.approx(0.05163, abs=1e-5)
    assert r.diff == pytest.approx(0.04)
    # unpooled se sqrt(0.00018 + 0.0002408) = 0.0205134
    assert r.diff_high - r.diff == pytest.approx(1.959964 * 0.0205134, abs=1e-6)
    assert not r.significant()
    assert S.proportion_test(50, 500, 80, 500).significant()


def test_delta_method_ratio_golden() -> None:
    # x = 1, 2, 0, 3; y = 1, 1, 0, 1: R = 2, var = (5/3 - 2·2·0.5 + 4·0.25) / (4·0.5625)
    ratio, variance = S.ratio_estimate([1, 2, 0, 3], [1, 1, 0, 1])
    assert ratio == 2.0
    assert variance == pytest.approx((2 / 3) / 2.25)
    # doubling every numerator doubles R and quadruples the variance: z = 2/sqrt(5·0.296296)
    r = S.ratio_test([1, 2, 0, 3], [1, 1, 0, 1], [2, 4, 0, 6], [1, 1, 0, 1])
    assert r.z == pytest.approx(2 / math.sqrt(5 * (2 / 3) / 2.25))
    assert r.lift == pytest.approx(1.0)
    # a constant ratio has no variance
    assert S.ratio_estimate([2, 2, 2], [1, 1, 1]) == (2.0, 0.0)


def test_srm_golden() -> None:
    # 510/490 against 50/50: chi2 = 2·10²/500 = 0.4, df 1, p = 0.5271
    s = S.srm_test([510, 490], [50, 50])
    assert s.chi2 == pytest.approx(0.4)
    assert s.p_value == pytest.approx(0.527089, abs=1e-6)
    assert not s.mismatch
    # 1000/1000/2000 against 1:1:2 fits exactly; 1100/900/2000 does not (chi2 = 20, df 2)
    assert S.srm_test([1000, 1000, 2000], [1, 1, 2]).chi2 == 0.0
    broken = S.srm_test([1100, 900, 2000], [1, 1, 2])
    assert broken.chi2 == pytest.approx(20.0)
    assert broken.p_value == pytest.approx(math.exp(-10))  # chi2 sf with df 2 is exp(-x/2)
    assert broken.mismatch


def test_mde_golden() -> None:
    # (1.959964 + 0.841621)·0.3·sqrt(2/1000) = 2.801585·0.0134164 = 0.037587
    assert S.mde(0.3, 1000, 1000) == pytest.approx(0.037587, abs=1e-6)
    # four times the sample halves it; unequal groups use 1/n_c + 1/n_t
    assert S.mde(0.3, 4000, 4000) == pytest.approx(0.037587 / 2, abs=1e-6)
    assert S.mde(0.3, 1000, 3000) == pytest.approx(2.801585 * 0.3 * math.sqrt(1 / 1000 + 1 / 3000))
    assert math.isnan(S.mde(0.3, 0, 10))


def test_cuped_golden_and_unbiased() -> None:
    # cov(x, y) = 0.5, var(x) = 1: θ = 0.5; adjusted variance 0.05 vs 0.3: 5/6 removed
    c = S.cuped([0, 1, 1, 0, 1], [0, 2, 1, 0, 2])
    assert c.theta == 0.5
    assert c.adjusted.tolist() == [0.5, 0.5, 1.0, 0.5, 0.5]
    assert c.variance_reduction == pytest.approx(5 / 6)
    # the adjustment keeps the mean and removes the squared correlation of the variance
    rng = np.random.default_rng(3)
    x = rng.poisson(3, 50_000)
    y = (rng.random(50_000) < 0.05 * x).astype(float)
    adjusted = S.cuped(y, x)
    assert adjusted.adjusted.mean() == pytest.approx(y.mean())
    assert adjusted.variance_reduction == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-3)
    assert adjusted.variance_reduction > 0.05
    # no covariate signal, no adjustment
    assert S.cuped([0, 1, 0, 1], [2, 2, 2, 2]).variance_reduction == 0.0


# ---------------------------------------------------------------------------- calibration


def _proportion_p_values(p_c: float, p_t: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x_c = rng.binomial(n, p_c, EXPERIMENTS)
    x_t = rng.binomial(n, p_t, EXPERIMENTS)
    return np.array([S.proportion_test(a, n, b, n).p_value for a, b in zip(x_c, x_t, strict=True)])


def test_aa_proportion_tests_reject_about_5_percent() -> None:
    p = _proportion_p_values(0.04, 0.04, 3000, seed=11)
    assert 0.02 <= (p < 0.05).mean() <= 0.08


def test_an_effect_of_the_reported_mde_is_detected_about_80_percent() -> None:
    p_c, n = 0.04, 3000
    effect = S.mde(math.sqrt(p_c * (1 - p_c)), n, n)
    detected = (_proportion_p_values(p_c, p_c + effect, n, seed=12) < 0.05).mean()
    assert 0.70 <= detected <= 0.90, detected


def _visitors(rng: np.random.Generator, n: int, rate: float, extra: float) -> tuple:
    """(items added, added) per visitor: adders add 1 + Poisson(extra) items."""
    added = (rng.random((EXPERIMENTS, n)) < rate).astype(float)
    items = added * (1 + rng.poisson(extra, (EXPERIMENTS, n)))
    return items, added


def test_aa_delta_method_ratio_tests_reject_about_5_percent() -> None:
    rng = np.random.default_rng(21)
    items_c, added_c = _visitors(rng, 2000, 0.1, 0.8)
    items_t, added_t = _visitors(rng, 2000, 0.1, 0.8)
    p = np.array(
        [
            S.ratio_test(items_c[i], added_c[i], items_t[i], added_t[i]).p_value
            for i in range(EXPERIMENTS)
        ]
    )
    assert 0.02 <= (p < 0.05).mean() <= 0.08


def test_delta_method_mde_is_detected_about_80_percent() -> None:
    rng = np.random.default_rng(22)
    n, extra = 2000, 0.8
    # the MDE the report states: from the control's delta variance, per experiment
    items_c, added_c = _visitors(rng, n, 0.1, extra)
    variances = np.array([S.ratio_estimate(items_c[i], added_c[i])[1] for i in range(EXPERIMENTS)])
    effect = S.mde(math.sqrt(np.median(variances) * n), n, n)
    # adders of the treatment add Poisson(extra + effect) extra items: the ratio rises by effect
    items_t, added_t = _visitors(rng, n, 0.1, extra + effect)
    p = np.array(
        [
            S.ratio_test(items_c[i], added_c[i], items_t[i], added_t[i]).p_value
            for i in range(EXPERIMENTS)
        ]
    )
    assert 0.70 <= (p < 0.05).mean() <= 0.90, (p < 0.05).mean()


def test_aa_cuped_adjusted_tests_reject_about_5_percent() -> None:
    rng = np.random.default_rng(31)
    n = 1500
    x = rng.poisson(2, (EXPERIMENTS, 2 * n))
    y = (rng.random((EXPERIMENTS, 2 * n)) < 0.03 + 0.02 * x).astype(float)
    p = []
    for i in range(EXPERIMENTS):
        adjusted = S.cuped(y[i], x[i]).adjusted
        p.append(S.mean_test(adjusted[:n], adjusted[n:]).p_value)
    assert 0.02 <= (np.array(p) < 0.05).mean() <= 0.08
