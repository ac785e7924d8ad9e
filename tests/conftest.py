"""Fixtures shared by every test: event store URLs on a real SQLite file and real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.helpers import TINY_SCALE

#: the PostgreSQL server the tests talk to (trust auth, database ``test``)
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic RetailRocket files at 5% scale (~140k events), generated once per session."""
    from recsys.data.synth import synthesize

    out = tmp_path_factory.mktemp("raw")
    synthesize(out, scale=TINY_SCALE, seed=7, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, tiny_raw: Path) -> str:
    """URL of a SQLite event store holding ``tiny_raw`` (events, property rows, tree).

    Shared by the session: tests that write events copy it first (``tests.helpers.copy_store``).
    """
    from recsys.data import EventStore

    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'events.db'}"
    store = EventStore(url)
    store.import_folder(tiny_raw)
    store.engine.dispose()
    return url


def _require_postgres(dsn: str) -> None:
    """Unreachable server: a failure when ``CI`` is set, else a skip."""
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {dsn} is not reachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """A superuser connection string to the local PostgreSQL's maintenance database."""
    dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
    _require_postgres(dsn)
    return dsn


@pytest.fixture
def tmp_sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file in a folder that does not exist yet (the store creates it)."""
    return f"sqlite:///{tmp_path / 'store' / 'events.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of the real PostgreSQL, confined to a fresh schema dropped after the test.

    Unreachable server: a failure when ``CI`` is set, else a skip.
    """
    _require_postgres(PG_DSN)
    admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            # every connection of the URL sees only this schema (temp tables stay in pg_temp)
            yield f"{PG_URL}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
