"""Builders shared by the tests: event and property frames shaped like the loaders' output,
and the pins of a requirements file.

Import as ``from tests.helpers import ...`` (pytest puts the repository root on ``sys.path``).
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.columns import (
    DATETIME,
    DAY_MS,
    EVENT,
    EVENT_TYPES,
    ITEM,
    PROPERTY,
    PURCHASE,
    TIMESTAMP,
    TRANSACTION,
    VALUE,
    VISITOR,
)

#: scale of the session's synthetic dataset (``tiny_raw``): seconds to make, and enough
#: returning visitors in the holdout for a stable headline metric
TINY_SCALE = 0.05
T0 = 1_431_226_800_000  # 2015-05-10 03:00 UTC
DAY = DAY_MS
WEEK = 7 * DAY


def make_events(rows: list[tuple[int, int, str, int]]) -> pd.DataFrame:
    """Events frame with the dtypes of ``load_events`` from (timestamp, visitor, event, item).

    Each purchase gets the row's position as transaction id (others NA); rows are sorted by
    (timestamp, visitor, item), stable, with a fresh index, as ``load_events`` returns them.
    """
    frame = pd.DataFrame(rows, columns=[TIMESTAMP, VISITOR, EVENT, ITEM]).astype(
        {TIMESTAMP: "int64", VISITOR: "int64", ITEM: "int64"}
    )
    frame[EVENT] = pd.Categorical(frame[EVENT], categories=list(EVENT_TYPES))
    transaction = np.where(frame[EVENT] == PURCHASE, np.arange(len(frame)), -1)
    frame.insert(4, TRANSACTION, pd.Series(transaction, dtype="Int64").mask(transaction < 0))
    frame[DATETIME] = pd.to_datetime(frame[TIMESTAMP], unit="ms", utc=True).astype(
        "datetime64[ms, UTC]"
    )
    return frame.sort_values([TIMESTAMP, VISITOR, ITEM], kind="stable").reset_index(drop=True)


def make_properties(
    rows: list[tuple[int, int, str, str]], categorical: bool = False
) -> pd.DataFrame:
    """Item-properties frame from (timestamp, item, property, value) rows.

    ``categorical`` stores the property column as a pandas category.
    """
    frame = pd.DataFrame(rows, columns=[TIMESTAMP, ITEM, PROPERTY, VALUE]).astype(
        {TIMESTAMP: "int64", ITEM: "int64", PROPERTY: "str", VALUE: "str"}
    )
    if categorical:
        frame[PROPERTY] = frame[PROPERTY].astype("category")
    return frame


def copy_store(url: str, folder: Path) -> str:
    """A private copy of the SQLite store at ``url`` in ``folder`` (created); its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "events.db"
    with (
        closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as source,
        closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)
    return f"sqlite:///{target}"


def read_pins(path: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``name -> (version, hashes)`` of a pip requirements file (a lock or the input of one).

    Continuation lines are joined and comments dropped; names are normalized (lower case,
    ``-``, extras removed). A requirement without ``==`` gets the version ``""`` and one
    without ``--hash`` options no hashes, for the tests to catch.
    """
    pins = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        requirement, *options = line.partition("#")[0].split() or [""]
        if requirement:
            name, _, version = requirement.partition("==")
            name = re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()
            hashes = tuple(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
            pins[name] = (version, hashes)
    return pins
