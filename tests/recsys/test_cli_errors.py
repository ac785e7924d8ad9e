"""CLI errors are one line that says what and where, exit code 2, no traceback (issue 15)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys import cli

pytestmark = pytest.mark.data

HEADER = "timestamp,visitorid,event,itemid,transactionid\n"


def _one_line_error(args: list[str], *expected: str, **env: str) -> str:
    result = CliRunner().invoke(cli.app, args, env=env)
    output = result.output.strip()
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    assert output.startswith("error: ") and "\n" not in output, output
    assert "Traceback" not in output
    for text in expected:
        assert text in output, output
    return output


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "events.csv").write_text(HEADER + "1431226800000,1,view,2,\n")
    return folder


def test_unreachable_database(raw: Path, refused_url: str) -> None:
    _one_line_error(["data", "import", str(raw), "--db", refused_url], "127.0.0.1:9", "refused")
    _one_line_error(["train", "--db", refused_url], "127.0.0.1:9")


def test_locked_sqlite_file(raw: Path, tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    assert CliRunner().invoke(cli.app, ["data", "import", str(raw), "--db", url]).exit_code == 0
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        args = ["data", "import", str(raw), "--db", url]
        _one_line_error(args, str(path), "locked", RECSYS_DB_TIMEOUT_S="0.2")


def test_bad_folders(raw: Path, tmp_path: Path) -> None:
    _one_line_error(["data", "import", str(tmp_path / "nope")], "nope/events.csv", "not found")
    url = f"sqlite:///{raw / 'events.csv' / 'store.db'}"  # a file where a folder should be
    _one_line_error(["data", "import", str(raw), "--db", url], "events.csv")
    _one_line_error(["data", "synth", "--out", str(raw / "events.csv" / "x")], "events.csv")


@pytest.fixture
def refused_url() -> str:
    """A PostgreSQL URL nobody listens at (the discard port)."""
    return "postgresql://postgres@127.0.0.1:9/nowhere"
