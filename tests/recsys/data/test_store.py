"""The event store on a real SQLite file and on the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from recsys import columns as C
from recsys.data import EventStore, Imported, load_category_tree, load_events, load_item_properties
from recsys.data.store import events_table
from recsys.exceptions import ConfigurationError, DataValidationError

pytestmark = pytest.mark.data

# lines 2..9 of events.csv: one exact duplicate (line 7 = line 2), one transaction,
# two events in the same millisecond, not time-sorted
EVENTS_CSV = """timestamp,visitorid,event,itemid,transactionid
1433221332117,257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,111016,addtocart,318965,
1433222147345,111016,transaction,318965,4000
1433221332117,100,view,5,
1433221332117,257597,view,355908,
1433224214164,992329,addtocart,248676,
1433230000000,7,view,5,
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store, once per backend."""
    name = "tmp_sqlite_url" if request.param == "sqlite" else "pg_url"
    return request.getfixturevalue(name)


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    store = EventStore(store_url)
    store.create_schema()
    yield store
    store.engine.dispose()


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / C.EVENTS_FILE).write_text(EVENTS_CSV)
    return folder


def posted(rows: list[tuple[int, int, str, int, int | None, str | None]]) -> pd.DataFrame:
    """A batch shaped like the service's: load_events columns plus request_id."""
    events = [r[2] for r in rows]
    known = set(events) <= set(C.EVENT_TYPES)
    return pd.DataFrame(
        {
            C.TIMESTAMP: np.array([r[0] for r in rows], dtype=np.int64),
            C.VISITOR: np.array([r[1] for r in rows], dtype=np.int64),
            C.EVENT: pd.Categorical(events, categories=list(C.EVENT_TYPES)) if known else events,
            C.ITEM: np.array([r[3] for r in rows], dtype=np.int64),
            C.TRANSACTION: pd.array([r[4] for r in rows], dtype="Int64"),
            C.REQUEST_ID: pd.array([r[5] for r in rows], dtype="string"),
        }
    )


def test_constructing_creates_nothing_and_does_not_connect(tmp_path: Path) -> None:
    folder = tmp_path / "not" / "yet"
    store = EventStore(f"sqlite:///{folder / 'events.db'}")
    assert not folder.exists()
    # nothing listens on port 9: connecting would fail
    EventStore("postgresql+psycopg://nobody@127.0.0.1:9/none")
    store.create_schema()
    assert (folder / "events.db").is_file()


@pytest.mark.parametrize("url", ["mysql://db/x", "no url at all"])
def test_unsupported_or_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        EventStore(url)


def test_import_round_trip_equals_load_events(store: EventStore, raw: Path) -> None:
    expected = load_events(raw / C.EVENTS_FILE)
    assert store.import_folder(raw).events == len(expected) == 7
    pd.testing.assert_frame_equal(store.read_events(), expected)


def test_importing_twice_stores_events_once(store: EventStore, raw: Path) -> None:
    assert store.import_folder(raw).events == 7
    assert store.import_folder(raw).events == 0
    # a file with one more event: only that one is new (NULL transactionids included)
    extra = EVENTS_CSV + "1433230000001,8,view,6,\n"
    (raw / C.EVENTS_FILE).write_text(extra)
    assert store.import_folder(raw).events == 1
    assert len(store.read_events()) == 8


def test_read_events_window_is_half_open(store: EventStore, raw: Path) -> None:
    store.import_folder(raw)
    every = load_events(raw / C.EVENTS_FILE)
    start, end = 1433221999827, 1433224214164  # both are event timestamps
    window = store.read_events(start, end)
    expected = every[(every[C.TIMESTAMP] >= start) & (every[C.TIMESTAMP] < end)]
    pd.testing.assert_frame_equal(window, expected.reset_index(drop=True))
    assert window[C.TIMESTAMP].tolist() == [1433221999827, 1433222147345]
    assert len(store.read_events(start_ms=end)) == 3
    assert len(store.read_events(end_ms=start)) == 2


def test_empty_store_reads_an_empty_typed_frame(store: EventStore, raw: Path) -> None:
    empty = store.read_events()
    assert empty.empty
    pd.testing.assert_series_equal(empty.dtypes, load_events(raw / C.EVENTS_FILE).dtypes)


