"""Shared fixtures: store URLs (SQLite always, PostgreSQL when configured), .mmdb files, logs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowrie_enrich_plugin.testing import BulkWhoisServer

from .helpers import end_other_sessions

# The PostgreSQL server to test against, as an admin URL (psycopg form). When set,
# the suite creates one database for the session and drops it at the end; when set
# but unreachable, the session fails instead of skipping. .ci/run sets it.
PG_ADMIN_ENV = "CE_TEST_PG_ADMIN_URL"
# Feeds off for every test (and every process a test starts) unless it turns them on:
# a long-lived host would otherwise download due feeds from their publishers.
os.environ["COWRIE_ENRICH_FEEDS_ENABLED"] = ""


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database URL for the session, or None when not configured."""
    admin_url = os.environ.get(PG_ADMIN_ENV)
    if not admin_url:
        yield None
        return
    import psycopg

    name = f"cowrie_enrich_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.exit(f"{PG_ADMIN_ENV}={admin_url} is set but PostgreSQL is unreachable: {exc}", 3)
    base = admin_url.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_pg(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        # A session an earlier test left (a worker thread it could not stop) would hold
        # its locks, and every later test would wait on them: one failure, not many.
        end_other_sessions(conn)
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def pg_url(pg_database: str | None) -> str:
    """An empty PostgreSQL database for one test (skips when none is configured)."""
    if pg_database is None:
        pytest.skip(f"{PG_ADMIN_ENV} is not set")
    _reset_pg(pg_database)
    return pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None) -> str:
    """A store URL per backend: SQLite always, PostgreSQL when configured."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if pg_database is None:
        pytest.skip(f"{PG_ADMIN_ENV} is not set")
    _reset_pg(pg_database)
    return pg_database


@pytest.fixture
def server() -> Iterator[BulkWhoisServer]:
    """A bulk whois server on loopback."""
    with BulkWhoisServer(seed=1234) as whois:
        yield whois


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test that needs PostgreSQL, so ``-m postgres`` selects them all.

    Those asking for ``pg_url`` or ``pg_database`` themselves, and the PostgreSQL case
    of every test parametrized over the backends (``db_url`` or a parameter of their own).
    """
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = [str(value) for value in callspec.params.values()] if callspec else []
        # db_url's SQLite case asks for pg_database too (to skip its other case).
        direct = "pg_url" in names or ("pg_database" in names and "db_url" not in names)
        if direct or "postgresql" in params:
            item.add_marker(pytest.mark.postgres)
