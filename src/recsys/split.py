"""Time-based train / validation / holdout split of an event log.

The split is by wall-clock time, never random: the model is trained on the past and
judged on the days that follow, exactly as it will be used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.columns import DAY_MS, TIMESTAMP
from recsys.data import schema
from recsys.exceptions import ConfigurationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimeSplit:
    """Boundaries of a time split, epoch milliseconds, all intervals half-open.

    train = ``[-inf, validation_start_ms)``, validation = ``[validation_start_ms,
    holdout_start_ms)``, holdout = ``[holdout_start_ms, end_ms)``.
    """

    validation_start_ms: int
    holdout_start_ms: int
    end_ms: int


def make_split(
    events: pd.DataFrame,
    holdout_days: int = 7,
    validation_days: int = 7,
    end_ms: int | None = None,
) -> TimeSplit:
    """Put the holdout on the last ``holdout_days`` days and validation on the days before.

    Parameters
    ----------
    events : pandas.DataFrame
        Event log with an epoch-ms ``timestamp`` column (any order).
    holdout_days : int
        Length of the holdout window in days (>= 1).
    validation_days : int
        Length of the validation window in days (>= 0; 0 gives an empty validation window).
    end_ms : int, optional
        End of the data (exclusive), e.g. a run's data interval end; default: the last
        event's timestamp + 1, so the last event is in the holdout. Events dated after the
        clock + :data:`~recsys.data.schema.FUTURE_TOLERANCE_MS` do not count (logged).

    Returns
    -------
    TimeSplit
        Windows counted back from ``end_ms``.

    Raises
    ------
    ConfigurationError
        If a window length is out of range, there are no events, or no event is left for
        training.
    """
    if holdout_days < 1 or validation_days < 0:
        raise ConfigurationError(
            f"holdout_days must be >= 1 and validation_days >= 0, "
            f"got {holdout_days} and {validation_days}"
        )
    if events.empty:
        raise ConfigurationError("cannot split an empty event log")
    timestamps = events[TIMESTAMP].to_numpy()
    if end_ms is None:
        limit = schema.future_limit_ms()
        plausible = timestamps[timestamps <= limit]
        if len(plausible) < len(timestamps):
            log.warning(
                "split: ignoring %d event(s) dated after the clock + %d s (epoch ms %d)",
                len(timestamps) - len(plausible),
                schema.FUTURE_TOLERANCE_MS // 1000,
                limit,
            )
        if not len(plausible):
            raise ConfigurationError("every event is dated after the clock: nothing to split")
        end_ms = int(plausible.max()) + 1
    end_ms = int(end_ms)
    holdout_start_ms = end_ms - holdout_days * DAY_MS
    validation_start_ms = holdout_start_ms - validation_days * DAY_MS
    if int(timestamps.min()) >= validation_start_ms:
        raise ConfigurationError(
            f"a {validation_days}-day validation and {holdout_days}-day holdout leave no "
            "training events; use shorter windows or more data"
        )
    return TimeSplit(
        validation_start_ms=validation_start_ms,
        holdout_start_ms=holdout_start_ms,
        end_ms=end_ms,
    )


def window(events: pd.DataFrame, start_ms: int | None, end_ms: int | None) -> pd.DataFrame:
    """Rows with ``start_ms <= timestamp < end_ms``; ``None`` leaves that side open.

    Parameters
    ----------
    events : pandas.DataFrame
        Frame with an epoch-ms ``timestamp`` column.
    start_ms, end_ms : int or None
        Half-open bounds.

    Returns
    -------
    pandas.DataFrame
        A new frame with the same columns and dtypes, original row order, index reset.
    """
    timestamps = events[TIMESTAMP].to_numpy()
    mask = np.ones(len(events), dtype=bool)
    if start_ms is not None:
        mask &= timestamps >= start_ms
    if end_ms is not None:
        mask &= timestamps < end_ms
    return events.loc[mask].reset_index(drop=True)
