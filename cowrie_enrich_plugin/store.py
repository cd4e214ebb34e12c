"""The cache: SQLAlchemy tables, bulk queries, leases, on SQLite or PostgreSQL.

Two tables and a version table:

- ``enrichment_record``: the best known record per address (one row per IP).
- ``pending_queue``: the work still to do per address (unknown, stale or failed),
  with attempts, last error, next attempt time and a *lease*: the process that
  claimed the address before asking the network. A lease expires, so a crashed
  holder's addresses are picked up again; a holder on this host whose process is
  gone is overtaken at once.

Every read is a chunked ``IN``; every write a multi-row ``INSERT ... ON CONFLICT``,
with rows sorted by address so that concurrent writers on PostgreSQL take row
locks in the same order and cannot deadlock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import StoreError
from .record import EnrichmentRecord, GeoAnswer, Status, utc_now
from .store_bulk import BulkInsert
from .store_rows import RECORD_COLUMNS, TimeValue, aware, naive, record_values, row_record
from .store_schema import (
    SCHEMA_VERSION,
    SchemaTooNew,
    metadata,
    migrate,
    pending_queue,
    records_table,
)

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "StoreStats", "open_store"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_READ_CHUNK: Final = 30_000  # below SQLite's 32,766 and PostgreSQL's 65,535 parameters
_WRITE_CHUNK: Final = 500  # rows per multi-row INSERT (columns x rows stays under the limits)
_TRANSIENT_ATTEMPTS: Final = 9  # 0.2 s doubling to 5 s: rides out about 25 s of outage


@dataclass(frozen=True)
class StoreStats:
    """Counts by status and age, for ``cowrie-enrich cache stats``."""

    by_status: Mapping[str, int]
    fresh: int
    expired: int
    queued: int
    leased: int
    oldest_fetch: dt.datetime | None
    newest_fetch: dt.datetime | None
    schema_version: int


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: The lease owners of the stores open in this process.
_LIVE_OWNERS: set[str] = set()


def make_owner_id() -> str:
    """An id for this process's leases: host, pid and a random tag."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def _owner_is_dead_here(owner: str) -> bool:
    """Whether ``owner`` names a process on this host that no longer runs."""
    try:
        host, pid_text, _tag = owner.split("/")
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if pid == os.getpid():  # an earlier store of this process (a host that runs many times)
        return owner not in _LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# Statements run per batch, built once; ``ips`` is an expanding IN parameter, so a
# list of 30,000 addresses costs one bound list, not 30,000 bound parameters.
_TIME_COLUMNS: Final = frozenset(
    c.name
    for table in (records_table, pending_queue)
    for c in table.columns
    if isinstance(c.type, sa.DateTime)
)


