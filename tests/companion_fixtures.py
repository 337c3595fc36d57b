"""Fixtures for the companion tests, loaded with `pytest_plugins = ("companion_fixtures",)`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from companion_helpers import fresh_pg_database, sqlite_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same storage test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    with fresh_pg_database(request.getfixturevalue("pg_url")) as url:
        yield url
