"""Which variant a visitor gets: ``sha256(salt:user_id)`` as a number in ``[0, 1)``, cut by weight.

The hash depends on nothing but the experiment's salt and the visitor id, so the answer is the
same in every replica, after every restart and every model reload; experiments with different
salts are independent (their buckets are unrelated hashes). The weights only place the cuts:
a visitor keeps their variant as long as the file is unchanged.

:class:`Router` is the request path's view: one sha256 per request for a visitor inside an
active experiment, nothing else (no pandas, no datetime).
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Sequence
from typing import Final

from recsys.abtest.config import Experiment

#: buckets are 64-bit integers: the first 8 bytes of the digest
BUCKETS: Final = 2**64

#: (experiment name, variant name): the key of a variant everywhere in the service
Assignment = tuple[str, str]


def bucket(salt: str, user_id: int) -> int:
    """The visitor's bucket in ``[0, 2**64)``: the first 8 bytes of ``sha256(f"{salt}:{user_id}")``.

    >>> bucket("demo", 42) == int(hashlib.sha256(b"demo:42").hexdigest()[:16], 16)
    True
    """
    return int.from_bytes(hashlib.sha256(f"{salt}:{user_id}".encode()).digest()[:8], "big")


def cuts(weights: Sequence[float]) -> list[int]:
    """Upper bucket bounds of each variant but the last, from the weights.

    >>> cuts([1, 1]) == [2**63]
    True
    >>> cuts([1, 0, 3]) == [2**62, 2**62]
    True
    """
    total = float(sum(weights))
    bounds, running = [], 0.0
    for weight in weights[:-1]:
        running += weight
        bounds.append(round(running / total * BUCKETS))
    return bounds


def assign(experiment: Experiment, user_id: int) -> str:
    """The variant name of ``user_id`` in ``experiment`` (whether or not it is active)."""
    bounds = cuts([v.weight for v in experiment.variants])
    return experiment.variants[bisect.bisect_right(bounds, bucket(experiment.salt, user_id))].name


class Router:
    """Assigns visitors of the experiment active at a time.

    Parameters
    ----------
    experiments
        Validated experiments (they do not overlap in time).
    """

    def __init__(self, experiments: Sequence[Experiment]) -> None:
        self.experiments = tuple(sorted(experiments, key=lambda e: e.start_s))
        # per experiment: window, salt, bucket bounds, variant keys; plain tuples for speed
        self._plans = [
            (
                e.start_s,
                e.end_s,
                e.salt,
                cuts([v.weight for v in e.variants]),
                [(e.name, v.name) for v in e.variants],
            )
            for e in self.experiments
        ]

    def __bool__(self) -> bool:
        return bool(self._plans)

    def route(self, user_id: int, now_s: float | None = None) -> Assignment | None:
        """``(experiment, variant)`` of a visitor at ``now_s`` (default: now); None outside
        every experiment's window."""
        now = time.time() if now_s is None else now_s
        for start, end, salt, bounds, keys in self._plans:
            if start <= now < end:
                return keys[bisect.bisect_right(bounds, bucket(salt, user_id))]
        return None
