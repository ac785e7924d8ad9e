"""The gate: paired bootstrap over visitors, both ways, and the first run's fallback."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.pipeline.gate import GateError, fallback, gate

pytestmark = pytest.mark.model


def hits(rate: float, n: int, seed: int) -> np.ndarray:
    """precision@5 of n visitors who each get one hit with probability ``rate``."""
    return (np.random.default_rng(seed).random(n) < rate) / 5


def test_a_clear_improvement_passes_with_its_interval() -> None:
    candidate, baseline = hits(0.4, 800, 1), hits(0.2, 800, 2)
    decision = gate("precision@5", candidate, {"recent": baseline})
    assert decision.promote
    diff = decision.differences["recent"]
    assert 0 < diff.low < diff.mean < diff.high
    assert diff.mean == pytest.approx(candidate.mean() - baseline.mean())
    assert "beats every rival by more than noise" in decision.reason


def test_a_difference_within_noise_does_not_pass() -> None:
    # the same policy, slightly lucky on 40 visitors: not an improvement
    baseline = hits(0.3, 40, 3)
    candidate = baseline.copy()
    candidate[0] = 0.2 if candidate[0] == 0 else candidate[0]
    decision = gate("precision@5", candidate, {"recent": baseline, "popular": hits(0.0, 40, 4)})
    assert not decision.promote
    assert "does not beat recent by more than noise" in decision.reason
    assert decision.differences["popular"].low > 0  # it does beat popular


def test_min_lift_raises_the_bar() -> None:
    candidate, baseline = hits(0.4, 800, 5), hits(0.3, 800, 6)
    assert gate("p", candidate, {"b": baseline}).promote
    assert not gate("p", candidate, {"b": baseline}, min_lift=0.1).promote


def test_nothing_to_judge_is_a_loud_failure() -> None:
    with pytest.raises(GateError, match="no holdout visitor"):
        gate("precision@5", np.array([]), {"recent": np.array([])})
    with pytest.raises(GateError, match="NaN"):
        gate("precision@5", np.array([0.2, np.nan]), {"recent": np.array([0.2, 0.0])})


def test_same_seed_same_decision() -> None:
    candidate, baseline = hits(0.35, 100, 7), hits(0.3, 100, 8)
    first = gate("p", candidate, {"b": baseline}, seed=3).differences["b"]
    assert gate("p", candidate, {"b": baseline}, seed=3).differences["b"] == first


def test_a_first_run_without_a_winner_serves_the_strongest_baseline() -> None:
    baselines = {"popular": hits(0.05, 60, 9), "recent_views": hits(0.3, 60, 10)}
    refused = gate("precision@5", baselines["recent_views"], baselines)
    assert not refused.promote
    decision = fallback(refused, baselines)
    assert decision.promote and decision.serves == "recent_views"
    assert "no champion yet: the strongest baseline, recent_views" in decision.reason
    passed = gate("precision@5", hits(0.9, 60, 11), baselines)
    assert fallback(passed, baselines) is passed and passed.serves is None


def test_nan_of_any_rival_is_a_loud_error_not_a_refusal() -> None:
    """An empty holdout (e.g. a far-future event as interval end) makes metrics NaN (issue 15)."""
    with pytest.raises(GateError, match="NaN"):
        gate("precision@5", np.array([0.2, 0.0]), {"popular": np.array([np.nan, np.nan])})