def test_append_events_keeps_request_id_and_skips_repeats(store: EventStore, raw: Path) -> None:
    store.import_folder(raw)
    batch = posted(
        [
            (1700000000000, 555, C.ADDTOCART, 42, None, "req-1"),
            (1700000000001, 555, C.PURCHASE, 42, 9001, "req-1"),
            (1700000000002, 556, C.VIEW, 43, None, None),
            # already imported from the file
            (1433221332117, 257597, C.VIEW, 355908, None, "req-2"),
        ]
    )
    assert store.append_events(batch) == 3
    assert store.append_events(batch) == 0
    with store.engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(events_table.c[C.TIMESTAMP], events_table.c[C.REQUEST_ID]).where(
                    events_table.c[C.TIMESTAMP] >= 1700000000000
                )
            ).all()
        )
    assert stored == {1700000000000: "req-1", 1700000000001: "req-1", 1700000000002: None}
    events = store.read_events(start_ms=1700000000000)
    assert C.REQUEST_ID not in events.columns
    assert events[C.TRANSACTION].tolist() == [pd.NA, 9001, pd.NA]
    assert events[C.EVENT].tolist() == [C.ADDTOCART, C.PURCHASE, C.VIEW]


def test_append_events_writes_several_clients_batches_in_one_transaction(
    store: EventStore,
) -> None:
    first = (1700000000000, 555, C.VIEW, 42, None, "req-1")
    second = (1700000000001, 556, C.ADDTOCART, 43, None, "req-2")
    third = (1700000000002, 557, C.VIEW, 44, None, None)
    assert store.append_event_batches([first], [1]) == [1]
    # the service's group commit: three clients' batches, the second repeating a stored event
    counts = store.append_event_batches([second, first, third, first], [1, 2, 1])
    assert counts == [1, 1, 0]
    assert store.read_events()[C.VISITOR].tolist() == [555, 556, 557]
    # two clients posting the same new event at once: stored once, counted for the first
    fourth = (1700000000003, 558, C.PURCHASE, 45, 7, None)
    assert store.append_event_batches([fourth, fourth], [1, 1]) == [1, 0]
    assert store.append_event_batches([], [0, 0]) == [0, 0]
    with pytest.raises(ValueError, match="sizes add up to 3"):
        store.append_event_batches([first], [1, 2])


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ((1700000000000, 1, "click", 2, None, None), C.EVENT),
        ((1700000000000, 1, C.VIEW, 2, 5, None), C.TRANSACTION),
        ((1700000000000, 1, C.PURCHASE, 2, None, None), C.TRANSACTION),
        ((10, 1, C.VIEW, 2, None, None), C.TIMESTAMP),
        ((1700000000000, -1, C.VIEW, 2, None, None), C.VISITOR),
        ((1700000000000, 1, C.VIEW, 2, None, "r" * 65), C.REQUEST_ID),
    ],
    ids=["event", "tx-on-view", "tx-missing", "timestamp", "negative-visitor", "long-request"],
)
def test_append_events_rejects_a_broken_batch_whole(
    store: EventStore, row: tuple, column: str
) -> None:
    good = (1700000000000, 1, C.VIEW, 3, None, None)
    rows = [good, good[:3] + (4,) + good[4:], row]
    with pytest.raises(DataValidationError, match="row 2") as caught:
        store.append_events(posted(rows))
    assert caught.value.column == column
    with pytest.raises(DataValidationError, match="row 2") as caught:
        store.append_event_batches(rows, [2, 1])  # the service's plain rows: the same rules
    assert caught.value.column == column
    assert store.read_events().empty


@pytest.mark.parametrize(
    ("value", "column"),
    [(True, C.VISITOR), (5.0, C.VISITOR), ("5", C.ITEM), (2**63, C.ITEM), (None, C.ITEM)],
)
def test_plain_rows_take_only_python_integers_as_ids(
    store: EventStore, value: object, column: str
) -> None:
    row = [1700000000000, 1, C.VIEW, 3, None, None]
    row[1 if column == C.VISITOR else 3] = value
    with pytest.raises(DataValidationError) as caught:
        store.append_event_batches([tuple(row)], [1])
    assert caught.value.column == column
    with pytest.raises(DataValidationError, match="6 fields"):
        store.append_event_batches([(1700000000000, 1, C.VIEW)], [1])
    assert store.read_events().empty


