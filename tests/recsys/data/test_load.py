"""Loading and validating the RetailRocket files (tiny literal CSV files)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys import columns as C
from recsys.data import (
    Dataset,
    load_category_tree,
    load_dataset,
    load_events,
    load_item_properties,
)
from recsys.exceptions import DataValidationError

pytestmark = pytest.mark.data

EVENTS_HEADER = "timestamp,visitorid,event,itemid,transactionid"
# lines 2..8; line 6 repeats line 2 exactly; the file is not time-sorted
EVENTS_CSV = f"""{EVENTS_HEADER}
1433221332117,257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,111016,addtocart,318965,
1433222147345,111016,transaction,318965,4000
1433221332117,257597,view,355908,
1433221332117,257597,addtocart,355908,
1433221332117,100,view,5,
"""

PART1_CSV = """timestamp,itemid,property,value
1435460400000,460429,categoryid,1338
1441508400000,206783,888,1116713 960601 n277.200
1439089200000,395014,400,n552.000 639502 n720.000 424566
1431226800000,460429,available,1
1435460400000,460429,categoryid,1338
"""
# line 2: same key as a part-1 row but another value (kept); line 3 repeats a part-1 row
PART2_CSV = """timestamp,itemid,property,value
1431226800000,460429,available,0
1441508400000,206783,888,1116713 960601 n277.200
1433041200000,460429,available,1
"""

TREE_CSV = """categoryid,parentid
1016,213
809,169
213,
169,
1016,213
"""


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def expected_events(rows: list[tuple[int, int, str, int, int | None]]) -> pd.DataFrame:
    ts = [r[0] for r in rows]
    return pd.DataFrame(
        {
            C.TIMESTAMP: np.array(ts, dtype=np.int64),
            C.VISITOR: np.array([r[1] for r in rows], dtype=np.int64),
            C.EVENT: pd.Categorical([r[2] for r in rows], categories=list(C.EVENT_TYPES)),
            C.ITEM: np.array([r[3] for r in rows], dtype=np.int64),
            C.TRANSACTION: pd.array([r[4] for r in rows], dtype="Int64"),
            C.DATETIME: pd.to_datetime(pd.Series(ts), unit="ms", utc=True).astype(
                "datetime64[ms, UTC]"
            ),
        }
    )


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    write(tmp_path, C.EVENTS_FILE, EVENTS_CSV)
    write(tmp_path, C.PROPERTIES_FILES[0], PART1_CSV)
    write(tmp_path, C.PROPERTIES_FILES[1], PART2_CSV)
    write(tmp_path, C.CATEGORY_TREE_FILE, TREE_CSV)
    return tmp_path


# ------------------------------------------------------------------------- valid files


def test_load_events_sorts_dedups_and_types_exactly(raw: Path) -> None:
    events = load_events(raw / C.EVENTS_FILE)
    expected = expected_events(
        [
            (1433221332117, 100, C.VIEW, 5, None),
            (1433221332117, 257597, C.VIEW, 355908, None),
            (1433221332117, 257597, C.ADDTOCART, 355908, None),
            (1433221999827, 111016, C.ADDTOCART, 318965, None),
            (1433222147345, 111016, C.PURCHASE, 318965, 4000),
            (1433224214164, 992329, C.VIEW, 248676, None),
        ]
    )
    pd.testing.assert_frame_equal(events, expected)
    assert list(events.columns) == [*C.EVENTS_COLUMNS, C.DATETIME]
    assert str(events[C.DATETIME].dtype) == "datetime64[ms, UTC]"
    assert events[C.TRANSACTION].dtype == "Int64"
    assert events[C.EVENT].cat.categories.tolist() == list(C.EVENT_TYPES)
    assert events.index.equals(pd.RangeIndex(6))


def test_header_only_file_gives_an_empty_typed_frame(tmp_path: Path, raw: Path) -> None:
    empty = load_events(write(tmp_path, "header_only.csv", EVENTS_HEADER))
    assert empty.empty
    pd.testing.assert_series_equal(empty.dtypes, load_events(raw / C.EVENTS_FILE).dtypes)


def test_crlf_line_ends_and_utf8_bom_read_like_plain_files(tmp_path: Path, raw: Path) -> None:
    windows = "\ufeff" + EVENTS_CSV.replace("\n", "\r\n")
    path = write(tmp_path, "windows.csv", windows)
    pd.testing.assert_frame_equal(load_events(path), load_events(raw / C.EVENTS_FILE))


def test_load_item_properties_sorted_typed_and_deduplicated_across_parts(raw: Path) -> None:
    props = load_item_properties([raw / name for name in C.PROPERTIES_FILES])
    assert list(props.columns) == [*C.PROPERTIES_COLUMNS, C.DATETIME]
    assert props[C.TIMESTAMP].dtype == np.int64
    assert props[C.ITEM].dtype == np.int64
    assert isinstance(props[C.PROPERTY].dtype, pd.CategoricalDtype)
    assert props[C.PROPERTY].cat.categories.tolist() == ["400", "888", "available", "categoryid"]
    assert props[C.VALUE].dtype == "str"
    assert str(props[C.DATETIME].dtype) == "datetime64[ms, UTC]"
    rows = list(
        zip(
            props[C.ITEM],
            props[C.PROPERTY].astype(str),
            props[C.TIMESTAMP],
            props[C.VALUE],
            strict=True,
        )
    )
    assert rows == [
        (206783, "888", 1441508400000, "1116713 960601 n277.200"),
        (395014, "400", 1439089200000, "n552.000 639502 n720.000 424566"),
        # same (item, property, timestamp), different values: both kept, file order
        (460429, "available", 1431226800000, "1"),
        (460429, "available", 1431226800000, "0"),
        (460429, "available", 1433041200000, "1"),
        (460429, "categoryid", 1435460400000, "1338"),
    ]
    assert props.index.equals(pd.RangeIndex(6))


def test_load_category_tree_marks_roots_as_missing_parents(raw: Path) -> None:
    tree = load_category_tree(raw / C.CATEGORY_TREE_FILE)
    expected = pd.DataFrame(
        {
            C.CATEGORY: np.array([169, 213, 809, 1016], dtype=np.int64),
            C.PARENT: pd.array([None, None, 169, 213], dtype="Int64"),
        }
    )
    pd.testing.assert_frame_equal(tree, expected)


def test_load_dataset_counts_and_logs_dropped_duplicates(
    raw: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="recsys.data.load"):
        ds = load_dataset(raw)
    assert isinstance(ds, Dataset)
    assert ds.duplicates_dropped == {
        C.EVENTS_FILE: 1,
        C.CATEGORY_TREE_FILE: 1,
        C.PROPERTIES_FILES[0]: 1,
        C.PROPERTIES_FILES[1]: 1,
    }
    assert len(ds.events) == 6 and len(ds.item_properties) == 6 and len(ds.category_tree) == 4
    assert f"{C.EVENTS_FILE}: dropped 1 exact duplicate rows" in caplog.text


def test_load_dataset_without_properties_needs_no_property_files(raw: Path) -> None:
    full = load_dataset(raw).item_properties
    for name in C.PROPERTIES_FILES:
        (raw / name).unlink()
    ds = load_dataset(raw, properties=False)
    assert ds.item_properties.empty
    assert list(ds.item_properties.columns) == list(full.columns)
    assert [str(t) for t in ds.item_properties.dtypes] == [str(t) for t in full.dtypes]
    assert set(ds.duplicates_dropped) == {C.EVENTS_FILE, C.CATEGORY_TREE_FILE}


# ------------------------------------------------------------------------- invalid files

GOOD = "1433221332117,257597,view,355908,"
BUY = "1433222147345,111016,transaction,318965,4000"


def events_file(*lines: str) -> str:
    return "\n".join([EVENTS_HEADER, *lines]) + "\n"


# (content of events.csv, line, column, fragment of the reason)
EVENT_ERRORS = {
    "empty_file": ("", 1, None, "empty file"),
    "binary_garbage": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x10", 1, None, "UTF-8"),
    "bad_encoding_in_a_row": (
        events_file(GOOD, BUY).encode() + b"1433221332118,1,view,2\xe9,\n",
        4,
        None,
        "UTF-8",
    ),
    "missing_column": (
        "timestamp,visitorid,event,itemid\n1433221332117,1,view,2\n",
        1,
        C.TRANSACTION,
        "missing column",
    ),
    "extra_column": (EVENTS_HEADER + ",price\n" + GOOD + ",3\n", 1, "price", "unexpected column"),
    "duplicate_column": ("timestamp,visitorid,event,itemid,itemid\n", 1, C.ITEM, "duplicate"),
    "too_many_fields": (events_file(GOOD, GOOD + ",x"), 3, None, "expected 5"),
    "too_few_fields": (events_file(GOOD, BUY, "1433221332118,1,view,2"), 4, None, "expected 5"),
    "blank_line": (events_file(GOOD, "", BUY), 3, None, "blank line"),
    "unknown_event_type": (events_file(GOOD, "1433221332118,1,click,2,"), 3, C.EVENT, "unknown"),
    "float_id": (events_file(GOOD, "1433221332118,12.0,view,2,"), 3, C.VISITOR, "integer"),
    "empty_id": (events_file(GOOD, "1433221332118,,view,2,"), 3, C.VISITOR, "integer"),
    "negative_id": (events_file(GOOD, "1433221332118,1,view,-2,"), 3, C.ITEM, "integer"),
    "padded_id": (events_file(GOOD, "1433221332118,1,view, 2,"), 3, C.ITEM, "integer"),
    "id_over_int64": (
        events_file(GOOD, "1433221332118,1,view,99999999999999999999,"),
        3,
        C.ITEM,
        "integer",
    ),
    "transactionid_on_view": (
        events_file(GOOD, "1433221332118,1,view,2,77"),
        3,
        C.TRANSACTION,
        "non-transaction",
    ),
    "transaction_without_id": (
        events_file(GOOD, "1433221332118,1,transaction,2,"),
        3,
        C.TRANSACTION,
        "without transactionid",
    ),
    "non_integer_transactionid": (
        events_file(GOOD, "1433221332118,1,transaction,2,t-1"),
        3,
        C.TRANSACTION,
        "integer",
    ),
    "timestamp_before_2000": (events_file(GOOD, "123,1,view,2,"), 3, C.TIMESTAMP, "outside"),
    "timestamp_from_2100": (
        events_file(GOOD, "4102444800000,1,view,2,"),
        3,
        C.TIMESTAMP,
        "outside",
    ),
    "timestamp_in_seconds_with_fraction": (
        events_file(GOOD, "1433221332.117,1,view,2,"),
        3,
        C.TIMESTAMP,
        "integer",
    ),
    # the earliest bad line is reported even when a later line fails an earlier check
    "earliest_line_first": (
        events_file(GOOD, "1433221332118,1,view,x,", "1,1,view,2,"),
        3,
        C.ITEM,
        "(1 line(s) fail this check, 2 in all)",
    ),
    "count_of_bad_lines": (
        events_file(GOOD, "1,1,view,2,", BUY, "2,1,view,2,"),
        3,
        C.TIMESTAMP,
        "(2 line(s) fail this check, 2 in all)",
    ),
}


def assert_names_place(
    exc: DataValidationError, path: Path, line: int | None, column: str | None
) -> None:
    assert exc.file == str(path)
    assert exc.line == line
    assert exc.column == column
    text = str(exc)
    assert str(path) in text
    if line is not None:
        assert f"line {line}" in text
    if column is not None:
        assert repr(column) in text


@pytest.mark.parametrize(
    ("content", "line", "column", "reason"), EVENT_ERRORS.values(), ids=list(EVENT_ERRORS)
)
def test_invalid_events_file_names_file_line_and_column(
    tmp_path: Path, content: str | bytes, line: int, column: str | None, reason: str
) -> None:
    path = write(tmp_path, C.EVENTS_FILE, content)
    with pytest.raises(DataValidationError) as caught:
        load_events(path)
    assert_names_place(caught.value, path, line, column)
    assert reason in caught.value.reason


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file not found") as caught:
        load_dataset(tmp_path)
    assert_names_place(caught.value, tmp_path / C.EVENTS_FILE, None, None)


def test_invalid_property_file_is_named_with_its_own_line(tmp_path: Path) -> None:
    part1 = write(tmp_path, C.PROPERTIES_FILES[0], PART1_CSV)
    part2 = write(tmp_path, C.PROPERTIES_FILES[1], PART2_CSV + "1433041200000,4604x9,available,1\n")
    with pytest.raises(DataValidationError, match="integer") as caught:
        load_item_properties([part1, part2])
    assert_names_place(caught.value, part2, 5, C.ITEM)


def test_property_name_may_not_be_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "props.csv", PART2_CSV + "1433041200000,1,,1\n")
    with pytest.raises(DataValidationError, match="empty name") as caught:
        load_item_properties(path)
    assert_names_place(caught.value, path, 5, C.PROPERTY)


def test_category_parent_must_be_an_integer(tmp_path: Path) -> None:
    path = write(tmp_path, C.CATEGORY_TREE_FILE, "categoryid,parentid\n1,\n2,1.0\n")
    with pytest.raises(DataValidationError, match="integer") as caught:
        load_category_tree(path)
    assert_names_place(caught.value, path, 3, C.PARENT)


def test_category_with_two_different_parents_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, C.CATEGORY_TREE_FILE, "categoryid,parentid\n1,\n2,1\n3,1\n2,3\n")
    with pytest.raises(DataValidationError, match="different parent") as caught:
        load_category_tree(path)
    assert_names_place(caught.value, path, 5, C.PARENT)
