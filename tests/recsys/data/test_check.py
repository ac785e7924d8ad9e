"""The store check a retraining run starts with, on a real SQLite event store."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.columns import ADDTOCART, VIEW
from recsys.data import EventStore
from recsys.data.check import check_store, interval_end
from recsys.exceptions import DataCheckError, StoreError
from tests.helpers import DAY, T0, make_events

pytestmark = pytest.mark.data

RULES = {
    "window_days": None,
    "holdout_days": 7,
    "max_staleness_days": 1.0,
    "min_events": 10,
    "min_holdout_addtocart": 2,
}


@pytest.fixture
def store(tmp_sqlite_url: str) -> EventStore:
    """Three weeks of events: 10 views a day, a cart every other day (the last on day 20)."""
    rows = [(T0 + d * DAY + i, i, VIEW, 100 + i) for d in range(21) for i in range(10)]
    rows += [(T0 + d * DAY + 50, 1, ADDTOCART, 101) for d in range(0, 21, 2)]
    store = EventStore(tmp_sqlite_url)
    store.append_events(make_events(rows))
    return store


def test_fresh_store_passes_and_reports_its_numbers(store: EventStore) -> None:
    newest = T0 + 20 * DAY + 50
    report = check_store(store, None, **RULES)
    assert report.end_ms == interval_end(store, None) == newest + 1
    assert report.newest_ms == newest and report.staleness_days == 0
    assert report.events == 21 * 10 + 11
    assert report.holdout_addtocart == 4  # days 14, 16, 18, 20
    windowed = check_store(store, newest + 1, **(RULES | {"window_days": 10}))
    assert windowed.start_ms == newest + 1 - 10 * DAY and windowed.events == 10 * 10 + 5


def test_stale_data_fails_naming_the_dates(store: EventStore) -> None:
    with pytest.raises(
        DataCheckError, match=r"stale data: .* 2015-05-30T03:00:00Z, 3\.0 days earlier"
    ):
        check_store(store, T0 + 23 * DAY + 51, **RULES)
    with pytest.raises(DataCheckError, match="holds no events before the interval end"):
        check_store(store, T0, **RULES)


def test_empty_store_fails(tmp_sqlite_url: str) -> None:
    with pytest.raises(DataCheckError, match="holds no events"):
        check_store(EventStore(tmp_sqlite_url), None, **RULES)


def test_too_few_events_or_carts_fail(store: EventStore) -> None:
    with pytest.raises(DataCheckError, match="too few events to train on: 221 .* 1,000 needed"):
        check_store(store, None, **(RULES | {"min_events": 1000}))
    with pytest.raises(DataCheckError, match="too few add-to-cart events .*: 1 in the 2-day"):
        check_store(store, None, **(RULES | {"holdout_days": 2}))


def test_broken_schema_fails(store: EventStore, tmp_path: Path) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE category_tree")
    with pytest.raises(DataCheckError, match="schema: table 'category_tree' is missing"):
        check_store(store, None, **RULES)
    unreadable = EventStore(f"sqlite:///{tmp_path}")  # a folder, not a database file
    # a store it cannot open: a StoreError (the DAG retries it), not a DataCheckError
    with pytest.raises(StoreError, match="unable to open database file"):
        check_store(unreadable, None, **RULES)
