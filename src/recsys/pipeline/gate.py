"""The quality gate: promote only a candidate that beats the champion and every baseline by
more than noise.

Every policy is scored on the same holdout visitors, so the comparison is paired: for each
rival the gate bootstraps the mean per-visitor difference of the headline metric (candidate
minus rival) and requires the lower end of its 95% interval to be above ``min_lift``. A
difference a different sample of visitors could reverse is not an improvement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from recsys.evaluation.stats import Difference, paired_bootstrap
from recsys.exceptions import RecsysError


class GateError(RecsysError):
    """The gate cannot judge (e.g. no visitor to score): a loud failure, never a refusal."""


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the quality gate, with the interval of every comparison."""

    promote: bool
    reason: str
    #: rival name -> mean difference (candidate - rival) with its bootstrap interval
    differences: Mapping[str, Difference] = field(default_factory=dict)
    #: what is registered and served when the candidate is not (see ``fallback``); None: the
    #: candidate
    serves: str | None = None


def fallback(decision: GateDecision, baselines: Mapping[str, np.ndarray]) -> GateDecision:
    """The decision of a first run (no champion) whose candidate did not pass: the strongest
    baseline by the mean headline becomes champion, so the service has a model to serve.

    The candidate still did not prove itself; the baseline did not either, but it is the
    simplest policy that is at least as good in the point estimate. The next run must beat it
    by more than noise to replace it.
    """
    if decision.promote:
        return decision
    best = max(baselines, key=lambda name: float(np.mean(baselines[name])))
    mean = float(np.mean(baselines[best]))
    reason = (
        f"{decision.reason}; no champion yet: the strongest baseline, {best} "
        f"({mean:.4f}), becomes champion so that the service has a model to serve"
    )
    return GateDecision(True, reason, decision.differences, serves=best)


def gate(
    metric: str,
    candidate: np.ndarray,
    rivals: Mapping[str, np.ndarray],
    min_lift: float = 0.0,
    resamples: int = 2_000,
    seed: int = 0,
) -> GateDecision:
    """Compare ``candidate`` with every rival on paired per-visitor values of ``metric``.

    Parameters
    ----------
    metric : str
        Name of the headline metric (for the reason), e.g. ``precision@5``.
    candidate : numpy.ndarray
        Per-visitor values of the candidate.
    rivals : mapping
        Name -> per-visitor values of the same visitors (baselines, ``champion vN``).
    min_lift : float
        The lower bound of every difference must exceed it.
    resamples, seed : int
        Of the paired bootstrap (the same seed gives the same decision).

    Returns
    -------
    GateDecision
        ``promote`` iff every rival is beaten by more than noise.

    Raises
    ------
    GateError
        If there is no visitor to compare on or a value is NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> hits = (rng.random(500) < 0.2) / 5          # precision@5 of a policy hitting 20%
    >>> weak = np.where(rng.random(500) < 0.5, hits, 0.0)  # half of those hits
    >>> decision = gate("precision@5", hits, {"popular": weak})
    >>> decision.promote, decision.reason.split(":")[0]
    (True, 'precision@5 0.0384 beats every rival by more than noise')
    >>> gate("precision@5", hits, {"itself": hits.copy()}).promote
    False
    """
    values = np.asarray(candidate, dtype=np.float64)
    if len(values) == 0:
        raise GateError(f"no holdout visitor to judge {metric} on: the gate cannot decide")
    if np.isnan(values).any() or any(np.isnan(np.asarray(v, float)).any() for v in rivals.values()):
        raise GateError(f"{metric} is NaN for some visitor: the gate cannot decide")
    differences = {
        name: paired_bootstrap(values, np.asarray(other), resamples, seed=seed)
        for name, other in rivals.items()
    }
    failed = {n: d for n, d in differences.items() if not d.low > min_lift}
    shown = "; ".join(f"{n} {d}" for n, d in differences.items())
    head = f"{metric} {values.mean():.4f}"
    if failed:
        names = ", ".join(failed)
        floor = f"{min_lift:+.4f}" if min_lift else "0"
        return GateDecision(
            False,
            f"{head} does not beat {names} by more than noise (95% lower bound not above "
            f"{floor}): {shown}",
            differences,
        )
    return GateDecision(True, f"{head} beats every rival by more than noise: {shown}", differences)
