"""Fixtures of the infrastructure tests."""

from __future__ import annotations

import os

import psycopg
import pytest

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """A superuser connection string to the local PostgreSQL (a failure in CI when missing)."""
    try:
        psycopg.connect(ADMIN_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {exc}")
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    return ADMIN_DSN
