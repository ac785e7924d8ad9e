"""Small numpy helpers shared by the data, training, evaluation and serving code.

numpy only (no pandas, no scipy): the service imports this module.
"""

from __future__ import annotations

import numpy as np

from recsys.columns import DAY_MS


def index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``sorted_ids``, -1 where an id is not present.

    Parameters
    ----------
    sorted_ids : numpy.ndarray
        Ascending, unique ids.
    ids : numpy.ndarray
        Ids to look up (any shape).

    Returns
    -------
    numpy.ndarray
        int64 positions, same shape as ``ids``.

    Examples
    --------
    >>> index_of(np.array([10, 20, 30]), np.array([30, 5, 10, 31]))
    array([ 2, -1,  0, -1])
    """
    sorted_ids = np.asarray(sorted_ids)
    ids = np.asarray(ids)
    if len(sorted_ids) == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    positions = np.searchsorted(sorted_ids, ids)
    clipped = np.minimum(positions, len(sorted_ids) - 1)
    return np.where(sorted_ids[clipped] == ids, clipped, -1).astype(np.int64)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting: several times faster than numpy 2.4's hash-based unique on
    millions of distinct int64 ids."""
    ordered = np.sort(values)
    first = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def rank_in_runs(rows: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted ``rows`` array."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    lengths = np.diff(np.r_[starts, len(rows)])
    return np.arange(len(rows)) - np.repeat(starts, lengths)


def weekday(ms: np.ndarray) -> np.ndarray:
    """UTC weekday of epoch-ms timestamps, Monday = 0 (1970-01-01 was a Thursday)."""
    return (ms // DAY_MS + 3) % 7
