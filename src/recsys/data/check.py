"""Can the event store feed a training run? Schema, volume and freshness, checked up front.

A retraining run calls :func:`check_store` before anything else: stale, empty or broken data
fails here with a message that says what is wrong, before a model is fitted or registered.
Only aggregate queries run (counts, the newest timestamp), so the check is cheap at any size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recsys import columns as C
from recsys.data import schema
from recsys.data.store import EventStore, safe_url
from recsys.exceptions import DataCheckError, StoreError

log = logging.getLogger(__name__)

_IMPORT = "import some with `recsys data import DIR` (or POST /events to the service)"


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC timestamp, for messages and logs.

    >>> iso(1431226800000)
    '2015-05-10T03:00:00Z'
    """
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StoreCheck:
    """What the store holds for one training run (a few numbers: it travels through XCom).

    Attributes
    ----------
    end_ms : int
        The interval end: training reads events strictly before it.
    start_ms : int or None
        The training window's start (None: all events before ``end_ms``).
    newest_ms : int
        The newest event before ``end_ms``.
    events : int
        Events in the training window.
    holdout_addtocart : int
        Add-to-cart events in the holdout (the last ``holdout_days`` before ``end_ms``).
    """

    end_ms: int
    start_ms: int | None
    newest_ms: int
    events: int
    holdout_addtocart: int

    @property
    def staleness_days(self) -> float:
        """Days between the newest event and the interval end."""
        return (self.end_ms - 1 - self.newest_ms) / C.DAY_MS


def interval_end(store: EventStore, requested_ms: int | None) -> int:
    """The interval end of a run: ``requested_ms``, or else the newest stored event + 1 ms.

    Events dated after the clock + :data:`~recsys.data.schema.FUTURE_TOLERANCE_MS` are
    ignored (and logged): one poisoned timestamp must not put the holdout in an empty future.

    Raises
    ------
    DataCheckError
        When no end is requested and the store holds no plausible event.
    """
    if requested_ms is not None:
        return int(requested_ms)
    limit = schema.future_limit_ms()
    ignored = sum(store.event_counts(limit + 1, None).values())
    if ignored:
        log.warning(
            "interval end: ignoring %d event(s) dated after %s (the clock + %d s)",
            ignored,
            iso(limit),
            schema.FUTURE_TOLERANCE_MS // 1000,
        )
    newest = store.newest_event_ms(before_ms=limit + 1)
    if newest is None:
        raise DataCheckError(f"event store {safe_url(store.url)} holds no events: {_IMPORT}")
    return newest + 1


def check_store(
    store: EventStore,
    end_ms: int | None,
    *,
    window_days: int | None,
    holdout_days: int,
    max_staleness_days: float,
    min_events: int,
    min_holdout_addtocart: int,
) -> StoreCheck:
    """Check that the store can feed a run ending at ``end_ms`` (None: the newest event + 1).

    Parameters
    ----------
    store : EventStore
        The event store training reads.
    end_ms : int or None
        The interval end (exclusive); see :func:`interval_end`.
    window_days : int or None
        Length of the training window ending at ``end_ms`` (None: every event before it).
    holdout_days : int
        Length of the evaluation holdout at the end of the window.
    max_staleness_days : float
        The newest event before ``end_ms`` may be at most this old: older means the feed
        stopped, and a "retrained" model would only repeat the last one.
    min_events : int
        Fewest events in the training window.
    min_holdout_addtocart : int
        Fewest add-to-cart events in the holdout: the gate judges models on them.

    Returns
    -------
    StoreCheck
        The numbers checked.

    Raises
    ------
    DataCheckError
        Naming the failed rule and the numbers behind it.
    StoreError
        The store cannot be reached now (a later retry may succeed).
    """
    where = f"event store {safe_url(store.url)}"
    database = store.url.database
    if store.dialect == "sqlite" and database and not Path(database).exists():
        raise DataCheckError(f"{where} holds no events (there is no such file yet): {_IMPORT}")
    try:
        problems = store.schema_problems()
    except StoreError:
        raise  # unreachable now: a retry may succeed, unlike a DataCheckError
    except Exception as exc:  # whatever else the driver raises, the store is unusable
        raise DataCheckError(f"{where} cannot be read: {exc}") from exc
    if problems:
        raise DataCheckError(
            f"{where} schema: {'; '.join(problems)} (`recsys data import` creates the tables)"
        )
    end = interval_end(store, end_ms)
    newest = store.newest_event_ms(before_ms=end)
    if newest is None:
        raise DataCheckError(f"{where} holds no events before the interval end {iso(end)}")
    stale = (end - 1 - newest) / C.DAY_MS
    if stale > max_staleness_days:
        raise DataCheckError(
            f"stale data: the newest event before the interval end {iso(end)} is from "
            f"{iso(newest)}, {stale:.1f} days earlier (at most {max_staleness_days:g} allowed); "
            "is the event feed running?"
        )
    start = None if window_days is None else end - window_days * C.DAY_MS
    events = sum(store.event_counts(start, end).values())
    if events < min_events:
        span = "all time" if start is None else f"{iso(start)} .. {iso(end)}"
        raise DataCheckError(
            f"too few events to train on: {events:,} in the training window ({span}), "
            f"at least {min_events:,} needed"
        )
    holdout_start = end - holdout_days * C.DAY_MS
    carts = store.event_counts(holdout_start, end)[C.ADDTOCART]
    if carts < min_holdout_addtocart:
        raise DataCheckError(
            f"too few add-to-cart events to judge a model: {carts:,} in the {holdout_days}-day "
            f"holdout ({iso(holdout_start)} .. {iso(end)}), at least {min_holdout_addtocart:,} needed"
        )
    return StoreCheck(
        end_ms=end, start_ms=start, newest_ms=newest, events=events, holdout_addtocart=carts
    )