def _ip_set(column: sa.Column[str], dialect: str) -> sa.ColumnElement[bool]:
    """``column IN`` a set of addresses bound as one parameter (see :func:`_ip_set_value`).

    One parameter, not one per address: SQLAlchemy's expanding ``IN`` renders and
    names each of them on every execution, which cost more than the query.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # imported only for PostgreSQL (~30 ms)

        return column == sa.any_(sa.bindparam("ips", type_=postgresql.ARRAY(sa.String)))
    each = sa.func.json_each(sa.bindparam("ips"))
    return column.in_(sa.select(sa.literal_column("value")).select_from(each).scalar_subquery())


def _ip_set_value(ips: Iterable[str], dialect: str) -> object:
    """The parameter of :func:`_ip_set`: a list on PostgreSQL, a JSON array on SQLite."""
    return list(ips) if dialect == "postgresql" else json.dumps(list(ips))


class _Queries:
    """The reads and deletes run per batch, built once per backend."""

    def __init__(self, dialect: str) -> None:
        r, q = records_table.c, pending_queue.c
        # On SQLite the times come back as the stored text and are parsed by ``aware``
        # with a cache: SQLAlchemy's per-value parsing would cost more than the query.
        columns = [
            sa.type_coerce(c, sa.String).label(c.name)
            if dialect == "sqlite" and c.name in _TIME_COLUMNS
            else c
            for c in records_table.columns
        ]
        self.records = sa.select(*columns).where(_ip_set(r.ip, dialect))
        # Only the primary key narrows this read: with a condition on ``lease_owner``
        # too, SQLite's planner may prefer that column and scan all the owner holds.
        self.owners = sa.select(q.ip, q.lease_owner).where(_ip_set(q.ip, dialect))
        self.fresh = sa.select(r.ip).where(
            _ip_set(r.ip, dialect),
            sa.or_(
                r.status == Status.SKIPPED.value,
                sa.and_(
                    r.status != Status.PENDING.value,
                    r.expires_at > sa.bindparam("now", type_=sa.DateTime()),
                ),
            ),
        )
        self.delete_queued = sa.delete(pending_queue).where(_ip_set(q.ip, dialect))


#: Errors of a database that answered and then dropped or refused one transaction.
_INTERRUPTED: Final = (
    "database is locked",
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "consuming input failed",
    "deadlock detected",
    "could not serialize",
    "the connection is lost",
)
#: Errors of a database that does not answer at all (yet).
_UNREACHABLE: Final = ("could not connect", "connection refused")


def _is_interrupted(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return exc.connection_invalidated or any(word in text for word in _INTERRUPTED)


def _is_transient(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return _is_interrupted(exc) or any(word in text for word in _UNREACHABLE)


def _with_retries(
    step: Callable[[], _T], transient: Callable[[sa.exc.DBAPIError], bool] = _is_transient
) -> _T:
    """Run ``step``, again after each ``transient`` database error, backing off (about 25 s).

    :raises sqlalchemy.exc.DBAPIError: a lasting or not transient error.
    """
    delay = 0.2
    for attempt in range(1, _TRANSIENT_ATTEMPTS + 1):
        try:
            return step()
        except sa.exc.DBAPIError as exc:
            if attempt == _TRANSIENT_ATTEMPTS or not transient(exc):
                raise
            logger.warning("database hiccup (%s); retrying in %.1fs", exc.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


class Store:
    """The enrichment cache on one SQLAlchemy engine. Safe to share between threads."""

    def __init__(self, engine: Engine, owner: str | None = None) -> None:
        self.engine = engine
        self.owner = owner or make_owner_id()
        _LIVE_OWNERS.add(self.owner)
        self.statements = 0
        self._when = self._time_converter()
        self._write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        sa.event.listen(engine, "before_cursor_execute", self._count_statement)
        self._queries = _Queries(engine.dialect.name)
        self._build_statements()

    def _build_statements(self) -> None:
        """The bulk statements, compiled once, each run as multi-row statements.

        They go to the driver as they are (``exec_driver_sql``, see
        :mod:`.store_bulk`): per-row parameter processing in SQLAlchemy would cost
        more than the database's own work.
        """
        q = pending_queue.c
        claim = self._insert(pending_queue)
        claim = claim.on_conflict_do_update(
            index_elements=[q.ip],
            set_={
                "lease_owner": claim.excluded.lease_owner,
                "lease_expires_at": claim.excluded.lease_expires_at,
            },
            # queued_at of the proposed row is "now": a lease that ended by then is free
            where=sa.or_(
                q.lease_expires_at.is_(None),
                q.lease_expires_at <= claim.excluded.queued_at,
                q.lease_owner == claim.excluded.lease_owner,
            ),
        )
        self._claim_sql = self._compile(claim, _QUEUE_COLUMNS)
        placeholder = self._insert(records_table).on_conflict_do_nothing(
            index_elements=[records_table.c.ip]
        )
        self._placeholder_sql = self._compile(placeholder, _PLACEHOLDER_COLUMNS)
        upsert = self._insert(records_table)
        upsert = upsert.on_conflict_do_update(
            index_elements=[records_table.c.ip], set_=_all_columns(upsert)
        )
        self._upsert_sql = self._compile(upsert, RECORD_COLUMNS)
        pending = self._insert(records_table)
        pending = pending.on_conflict_do_update(
            index_elements=[records_table.c.ip],
            set_=_all_columns(pending),
            where=records_table.c.status == sa.literal_column("'pending'"),
        )
        self._pending_sql = self._compile(pending, RECORD_COLUMNS)

    def _compile(self, stmt: Any, columns: Sequence[str]) -> BulkInsert:
        return BulkInsert.compile(stmt, columns, self.engine.dialect)

    def _time_converter(self) -> TimeValue:
        """Times as the driver takes them: naive UTC, as text on SQLite.

        On SQLite, the text SQLAlchemy itself would store; each distinct time is
        converted once (a batch shares its times).
        """
        as_text = self.engine.dialect.name == "sqlite"
        cache: dict[dt.datetime, Any] = {}

        def when(value: dt.datetime | None) -> Any:
            if value is None:
                return None
            try:
                return cache[value]
            except KeyError:
                pass
            moment = naive(value)
            assert moment is not None
            converted = moment.strftime("%Y-%m-%d %H:%M:%S.%f") if as_text else moment
            if len(cache) >= 4096:
                cache.clear()
            cache[value] = converted
            return converted

        return when

    def _count_statement(self, *_args: object, **_kwargs: object) -> None:
        self.statements += 1

    @property
    def dialect(self) -> str:
        """The backend's name: ``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def close(self) -> None:
        """Release every pooled connection; leases left behind become take-over-able here."""
        _LIVE_OWNERS.discard(self.owner)
        self.engine.dispose()

    # -- transactions with retry ---------------------------------------------------

    def _run(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in one transaction, retrying it when the database hiccups."""

        def transaction() -> _T:
            with self.engine.begin() as conn:
                return work(conn)

        try:
            return _with_retries(transaction)
        except sa.exc.DBAPIError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc

    def _write(self, work: Callable[[Connection], _T]) -> _T:
        """Run a writing transaction; on SQLite, this process's threads take turns.

        SQLite's own busy handler would make them sleep in coarse steps instead.
        """
        with self._write_lock:
            return self._run(work)

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        if self.dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table)
        raise StoreError(f"unsupported database backend {self.dialect!r}: use SQLite or PostgreSQL")

    # -- reads ------------------------------------------------------------------------

    def get_records(self, ips: Iterable[str]) -> dict[str, EnrichmentRecord]:
        """Return the stored records of ``ips`` (absent ones are left out), chunked ``IN``."""
        wanted = sorted(set(ips))
        found: dict[str, EnrichmentRecord] = {}

        select, dialect = self._queries.records, self.dialect

        def work(conn: Connection) -> None:
            for chunk in _chunks(wanted, _READ_CHUNK):
                ips = _ip_set_value(chunk, dialect)
                for row in conn.execute(select, {"ips": ips}).mappings():
                    found[row["ip"]] = row_record(row)

        if wanted:
            self._run(work)
        return found

    def iter_records(self, batch: int = 5000) -> Iterator[EnrichmentRecord]:
        """Stream every stored record, ordered by address, a page at a time."""
        last = ""
        while True:
            query = (
                sa.select(records_table)
                .where(records_table.c.ip > last)
                .order_by(records_table.c.ip)
                .limit(batch)
            )
            rows = self._run(functools.partial(_fetch_mappings, query))
            if not rows:
                return
            for row in rows:
                yield row_record(row)
            last = rows[-1]["ip"]

    def due_pending(self, now: dt.datetime | None = None, limit: int = 100_000) -> list[str]:
        """Addresses in the queue whose next attempt is due and whose lease is free."""
        moment = naive(now or utc_now())
        q = pending_queue.c
        query = (
            sa.select(q.ip)
            .where(sa.or_(q.next_attempt_at.is_(None), q.next_attempt_at <= moment))
            .where(sa.or_(q.lease_expires_at.is_(None), q.lease_expires_at <= moment))
            .order_by(q.ip)
            .limit(limit)
        )
        return self._run(lambda conn: [row[0] for row in conn.execute(query)])

    def queued(self, ips: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        """For queued addresses among ``ips``: (attempts, last error)."""
        wanted = sorted(set(ips))
        found: dict[str, tuple[int, str | None]] = {}

        def work(conn: Connection) -> None:
            q = pending_queue.c
            for chunk in _chunks(wanted, _READ_CHUNK):
                query = sa.select(q.ip, q.attempts, q.last_error).where(q.ip.in_(chunk))
                for ip, attempts, error in conn.execute(query):
                    found[ip] = (attempts, error)

        if wanted:
            self._run(work)
        return found

    # -- leases -------------------------------------------------------------------------

    def claim(
        self,
        ips: Iterable[str],
        lease_seconds: float,
        now: dt.datetime | None = None,
    ) -> set[str]:
        """Lease ``ips`` for this process before asking the network; return those won.

        In the same transaction, an address with no record gets a ``pending`` record,
        so that it is durably known as pending before its batch is sent. An address
        whose lease another live process holds is not returned.
        """
        wanted = sorted(set(ips))
        if not wanted:
            return set()
        moment = naive(now or utc_now())
        assert moment is not None
        until = moment + dt.timedelta(seconds=lease_seconds)
        won: set[str] = set()
        at, expires, owner = self._when(moment), self._when(until), self.owner

        def work(conn: Connection) -> None:
            won.clear()
            for chunk in _chunks(wanted, _WRITE_CHUNK):
                self._claim_sql.run(
                    conn,
                    [(ip, 0, None, at, at, owner, expires) for ip in chunk],
                )
                # The upsert took (or extended) the lease unless another live
                # process holds it: ours are those whose owner is now this store.
                claimed = {
                    ip
                    for ip, holder in conn.execute(
                        self._queries.owners, {"ips": _ip_set_value(chunk, self.dialect)}
                    )
                    if holder == owner
                }
                # Another process may have answered some since our cache check and
                # left the queue: those are not to be asked again.
                fresh = self._fresh_among(conn, claimed, moment)
                if fresh:
                    conn.execute(
                        sa.delete(pending_queue).where(
                            pending_queue.c.ip.in_(sorted(fresh)),
                            pending_queue.c.lease_owner == self.owner,
                        )
                    )
                won.update(claimed - fresh)
                self._placeholder_sql.run(conn, [(ip, "pending", False, at) for ip in chunk])

        self._write(work)
        lost = [ip for ip in wanted if ip not in won]
        if lost:
            won |= self._overtake_dead(lost, until)
        return won

    def _fresh_among(self, conn: Connection, ips: set[str], moment: dt.datetime) -> set[str]:
        if not ips:
            return set()
        rows = conn.execute(
            self._queries.fresh, {"ips": _ip_set_value(sorted(ips), self.dialect), "now": moment}
        )
        return {row[0] for row in rows}

    def _overtake_dead(self, ips: Sequence[str], until: dt.datetime) -> set[str]:
        """Take over leases held by processes on this host that are gone."""
        q = pending_queue.c

        def owners(conn: Connection) -> dict[str, list[str]]:
            by_owner: dict[str, list[str]] = {}
            for chunk in _chunks(ips, _READ_CHUNK):
                for ip, owner in conn.execute(
                    sa.select(q.ip, q.lease_owner).where(q.ip.in_(chunk))
                ):
                    if owner:
                        by_owner.setdefault(owner, []).append(ip)
            return by_owner

        dead = {
            owner: held for owner, held in self._run(owners).items() if _owner_is_dead_here(owner)
        }
        if not dead:
            return set()
        taken: set[str] = set()

        def work(conn: Connection) -> None:
            for owner, held in dead.items():
                for chunk in _chunks(held, _WRITE_CHUNK):
                    stmt = (
                        sa.update(pending_queue)
                        .where(q.ip.in_(chunk), q.lease_owner == owner)
                        .values(lease_owner=self.owner, lease_expires_at=until)
                        .returning(q.ip)
                    )
                    taken.update(row[0] for row in conn.execute(stmt))

        self._write(work)
        if taken:
            logger.info("took over %d address(es) leased by exited processes", len(taken))
        return taken

    def release(self) -> None:
        """Give up every lease this process holds (its addresses stay queued)."""
        stmt = (
            sa.update(pending_queue)
            .where(pending_queue.c.lease_owner == self.owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
        self._write(lambda conn: conn.execute(stmt))

    # -- writes -------------------------------------------------------------------------

    def save(
        self,
        resolved: Sequence[EnrichmentRecord],
        unresolved: Mapping[str, tuple[str, GeoAnswer | None]] | None = None,
        *,
        retry_delay: float = 0.0,
        now: dt.datetime | None = None,
    ) -> None:
        """Persist one batch's outcome in one transaction.

        ``resolved`` records replace what was stored and leave the queue.
        ``unresolved`` addresses (ip -> (last error, MaxMind answer)) stay queued
        with one more attempt, due again after ``retry_delay`` seconds (0: on the
        next flush or run), and their lease released; their
        record becomes ``pending`` (with its MaxMind data) unless an older answer is
        stored, which is served, stale, until a refresh succeeds.
        """
        moment = naive(now or utc_now())
        assert moment is not None
        records = sorted(resolved, key=lambda r: r.ip)
        failed = dict(sorted((unresolved or {}).items()))
        when = self._when
        now_value = when(moment)

        def work(conn: Connection) -> None:
            for chunk in _chunks(records, _WRITE_CHUNK):
                self._upsert_sql.run(conn, [record_values(r, now_value, when) for r in chunk])
                conn.execute(
                    self._queries.delete_queued,
                    {"ips": _ip_set_value((r.ip for r in chunk), self.dialect)},
                )
            if not failed:
                return
            items = list(failed.items())
            for part in _chunks(items, _WRITE_CHUNK):
                self._pending_sql.run(
                    conn,
                    [
                        record_values(
                            EnrichmentRecord(ip, Status.PENDING, maxmind=geo), now_value, when
                        )
                        for ip, (_error, geo) in part
                    ],
                )
            by_error: dict[str, list[str]] = {}
            for ip, (error, _geo) in items:
                by_error.setdefault(error[:500], []).append(ip)
            q = pending_queue.c
            for error, ips in by_error.items():
                for ip_chunk in _chunks(ips, _READ_CHUNK):
                    conn.execute(
                        sa.update(pending_queue)
                        .where(q.ip.in_(ip_chunk))
                        .values(
                            attempts=q.attempts + 1,
                            last_error=error,
                            next_attempt_at=moment + dt.timedelta(seconds=retry_delay),
                            lease_owner=None,
                            lease_expires_at=None,
                        )
                    )

        self._write(work)

    def put_records(self, records: Sequence[EnrichmentRecord]) -> None:
        """Upsert records that need no queue bookkeeping (skipped addresses)."""
        moment = naive(utc_now())
        assert moment is not None
        ordered = sorted(records, key=lambda r: r.ip)
        when = self._when
        now_value = when(moment)

        def work(conn: Connection) -> None:
            for chunk in _chunks(ordered, _WRITE_CHUNK):
                self._upsert_sql.run(conn, [record_values(r, now_value, when) for r in chunk])

        if ordered:
            self._write(work)

    def enqueue(self, ips: Iterable[str], now: dt.datetime | None = None) -> None:
        """Queue addresses for a (re)fetch without leasing them (``cache retry``)."""
        moment = naive(now or utc_now())
        wanted = sorted(set(ips))

        def work(conn: Connection) -> None:
            for chunk in _chunks(wanted, _WRITE_CHUNK):
                stmt = self._insert(pending_queue).values(
                    [
                        {"ip": ip, "attempts": 0, "queued_at": moment, "next_attempt_at": moment}
                        for ip in chunk
                    ]
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[pending_queue.c.ip], set_={"next_attempt_at": moment}
                    )
                )

        if wanted:
            self._write(work)

    def prune(self, now: dt.datetime | None = None) -> int:
        """Delete expired records that are not queued; return how many."""
        moment = naive(now or utc_now())
        r = records_table.c
        stmt = (
            sa.delete(records_table)
            .where(r.expires_at.is_not(None), r.expires_at <= moment)
            .where(~sa.exists().where(pending_queue.c.ip == r.ip))
        )
        return int(self._write(lambda conn: conn.execute(stmt).rowcount))

    def stats(self, now: dt.datetime | None = None) -> StoreStats:
        """Counts by status and age."""
        moment = naive(now or utc_now())
        r, q = records_table.c, pending_queue.c

        def work(conn: Connection) -> StoreStats:
            by_status: dict[str, int] = dict(
                conn.execute(sa.select(r.status, sa.func.count()).group_by(r.status)).all()
            )
            fresh = conn.execute(
                sa.select(sa.func.count()).where(r.expires_at > moment)
            ).scalar_one()
            expired = conn.execute(
                sa.select(sa.func.count()).where(r.expires_at <= moment)
            ).scalar_one()
            queued = conn.execute(
                sa.select(sa.func.count()).select_from(pending_queue)
            ).scalar_one()
            leased = conn.execute(
                sa.select(sa.func.count()).where(q.lease_expires_at > moment)
            ).scalar_one()
            oldest, newest = conn.execute(
                sa.select(sa.func.min(r.cymru_fetched_at), sa.func.max(r.cymru_fetched_at))
            ).one()
            return StoreStats(
                by_status={str(k): int(v) for k, v in by_status.items()},
                fresh=int(fresh),
                expired=int(expired),
                queued=int(queued),
                leased=int(leased),
                oldest_fetch=aware(oldest),
                newest_fetch=aware(newest),
                schema_version=SCHEMA_VERSION,
            )

        return self._run(work)


def _fetch_mappings(query: sa.Select[Any], conn: Connection) -> list[Mapping[str, Any]]:
    return [dict(row) for row in conn.execute(query).mappings()]


_PLACEHOLDER_COLUMNS: Final = ("ip", "status", "mm_present", "updated_at")
_QUEUE_COLUMNS: Final = (
    "ip",
    "attempts",
    "last_error",
    "queued_at",
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
)


def _all_columns(stmt: Any) -> dict[str, Any]:
    return {c.name: stmt.excluded[c.name] for c in records_table.columns if c.name != "ip"}


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and create or migrate, unless ``create`` is false) the store at ``url``.

    :raises StoreError: with advice, when the URL is malformed, the driver is
        missing or the database cannot be reached.
    """
    try:
        parsed = sa.engine.make_url(url)
        # A pooled PostgreSQL connection may have been dropped by the server; a
        # SQLite file's cannot be, and a ping before each transaction is wasted.
        engine = sa.create_engine(parsed, pool_pre_ping=parsed.get_backend_name() != "sqlite")
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"db URL {url!r} is not a database URL: {exc}") from exc
    except ModuleNotFoundError as exc:
        hint = " (pip install 'cowrie-enrich-plugin[postgresql]')" if "psycopg" in str(exc) else ""
        raise StoreError(f"the database driver for {url!r} is not installed{hint}") from exc
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL")
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    store = Store(engine)
    try:
        # A database that answered and then dropped the migration is retried; one
        # that does not answer at all is reported at once.
        _with_retries(
            lambda: migrate(engine) if create else engine.connect().close(), _is_interrupted
        )
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise StoreError(f"cannot open the database {engine.url!r}: {exc.orig}".strip()) from exc
    except SchemaTooNew as exc:
        engine.dispose()
        raise StoreError(str(exc)) from exc
    return store


__all__ += ["make_owner_id", "metadata"]
