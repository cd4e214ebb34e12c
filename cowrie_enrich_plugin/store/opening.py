"""Opening the store: the engine made from the ``db`` URL, the schema created or migrated."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Final

import sqlalchemy as sa

from ..dburl import check_db_location, mask_url, normalize_db_url, scrub
from ..errors import ConfigError, StoreError
from .facade import Store
from .retry import first_line, is_interrupted, with_retries
from .schema import SchemaTooNew, migrate, refuse_newer

__all__ = ["open_store"]

_WAL_ATTEMPTS: Final = 100  # 5 s


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    # Switching a new file to WAL while another process opens it can fail at once
    # ("database is locked"): SQLite does not call the busy handler for it.
    for attempt in range(_WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _check_version(engine: sa.Engine) -> None:
    """Connect, and refuse a schema newer than this version knows (a reader changes nothing)."""
    with engine.connect() as conn:
        refuse_newer(conn)


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and create or migrate, unless ``create`` is false) the store at ``url``.

    Without ``create``, a SQLite file that does not exist is refused, not made.

    :raises ConfigError: when ``url`` is not a database URL.
    :raises StoreError: with advice, when the driver is missing or the database
        cannot be reached.
    """
    check_db_location(url, must_exist=not create)
    try:
        parsed = sa.engine.make_url(normalize_db_url(url))
        # A pooled PostgreSQL connection may have been dropped by the server; a
        # SQLite file's cannot be, and a ping before each transaction is wasted.
        engine = sa.create_engine(parsed, pool_pre_ping=parsed.get_backend_name() != "sqlite")
    except sa.exc.NoSuchModuleError as exc:
        raise ConfigError(
            f"db = {mask_url(url)!r}: unknown database kind; use sqlite:/// or postgresql+psycopg://"
        ) from exc
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f"db = {mask_url(url)!r} is not a usable database URL") from exc
    except ModuleNotFoundError as exc:
        missing = exc.name or "its module"
        hint = (
            " (pip install 'cowrie-enrich-plugin[postgresql]', which installs psycopg 3; "
            "write the URL as postgresql:// or postgresql+psycopg://)"
            if missing.startswith("psycopg") or "postgres" in url.split("://")[0]
            else ""
        )
        raise StoreError(
            f"the database driver for {mask_url(url)!r} is not installed ({missing}){hint}"
        ) from exc
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"db = {mask_url(url)!r}: unsupported database {engine.dialect.name!r}; "
            "use SQLite or PostgreSQL"
        )
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    store = Store(engine)
    try:
        # A database that answered and then dropped the migration is retried; one
        # that does not answer at all is reported at once.
        with_retries(lambda: migrate(engine) if create else _check_version(engine), is_interrupted)
    except sa.exc.DatabaseError as exc:  # not reachable, locked, corrupt, not a database
        store.close()
        raise StoreError(
            f"cannot open the database {mask_url(url)!r}: {scrub(first_line(exc), url)}"
        ) from exc
    except SchemaTooNew as exc:
        store.close()
        raise StoreError(str(exc)) from exc
    return store
