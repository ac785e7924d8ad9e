"""The events contract: one definition of what an event is, used by every way in.

The CSV loader (:mod:`recsys.data.load`), the event store (:mod:`recsys.data.store`) and the
HTTP schemas of the service all take their bounds, vocabularies and rules from here, so a
file, an import and a posted event are held to the same rules.

An event is ``(timestamp, visitorid, event, itemid, transactionid)`` as in RetailRocket's
``events.csv``, plus an optional ``request_id`` linking it to a served recommendation:

- ``timestamp``: epoch milliseconds in ``[MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS)``;
- ``visitorid``, ``itemid``, ``transactionid``: integers in ``[0, MAX_ID]`` (at most
  ``ID_DIGITS`` decimal digits, so every id fits int64 in numpy and in the database);
- ``event``: one of :data:`~recsys.columns.EVENT_TYPES`;
- ``transactionid``: present exactly on ``transaction`` events;
- ``request_id``: 1 to ``TEXT_LENGTH`` characters of ``REQUEST_ID_PATTERN``.

An event dated more than ``FUTURE_TOLERANCE_MS`` after the clock of the machine that receives
it cannot have happened: ``POST /events`` refuses it, ``recsys data import`` flags it (the file
is data of its own, valid whatever the clock of the importing machine) and the interval end
of a training run ignores it (:func:`future_limit_ms`), so that one poisoned timestamp cannot
empty every future holdout.
"""

from __future__ import annotations

import time
from typing import Final

import numpy as np

from recsys import columns as C

#: sane epoch-millisecond range of timestamps: [2000-01-01, 2100-01-01) UTC
MIN_TIMESTAMP_MS: Final = 946_684_800_000
MAX_TIMESTAMP_MS: Final = 4_102_444_800_000
#: how far after the server clock an event may be dated (client clocks drift a little)
FUTURE_TOLERANCE_MS: Final = 5 * 60 * 1000
#: ids have at most this many decimal digits: always an int64, never an overflow
ID_DIGITS: Final = 18
MAX_ID: Final = 10**ID_DIGITS - 1
#: longest request id, experiment, variant or model version name
TEXT_LENGTH: Final = 64
REQUEST_ID_PATTERN: Final = rf"^[A-Za-z0-9_.:-]{{1,{TEXT_LENGTH}}}$"

TIMESTAMP_RANGE: Final = "epoch-ms timestamp outside [2000-01-01, 2100-01-01)"
NOT_AN_ID: Final = f"not a non-negative integer of at most {ID_DIGITS} digits"
UNKNOWN_EVENT: Final = f"unknown event type (expected one of {', '.join(C.EVENT_TYPES)})"
TRANSACTION_NOT_ALLOWED: Final = "transactionid on a non-transaction event"
TRANSACTION_REQUIRED: Final = "transaction event without transactionid"

FAR_FUTURE: Final = "timestamp more than {tolerance_s:g} s in the future of the server clock"

#: a rule broken by some rows: (row mask, column, reason)
Violation = tuple[np.ndarray, str, str]


def future_limit_ms(tolerance_ms: int = FUTURE_TOLERANCE_MS, now_ms: int | None = None) -> int:
    """The latest plausible event time: the clock (``now_ms``, default: now) + ``tolerance_ms``.

    >>> future_limit_ms(now_ms=1431226800000)
    1431227100000
    """
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    return now + int(tolerance_ms)


def transaction_rule(event: str, has_transaction: bool) -> str | None:
    """Why one event breaks the transaction-id rule, or None when it keeps it.

    >>> transaction_rule("transaction", False)
    'transaction event without transactionid'
    >>> transaction_rule("view", False) is None
    True
    """
    if event == C.PURCHASE and not has_transaction:
        return TRANSACTION_REQUIRED
    if event != C.PURCHASE and has_transaction:
        return TRANSACTION_NOT_ALLOWED
    return None


def event_violations(
    timestamp: np.ndarray,
    event_codes: np.ndarray,
    has_transaction: np.ndarray,
    ids: dict[str, np.ndarray],
) -> list[Violation]:
    """The rows of a batch that break the contract, rule by rule (vectorised).

    Parameters
    ----------
    timestamp : numpy.ndarray
        int64 epoch ms; ``-1`` marks a value that already failed to parse (not re-reported).
    event_codes : numpy.ndarray
        Positions in :data:`~recsys.columns.EVENT_TYPES`, ``-1`` for an unknown type.
    has_transaction : numpy.ndarray
        bool: the row carries a transaction id.
    ids : dict
        Column name -> int64 ids (``-1``: missing or unparsable, not re-reported).

    Returns
    -------
    list of (mask, column, reason)
        One entry per broken rule, in column order; empty when every row is valid.

    Examples
    --------
    >>> bad = event_violations(
    ...     np.array([1431226800000, 5]), np.array([0, 2]), np.array([False, False]),
    ...     {"itemid": np.array([3, 10**18])})
    >>> [(mask.tolist(), column) for mask, column, _ in bad]
    [([False, True], 'timestamp'), ([False, True], 'itemid'), ([False, True], 'transactionid')]
    """
    ts = np.asarray(timestamp, np.int64)
    codes = np.asarray(event_codes)
    tx = np.asarray(has_transaction, bool)
    found: list[Violation] = [
        (
            (ts != -1) & ((ts < MIN_TIMESTAMP_MS) | (ts >= MAX_TIMESTAMP_MS)),
            C.TIMESTAMP,
            TIMESTAMP_RANGE,
        ),
        (codes < 0, C.EVENT, UNKNOWN_EVENT),
    ]
    for column, values in ids.items():
        found.append((np.asarray(values, np.int64) > MAX_ID, column, NOT_AN_ID))
    purchase = codes == C.EVENT_TYPES.index(C.PURCHASE)
    found.append(((codes >= 0) & ~purchase & tx, C.TRANSACTION, TRANSACTION_NOT_ALLOWED))
    found.append((purchase & ~tx, C.TRANSACTION, TRANSACTION_REQUIRED))
    return [(mask, column, reason) for mask, column, reason in found if mask.any()]
