"""Opening the store: the engine made from the ``db`` URL, the schema created or migrated."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
import tenacity

from ..dburl import check_db_location, mask_url, normalize_db_url, scrub, sqlite_file
from ..errors import ConfigError, StoreError
from .facade import Store
from .leases import forget_owner, make_owner_id, remember_owner
from .presence import session_name
from .retry import first_line, is_interrupted, with_retries
from .schema import SchemaTooNew, current_version, migrate, refuse_newer

__all__ = ["EmptyDatabase", "cannot_write", "open_store"]

_WAL_ATTEMPTS: Final = 100  # 5 s


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    # Switching a new file to WAL while another process opens it can fail at once
    # ("database is locked"): SQLite does not call the busy handler for it.
    tenacity.Retrying(
        stop=tenacity.stop_after_attempt(_WAL_ATTEMPTS),
        wait=tenacity.wait_fixed(0.05),
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
        ),
        sleep=time.sleep,
        reraise=True,
    )(cursor.execute, "PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _pooling(parsed: sa.engine.URL, url: str, path: Path | None, reader: bool) -> dict[str, Any]:
    """How the engine pools its connections: SQLAlchemy's way, but for a SQLite file's.

    A file this user cannot write gets a connection per transaction; one it can write,
    a pool that hands out the connection used last. A database server, SQLite in
    memory, or a URL for which the dialect picks another pool keep the dialect's own.
    """
    if path is None:
        return {}
    if reader:
        # A connection per transaction: each chooses anew between reading beside a
        # writer that started meanwhile (its -shm) and reading the file as it is.
        return {"creator": _read_only_connector(path, url), "poolclass": sa.pool.NullPool}
    choose = getattr(parsed.get_dialect(), "get_pool_class", None)
    if choose is None or choose(parsed) is not sa.pool.QueuePool:
        return {}  # ``?mode=memory``: one connection a thread, nothing to choose
    # The connection used last, not the one idle longest: a connection's page cache
    # lasts until another connection writes, so the store's threads taking turns on
    # one connection read a page once, not again at every turn (a cold ingest of
    # 50,000 addresses: 37,000 page reads, 10,000 with it).
    return {"pool_use_lifo": True}


def cannot_write(path: Path) -> bool:
    """Whether this user cannot change the SQLite file ``path``: it, or its folder, is read-only.

    WAL needs the folder as well as the file: a reader creates the ``-shm`` file beside it.
    """
    return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


def _access_hint(path: Path) -> str:
    """What keeps this user from ``path``, with what mends it ("" when nothing does)."""
    if os.path.exists(path) and not os.access(path, os.R_OK):  # never raises
        owner = _owner(path)
        return (
            f" (this user cannot read {path}: run as {owner}, who owns it, or let this "
            f"user read it: `sudo chmod g+r {path}` with this user in its group)"
        )
    if cannot_write(path):
        return f" (this user cannot write {path} or its folder)"
    return ""


def _owner(path: Path) -> str:
    try:
        return path.owner()
    except (KeyError, OSError):  # no name for the uid (a container, another namespace)
        return f"uid {path.stat().st_uid}"


def _read_only_connector(path: Path, url: str) -> Callable[[], sqlite3.Connection]:
    """Connections that read ``path`` without writing anything, even beside it.

    A WAL database whose folder this user cannot write opens read-only only while a
    writer holds its ``-shm`` file. With no ``-wal`` file (or an empty one), the main
    file holds every committed change, so it is read as it is (``immutable``); with
    changes still in the ``-wal`` file, that would show an old state, so it is refused.
    A writer that starts during one transaction of such a read can still change the
    file under it (reported as a damaged file); the next transaction sees the writer.
    """
    uri = path.resolve().as_uri()

    def connect() -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc) and "unable to open" not in str(exc):
                raise
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError(
                    f"cannot read the database {mask_url(url)!r}: its latest changes are in "
                    f"{wal}, and this user cannot create {path.name}-shm beside it; read it "
                    "while its writer runs, or as a user who can write its folder"
                ) from exc
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)

    return connect


def _driver_options(parsed: sa.URL, url: str) -> tuple[sa.URL, dict[str, Any]]:
    """``parsed`` without what the URL says to psycopg itself rather than to the server.

    ``?prepare_threshold=none`` turns off psycopg's server-side prepared statements,
    which a pooler in transaction mode (pgbouncer before 1.21) cannot keep: a
    statement prepared on one server connection is missing, or already there, on the
    next. Passed on as written, the value reaches psycopg as a string and fails.

    :raises ConfigError: for a value that is neither ``none`` nor a whole number.
    """
    value = parsed.query.get("prepare_threshold")
    if value is None or parsed.get_backend_name() != "postgresql":
        return parsed, {}
    text = value if isinstance(value, str) else value[-1]
    if text.lower() in ("none", "off", ""):
        threshold: int | None = None
    elif text.isdigit():
        threshold = int(text)
    else:
        raise ConfigError(
            f"db = {mask_url(url)!r}: prepare_threshold={text!r} is neither none (no "
            "prepared statements, for pgbouncer in transaction mode) nor a number"
        )
    return parsed.difference_update_query(["prepare_threshold"]), {"prepare_threshold": threshold}


def _may_announce(parsed: sa.URL, connect_args: dict[str, Any]) -> bool:
    """Whether this store may name its sessions after its owner id (:mod:`.presence`).

    Not on SQLite, nor for a pooler in transaction mode (``prepare_threshold=none``),
    nor over a session name the operator gave (the URL's or ``PGAPPNAME``).
    """
    if parsed.get_backend_name() != "postgresql" or "application_name" in parsed.query:
        return False
    pooled = "prepare_threshold" in connect_args and connect_args["prepare_threshold"] is None
    return not pooled and not os.environ.get("PGAPPNAME")


def _direct(engine: sa.Engine) -> bool:
    """Whether the server sees this process's connections as they are.

    The client port it reports is this end's: a pooler or a proxy between shows its
    own, and a Unix socket none.
    """
    with engine.connect() as conn:
        # psycopg 3's; another driver's connection is not judged (nor announced)
        pgconn: Any = getattr(conn.connection.dbapi_connection, "pgconn", None)
        try:
            with socket.socket(fileno=os.dup(pgconn.socket)) as end:
                if end.family not in (socket.AF_INET, socket.AF_INET6):
                    return False
                port = end.getsockname()[1]
        except (AttributeError, OSError, ValueError):
            return False
        return bool(conn.exec_driver_sql("SELECT inet_client_port()").scalar() == port)


def _announce(store: Store, session: dict[str, str]) -> None:
    """Give ``store`` an announced owner id and name its sessions after it, from now on."""
    owner = make_owner_id(announced=True)
    session["application_name"] = session_name(owner) or ""
    store.engine.dispose()  # the connections opened so far carry no name
    forget_owner(store.owner)
    store.owner = owner
    remember_owner(owner)


class EmptyDatabase(StoreError):
    """The database holds no store (opened without creating one)."""


def _check_version(engine: sa.Engine, url: str) -> None:
    """Connect; refuse a database without a store, or of a newer schema than this knows.

    A reader changes nothing.

    :raises StoreError: for an empty database (a mistyped ``db`` would look like success).
    """
    with engine.connect() as conn:
        if current_version(conn) == 0:
            raise EmptyDatabase(
                f"the database {mask_url(url)!r} holds no cowrie-enrich store: check db "
                "(--db), or run `cowrie-enrich ingest` once to create it"
            )
        refuse_newer(conn)


def open_store(
    url: str, *, create: bool = True, read_only: bool = False, upgrade: bool = False
) -> Store:
    """Open (and create or migrate, unless ``create`` is false) the store at ``url``.

    Without ``create``, a SQLite file that does not exist, or a database that holds
    no store, is refused, not made; with ``upgrade`` too, a store of an older
    schema is migrated (a command that writes to a store it must not create).
    ``read_only`` (which implies no ``create``) reads a SQLite file that this user
    cannot write, or that sits in a folder this user cannot write.

    :raises ConfigError: when ``url`` is not a database URL.
    :raises StoreError: with advice, when the driver is missing or the database
        cannot be reached.
    """
    create = create and not read_only
    check_db_location(url, must_exist=not create)
    path = sqlite_file(url)
    reader = read_only and path is not None and cannot_write(path)
    try:
        parsed, connect_args = _driver_options(sa.engine.make_url(normalize_db_url(url)), url)
        announcing = _may_announce(parsed, connect_args)
        # A pooled PostgreSQL connection may have been dropped by the server; a
        # SQLite file's cannot be, and a ping before each transaction is wasted.
        engine = sa.create_engine(
            parsed,
            pool_pre_ping=parsed.get_backend_name() != "sqlite",
            connect_args=connect_args,
            **_pooling(parsed, url, path, reader),
        )
    except ConfigError:
        raise
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
    if engine.dialect.name == "sqlite" and not reader:
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    session: dict[str, str] = {}  # what each new connection is named (once announced)
    if announcing:
        sa.event.listen(engine, "do_connect", lambda _d, _r, _a, params: params.update(session))
    store = Store(engine)
    try:
        # A database that answered and then dropped the migration is retried; one
        # that does not answer at all is reported at once.
        def prepare() -> None:
            if not create:
                _check_version(engine, url)
            if create or upgrade:
                migrate(engine)
            if announcing and not session and _direct(engine):
                _announce(store, session)

        with_retries(prepare, is_interrupted)
    except sa.exc.DatabaseError as exc:  # not reachable, locked, corrupt, not a database
        store.close()
        why = scrub(first_line(exc), url)
        if path is not None:
            why += _access_hint(path)
        raise StoreError(f"cannot open the database {mask_url(url)!r}: {why}") from exc
    except StoreError:
        store.close()
        raise
    except SchemaTooNew as exc:
        store.close()
        raise StoreError(str(exc)) from exc
    return store