def exposures_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            C.REQUEST_ID: ["a1", "b2", "c3"],
            C.TIMESTAMP: np.array([1700000000000, 1700000000500, 1700000001000], dtype=np.int64),
            C.VISITOR: np.array([555, 556, 555], dtype=np.int64),
            C.EXPERIMENT: ["default"] * 3,
            C.VARIANT: ["control", "treatment", "control"],
            C.MODEL_VERSION: ["3", "3", "4"],
            C.ITEM_IDS: [[42, 7, 1], [5], []],
        }
    )


def test_exposures_round_trip_and_request_id_is_unique(store: EventStore) -> None:
    exposures = exposures_frame()
    assert store.log_exposures(exposures) == 3
    pd.testing.assert_frame_equal(store.read_exposures(), exposures)
    back = store.read_exposures()
    assert back[C.TIMESTAMP].dtype == np.int64 and back[C.VISITOR].dtype == np.int64
    # the same requests again, plus one given as comma-separated text: only that one is new
    again = exposures_frame()
    again.loc[3] = ["d4", 1700000002000, 9, "default", "control", "4", "11,12"]
    assert store.log_exposures(again) == 1
    assert store.read_exposures(start_ms=1700000001000)[C.ITEM_IDS].tolist() == [[], [11, 12]]


def test_exposures_from_plain_row_tuples_as_the_service_writes_them(store: EventStore) -> None:
    rows = [
        ("a1", 1700000000000, 555, "default", "control", "3", "42,7,1"),
        ("b2", 1700000000500, 556, "default", "treatment", "3", "5"),
        ("c3", 1700000001000, 555, "default", "control", "4", ""),
    ]
    assert store.log_exposures(rows) == 3
    pd.testing.assert_frame_equal(store.read_exposures(), exposures_frame())
    # a repeated request_id is skipped (ON CONFLICT DO NOTHING), the count says so
    assert store.log_exposures([rows[1], ("d4", 1700000002000, 9, "x", "control", "4", "11")]) == 1
    assert store.read_exposures()[C.REQUEST_ID].tolist() == ["a1", "b2", "c3", "d4"]
    assert store.log_exposures([]) == 0
    assert store.log_exposures(iter(rows[:1])) == 0  # any iterable of tuples


def test_exposure_rows_with_an_overlong_label_are_rejected_whole(store: EventStore) -> None:
    good = ("a1", 1700000000000, 555, "default", "control", "3", "42")
    bad = ("b2", 1700000000000, 555, "default", "control", "v" * 65, "42")
    with pytest.raises(DataValidationError) as caught:
        store.log_exposures([good, bad])
    assert caught.value.column == C.MODEL_VERSION
    assert store.read_exposures().empty


