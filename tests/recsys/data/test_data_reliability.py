"""The data layer against poisoned input (issue 15): far-future events, huge lines."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from recsys.columns import ADDTOCART, VIEW
from recsys.data import EventStore, load_events
from recsys.data.check import interval_end
from recsys.exceptions import ConfigurationError, DataValidationError
from recsys.split import make_split
from tests.helpers import DAY, T0, make_events

pytestmark = pytest.mark.data

Y2099 = 4_070_908_800_000  # 2099-01-01: inside the contract's range, far after any clock
HEADER = "timestamp,visitorid,event,itemid,transactionid\n"


def _poisoned() -> list[tuple[int, int, str, int]]:
    rows = [(T0 + d * DAY + i, i, VIEW, 100 + i) for d in range(21) for i in range(5)]
    return [*rows, (T0 + 20 * DAY, 1, ADDTOCART, 101), (Y2099, 9, VIEW, 109)]


def test_interval_end_ignores_far_future_events_and_says_so(
    tmp_sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = EventStore(tmp_sqlite_url)
    store.append_events(make_events(_poisoned()))
    with caplog.at_level(logging.WARNING):
        assert interval_end(store, None) == T0 + 20 * DAY + 4 + 1
    assert "ignoring 1 event(s) dated after" in caplog.text


def test_split_ignores_far_future_events_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        split = make_split(make_events(_poisoned()), holdout_days=7, validation_days=7)
    assert split.end_ms == T0 + 20 * DAY + 4 + 1
    assert "ignoring 1 event(s) dated after" in caplog.text
    with pytest.raises(ConfigurationError, match="every event is dated after"):
        make_split(make_events([(Y2099, 1, VIEW, 1)]))


def test_import_flags_far_future_rows_with_a_count(
    tmp_path: Path, tmp_sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    soon = int(time.time() * 1000) + 60_000  # within the tolerance: not flagged
    lines = [f"{T0},1,view,2,", f"{soon},1,view,3,", f"{Y2099},1,view,4,", f"{Y2099 + 1},2,view,4,"]
    (folder / "events.csv").write_text(HEADER + "\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        imported = EventStore(tmp_sqlite_url).import_folder(folder)
    assert imported.events == 4 and imported.future_events == 2
    assert "2 event(s) dated more than 300 s after this machine's clock" in caplog.text


def _events_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("fields", ["", ",x,y"], ids=["right-count", "extra-fields"])
def test_line_over_16_mib_is_a_clear_error_with_file_and_line(tmp_path: Path, fields: str) -> None:
    huge = "9" * (17 << 20)  # longer than the CSV reader's block
    path = _events_file(
        tmp_path, f"{T0},1,view,2,", f"{T0},1,view,{huge}{fields}", f"{T0},2,view,3,"
    )
    with pytest.raises(DataValidationError) as caught:
        load_events(path)
    message = str(caught.value)
    assert caught.value.file == str(path) and caught.value.line == 3, message
    assert len(message) < 400, message[:400]


def test_errors_quote_a_short_prefix_of_a_huge_value(tmp_path: Path) -> None:
    path = _events_file(tmp_path, f"{T0},1,view,2,", f"{T0},{'x' * (10 << 20)},view,2,")
    with pytest.raises(DataValidationError, match=r"'xxxx.*\(10,485,760 characters\)") as caught:
        load_events(path)
    assert caught.value.line == 3 and len(str(caught.value)) < 400


def _create_schema(url: str, barrier: Any) -> None:
    barrier.wait()  # all four at once: the race of first imports
    try:
        EventStore(url).create_schema()
    except Exception as exc:
        print(f"create_schema failed: {exc}"[:300], flush=True)
        os._exit(1)


@pytest.mark.postgres
def test_concurrent_first_schema_creation_on_postgres(pg_admin_dsn: str) -> None:
    """Four processes create the schema of one empty database at once, three times over."""
    context = multiprocessing.get_context("fork")  # forked: no second import of the package
    for _ in range(3):
        name = f"i15_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            barrier = context.Barrier(4)
            processes = [
                context.Process(target=_create_schema, args=(url, barrier)) for _ in range(4)
            ]
            for process in processes:
                process.start()
            for process in processes:
                process.join(60)
            assert [p.exitcode for p in processes] == [0] * 4
            assert EventStore(url).schema_problems() == []
        finally:
            with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_delete_exposures_before_a_time(
    backend: str, request: pytest.FixtureRequest, tmp_sqlite_url: str
) -> None:
    url = tmp_sqlite_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = EventStore(url)
    rows = [(f"r{i}", T0 + i * DAY, 1, "default", "control", "v1", "1,2") for i in range(5)]
    store.log_exposures(rows)
    assert store.delete_exposures(T0 + 2 * DAY) == 2
    assert store.read_exposures()["request_id"].tolist() == ["r2", "r3", "r4"]
