"""The quality gate: a new model is promoted only if it beats the champion and every baseline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the quality gate."""

    promote: bool
    reason: str


def gate(
    candidate: tuple[float, ...],
    champion: tuple[float, ...] | None,
    baselines: Mapping[str, tuple[float, ...]],
    metrics: tuple[str, ...],
) -> GateDecision:
    """Promote only a model that beats the current champion and every baseline.

    Scores are tuples compared in order: the headline metric decides, the next one breaks an
    exact tie (small holdouts tie often on precision@5: hits are counts).

    >>> gate((0.10, 0.2), (0.08, 0.3), {"popular": (0.05, 0.1)}, ("p@5", "ndcg@5")).promote
    True
    >>> gate((0.10, 0.2), (0.12, 0.1), {"popular": (0.05, 0.1)}, ("p@5", "ndcg@5")).reason
    'p@5 0.1000 does not beat champion 0.1200'
    >>> gate((0.10, 0.3), None, {"recent": (0.10, 0.2)}, ("p@5", "ndcg@5")).reason
    'first model: p@5 0.1000 beats every baseline (ndcg@5 breaks a tie)'
    >>> gate((0.10, 0.2), None, {"recent": (0.10, 0.2)}, ("p@5", "ndcg@5")).promote
    False
    """

    def describe(other: tuple[float, ...], name: str) -> str:
        return f"{metrics[0]} {candidate[0]:.4f} does not beat {name} {other[0]:.4f}" + (
            f" ({', '.join(metrics[1:])} tie too)" if candidate[0] == other[0] else ""
        )

    def tie_note(others: list[tuple[float, ...]]) -> str:
        return f" ({metrics[1]} breaks a tie)" if any(o[0] == candidate[0] for o in others) else ""

    for name, value in baselines.items():
        if not candidate > value:
            return GateDecision(False, describe(value, f"baseline {name}"))
    note = tie_note(list(baselines.values()))
    if champion is None:
        return GateDecision(
            True, f"first model: {metrics[0]} {candidate[0]:.4f} beats every baseline{note}"
        )
    if not candidate > champion:
        return GateDecision(False, describe(champion, "champion"))
    note = tie_note([*baselines.values(), champion])
    return GateDecision(
        True,
        f"{metrics[0]} {candidate[0]:.4f} beats champion {champion[0]:.4f} and every baseline{note}",
    )