def test_sqlite_bulk_path_rebuilds_the_visitor_index_atomically(
    tmp_sqlite_url: str, raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import recsys.data.store as store_module

    monkeypatch.setattr(store_module, "_SQLITE_REBUILD_ROWS", 1)  # every batch is "bulk"
    store = EventStore(tmp_sqlite_url)
    assert store.import_folder(raw).events == 7
    pd.testing.assert_frame_equal(store.read_events(), load_events(raw / C.EVENTS_FILE))
    # a bulk batch failing halfway: a view with a transactionid (not validated)
    broken = posted(
        [(1700000000000, 1, C.VIEW, 2, None, None), (1700000000001, 1, C.VIEW, 2, 5, None)]
    )
    with pytest.raises(sqlite3.IntegrityError, match="ck_events_transaction"):
        store._insert_events(broken)
    with store.engine.connect() as conn:
        indexes = set(conn.exec_driver_sql("SELECT name FROM sqlite_master").scalars())
    assert "ix_events_visitorid" in indexes
    assert len(store.read_events()) == 7
    store.engine.dispose()


PROPERTIES_CSV = """timestamp,itemid,property,value
1433221332117,5,categoryid,1016
1433221332117,5,available,1
1433221332117,5,790,n5.000
1433230000000,5,available,0
1433221999827,318965,categoryid,1020
"""
TREE_CSV = """categoryid,parentid
1016,213
213,
1020,213
"""


@pytest.fixture
def full_raw(raw: Path) -> Path:
    """``raw`` plus the property parts (part 2 empty) and the category tree."""
    (raw / C.PROPERTIES_FILES[0]).write_text(PROPERTIES_CSV)
    (raw / C.PROPERTIES_FILES[1]).write_text("timestamp,itemid,property,value\n")
    (raw / C.CATEGORY_TREE_FILE).write_text(TREE_CSV)
    return raw


def test_import_stores_training_property_rows_and_the_tree(
    store: EventStore, full_raw: Path
) -> None:
    """What training reads comes back exactly as the loaders return it; hashed properties
    are not stored; a second import adds nothing."""
    added = store.import_folder(full_raw)
    assert (added.events, added.item_properties, added.category_tree) == (7, 4, 3)
    assert store.import_folder(full_raw) == Imported(0, 0, 0)
    props = load_item_properties([full_raw / name for name in C.PROPERTIES_FILES])
    expected = props[props[C.PROPERTY] != "790"].reset_index(drop=True)
    expected[C.PROPERTY] = expected[C.PROPERTY].cat.remove_unused_categories()
    pd.testing.assert_frame_equal(store.read_item_properties(), expected)
    before = expected[expected[C.TIMESTAMP] < 1433230000000].reset_index(drop=True)
    pd.testing.assert_frame_equal(store.read_item_properties(end_ms=1433230000000), before)
    pd.testing.assert_frame_equal(
        store.read_category_tree(), load_category_tree(full_raw / C.CATEGORY_TREE_FILE)
    )
    ds = store.read_dataset(end_ms=1433224214164)
    assert ds.events[C.TIMESTAMP].max() < 1433224214164 and len(ds.item_properties) == 3


def test_a_new_tree_file_moves_a_category(store: EventStore, full_raw: Path) -> None:
    store.import_folder(full_raw)
    (full_raw / C.CATEGORY_TREE_FILE).write_text(TREE_CSV.replace("1020,213", "1020,1016"))
    assert store.import_folder(full_raw).category_tree == 1
    tree = store.read_category_tree().set_index(C.CATEGORY)[C.PARENT]
    assert tree[1020] == 1016 and pd.isna(tree[213])


def test_counts_newest_and_schema(store: EventStore, raw: Path, tmp_path: Path) -> None:
    assert store.newest_event_ms() is None and store.schema_problems() == []
    store.import_folder(raw)
    assert store.event_counts() == {C.VIEW: 4, C.ADDTOCART: 2, C.PURCHASE: 1}
    assert store.event_counts(1433224214164, None) == {C.VIEW: 2, C.ADDTOCART: 1, C.PURCHASE: 0}
    assert store.newest_event_ms() == 1433230000000
    assert store.newest_event_ms(before_ms=1433230000000) == 1433224214164


def test_schema_check_names_what_is_missing(tmp_sqlite_url: str) -> None:
    store = EventStore(tmp_sqlite_url)
    store.create_schema()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE category_tree")
        conn.exec_driver_sql("DROP INDEX uq_item_properties_natural")
        conn.exec_driver_sql("ALTER TABLE item_properties DROP COLUMN value")
    assert store.schema_problems() == [
        "table 'category_tree' is missing",
        "table 'item_properties' lacks column(s) ['value']",
    ]
    store.engine.dispose()


def test_event_log_reads_by_id_and_by_time_window(store: EventStore, raw: Path) -> None:
    store.import_folder(raw)
    log = store.event_log()
    assert [row[0] for row in log] == sorted(row[0] for row in log)  # insertion (id) order
    assert store.last_event_id() == log[-1][0] and len(log) == 7
    first = log[0]
    assert store.event_log(after_id=first[0], limit=2) == log[1:3]
    assert store.event_log(after_id=log[-1][0], also_ids=[first[0], 10**9]) == [first]
    # views and carts from 1433224000000, purchases from 0: the purchase and two late events
    window = store.event_log(since_ms=1433224000000, purchases_since_ms=0)
    assert sorted((ts, v, e) for _, ts, v, _, e in window) == [
        (1433222147345, 111016, "transaction"),
        (1433224214164, 992329, "addtocart"),
        (1433224214164, 992329, "view"),
        (1433230000000, 7, "view"),
    ]
