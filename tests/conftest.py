"""Shared fixtures: store URLs (SQLite always, PostgreSQL when configured), .mmdb files, logs."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.testing import BulkWhoisServer

# The PostgreSQL server to test against, as an admin URL (psycopg form). When set,
# the suite creates one database for the session and drops it at the end; when set
# but unreachable, the session fails instead of skipping. .ci/run sets it.
PG_ADMIN_ENV = "CE_TEST_PG_ADMIN_URL"
# Feeds off for every test (and every process a test starts) unless it turns them on:
# a long-lived host would otherwise download due feeds from their publishers.
os.environ["COWRIE_ENRICH_FEEDS_ENABLED"] = ""
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@contextlib.contextmanager
def pip_installed(folder: Path, name: str, forget: Callable[[], None]) -> Iterator[None]:
    """``pip install`` the distribution in ``folder`` into this environment, then uninstall it.

    ``forget`` clears what caches the entry points (called after each step).
    """
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*install, str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    forget()
    try:
        yield
    finally:
        subprocess.run(
            [sys.executable, "-m", "pip", "uninstall", "-q", "-y", name], capture_output=True
        )
        forget()


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path


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


def host_config(server: BulkWhoisServer, db_url: str, **extra: Any) -> dict[str, Any]:
    """A host configuration pointing the plugin at ``server`` and ``db_url``."""
    host, port = server.address
    section: dict[str, Any] = {
        "db": db_url,
        "cymru_host": host,
        "cymru_port": port,
        "flush_interval": 0.2,
        "timeout": 5,
        "retries": 3,
    }
    section.update(extra)
    return {"plugins": {"enabled": ["enrich"], "enrich": section}}


def global_ips(count: int, seed: int = 7, v6_share: float = 0.0) -> list[str]:
    """Distinct globally routable addresses, deterministic for a seed."""
    from cowrie_enrich_plugin.addresses import Usable, classify

    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        if rng.random() < v6_share:
            text = f"2a0{rng.randint(0, 9)}:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
        else:
            text = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        verdict = classify(text)
        if isinstance(verdict, Usable):
            found[verdict.ip] = None
    return list(found)


def write_log(
    path: Path, ips: list[str], events_per_ip: int = 3, extra_lines: list[str] | None = None
) -> Path:
    """Write a Cowrie-like log (gzip when the name ends in .gz) with events for ``ips``."""
    lines = []
    for n, ip in enumerate(ips):
        for k in range(events_per_ip):
            lines.append(
                json.dumps(
                    {
                        "eventid": "cowrie.session.connect" if k == 0 else "cowrie.login.failed",
                        "src_ip": ip,
                        "session": f"{n:08x}",
                        "timestamp": "2026-11-28T20:00:00.000000Z",
                    }
                )
            )
    lines.extend(extra_lines or [])
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path
