"""Fixtures of the Airflow tests: one migrated Airflow home per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow_testkit import migrate


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home whose SQLite metadata database is migrated (shared by the session)."""
    home = tmp_path_factory.mktemp("airflow-home")
    migrate(home)
    return home
