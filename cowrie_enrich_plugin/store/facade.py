"""The store's façade: one SQLAlchemy engine, the records, the work queue and its leases.

Two tables (see :mod:`.schema`): ``enrichment_record`` holds the best known record
per address; ``pending_queue`` the work still to do per address (unknown, stale or
failed), with attempts, last error, next attempt time and a *lease*: the process
that claimed the address before asking the network. A lease expires, so a crashed
holder's addresses are picked up again; a holder on this host whose process is gone
is overtaken at once (:mod:`.leases`). Every transaction is retried when the
database hiccups (:mod:`.retry`); the statements are in :mod:`.sql`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreError
from ..record import EnrichmentRecord
from .census import StoreStats, census
from .dbclock import DatabaseClock
from .leases import forget_owner, make_owner_id, remember_owner
from .outcomes import BatchOutcome, persist
from .presence import dead_holders
from .retry import first_line, with_retries
from .rows import RECORD_COLUMNS, naive, record_values, row_record
from .schema import pending_queue, records_table
from .sql import Statements, ip_set, ip_set_params, time_converter

__all__ = ["Store", "StoreStats"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: The columns the offline sources fill: MaxMind's, and the feeds' labels.
_OFFLINE_COLUMNS: Final = (
    *(name for name in RECORD_COLUMNS if name.startswith("mm_")),
    "classification",
)


class Store:
    """The enrichment cache on one SQLAlchemy engine. Safe to share between threads.

    A context manager: leaving it closes the engine.
    """

    def __init__(self, engine: Engine, owner: str | None = None) -> None:
        self.engine = engine
        self.owner = owner or make_owner_id()
        remember_owner(self.owner)
        self.statements = 0
        self.dialect: str = engine.dialect.name
        self._when = time_converter(self.dialect)
        self._write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        sa.event.listen(engine, "before_cursor_execute", self._count_statement)
        self._sql = Statements(engine.dialect)
        self.now = DatabaseClock(engine).now  # the time every lease and backoff is read by

    def _count_statement(self, *_args: object, **_kwargs: object) -> None:
        self.statements += 1

    def close(self) -> None:
        """Release every pooled connection; leases left behind become take-over-able here."""
        forget_owner(self.owner)
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions with retry ---------------------------------------------------

    def run(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in one transaction, retried when the database hiccups.

        :raises StoreError: with the database's message, first line only.
        """
        return self._run(work)

    def write(self, work: Callable[[Connection], _T]) -> _T:
        """:meth:`run` for a writing transaction (this process's threads take turns on SQLite)."""
        return self._write(work)

    def _run(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in one transaction, retrying it when the database hiccups."""

        def transaction() -> _T:
            with self.engine.begin() as conn:
                return work(conn)

        try:
            return with_retries(transaction)
        except sa.exc.DBAPIError as exc:
            raise StoreError(f"database error: {first_line(exc)}") from exc

    def _write(self, work: Callable[[Connection], _T]) -> _T:
        """Run a writing transaction; on SQLite, this process's threads take turns.

        SQLite's own busy handler would make them sleep in coarse steps instead.
        """
        with self._write_lock:
            return self._run(work)

    def _ips(self, ips: Iterable[str]) -> dict[str, object]:
        return ip_set_params(ips, self.dialect)

    # -- reads ------------------------------------------------------------------------

    def get_records(self, ips: Iterable[str]) -> dict[str, EnrichmentRecord]:
        """Return the stored records of ``ips`` (absent ones are left out)."""
        wanted = sorted(set(ips))
        if not wanted:
            return {}
        select = self._sql.records

        def work(conn: Connection) -> dict[str, EnrichmentRecord]:
            rows = conn.execute(select, self._ips(wanted)).mappings()
            return {row["ip"]: row_record(row) for row in rows}

        return self._run(work)

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
        moment = naive(now or self.now())
        q = pending_queue.c
        query = (
            sa.select(q.ip)
            .where(sa.or_(q.next_attempt_at.is_(None), q.next_attempt_at <= moment))
            .where(sa.or_(q.lease_expires_at.is_(None), q.lease_expires_at <= moment))
            .order_by(q.ip)
            .limit(limit)
        )
        return self._run(lambda conn: [row[0] for row in conn.execute(query)])

    def backing_off(self, ips: Sequence[str], now: dt.datetime | None = None) -> set[str]:
        """The addresses of ``ips`` queued with their next attempt still to come."""
        if not ips:
            return set()
        moment = naive(now or self.now())
        q = pending_queue.c
        query = sa.select(q.ip).where(ip_set(q.ip, self.dialect), q.next_attempt_at > moment)
        return self._run(lambda conn: {row[0] for row in conn.execute(query, self._ips(ips))})

    def pending_count(self) -> int:
        """How many addresses are queued (pending) now."""
        query = sa.select(sa.func.count()).select_from(pending_queue)
        return int(self._run(lambda conn: conn.execute(query).scalar_one()))

    # -- leases -------------------------------------------------------------------------

    def claim(
        self,
        ips: Iterable[str],
        lease_seconds: float,
        now: dt.datetime | None = None,
    ) -> set[str]:
        """Lease ``ips`` for this process before asking the network; return those won.

        An address fresh in the store (another process answered it since this one
        looked) is not leased; one whose lease another live process holds is not
        returned; one whose holder on this host is gone is taken over. Until it is
        answered, a leased address is known by its queue row alone.
        """
        wanted = sorted(set(ips))
        if not wanted:
            return set()
        moment = naive(now or self.now())
        assert moment is not None
        until = moment + dt.timedelta(seconds=lease_seconds)
        owner, sql = self.owner, self._sql
        params = {
            **self._ips(wanted),
            "at": moment,
            "now": moment,
            "owner": owner,
            "expires": until,
        }

        def work(conn: Connection) -> set[str]:
            won = set(conn.execute(sql.claim, params).scalars().all())
            # Looked at again for answers stored meanwhile: on PostgreSQL all (READ
            # COMMITTED: the claim's snapshot predates answers committed while it ran),
            # on SQLite (one writer: the claim saw them all) those taken over.
            again = set(won) if self.dialect == "postgresql" else set()
            rest = [ip for ip in wanted if ip not in won]
            if rest:  # fresh by now, or leased elsewhere: by a live process?
                holders = dict(conn.execute(sql.owners, self._ips(rest)).all())
                dead = dead_holders(conn, holders.values(), owner)
                if dead:  # processes that are gone (here, or their sessions)
                    held = sorted(ip for ip, holder in holders.items() if holder in dead)
                    taken = sql.overtake(conn, held, dead, owner, until)
                    if taken:
                        logger.info(
                            "took over %d address(es) leased by exited processes", len(taken)
                        )
                    won.update(taken)
                    again.update(taken)
            if again:
                fresh = self._fresh_among(conn, sorted(again), moment)
                if fresh:
                    conn.execute(sql.delete_own, {**self._ips(sorted(fresh)), "owner": owner})
                    won -= fresh
            return won

        return self._write(work)

    def queue(self, ips: Iterable[str], now: dt.datetime | None = None) -> None:
        """Record ``ips`` as pending without leasing them (asked on a later start)."""
        wanted = sorted(set(ips))
        if not wanted:
            return
        moment = naive(now or self.now())
        params = {**self._ips(wanted), "at": moment, "now": moment, "owner": None, "expires": None}
        at, sql = self._when(moment), self._sql

        def work(conn: Connection) -> None:
            conn.execute(sql.claim, params).all()
            # Shown as pending by export and cache stats until a later start asks.
            sql.placeholder.run(conn, [(ip, "pending", False, at) for ip in wanted])

        self._write(work)

    def _fresh_among(self, conn: Connection, ips: Sequence[str], moment: dt.datetime) -> set[str]:
        if not ips:
            return set()
        rows = conn.execute(self._sql.fresh, {**self._ips(ips), "now": moment})
        return {row[0] for row in rows}

    def release(self) -> None:
        """Give up every lease this process holds (its addresses stay queued)."""
        stmt = (
            sa.update(pending_queue)
            .where(pending_queue.c.lease_owner == self.owner)
            .values(lease_owner=None, lease_expires_at=None)
        )

        def work(conn: Connection) -> None:
            self._sql.lock_owner(conn, self.owner)
            conn.execute(stmt)

        self._write(work)

    # -- writes -------------------------------------------------------------------------

    def save(
        self,
        resolved: Sequence[EnrichmentRecord],
        unresolved: Mapping[str, tuple[str, EnrichmentRecord | None]] | None = None,
        *,
        retry_delay: float = 0.0,
        backoff: float = 0.0,
        attempted: bool = True,
        now: dt.datetime | None = None,
    ) -> None:
        """Persist one batch's outcome in one transaction.

        ``resolved`` records replace what was stored and leave the queue.
        ``unresolved`` addresses (ip -> (last error, the pending record, offline
        sections and all; ``None``: a bare one)) stay queued with one more attempt,
        due again after ``retry_delay`` seconds (0: on the next flush or run) plus
        ``backoff`` doubled for each earlier failure (up to 16 times), and their lease
        released; their record becomes that pending one unless an older answer is
        stored, which is served, stale, until a refresh succeeds. Not ``attempted``
        (held back before asking): no attempt is counted, no backoff added.
        """
        outcome = BatchOutcome(resolved, unresolved or {}, retry_delay, backoff, attempted)
        self.save_outcomes([outcome], now=now)

    def save_outcomes(
        self, outcomes: Sequence[BatchOutcome], now: dt.datetime | None = None
    ) -> None:
        """Persist several batches' outcomes (each as :meth:`save` would) in one transaction."""
        moment = naive(now or self.now())
        assert moment is not None
        self._write(lambda conn: persist(conn, self._sql, outcomes, moment, self._when))

    def put_records(self, records: Sequence[EnrichmentRecord]) -> None:
        """Upsert records that need no queue bookkeeping (skipped addresses)."""
        moment = naive(self.now())
        assert moment is not None
        ordered = sorted(records, key=lambda r: r.ip)
        when = self._when
        now_value = when(moment)
        if ordered:
            self._write(
                lambda conn: self._sql.upsert.run(
                    conn, [record_values(r, now_value, when) for r in ordered]
                )
            )

    def relabel(self, records: Sequence[EnrichmentRecord]) -> None:
        """Store the offline sections (MaxMind, feed labels) of records otherwise unchanged."""
        r = records_table.c
        stmt = (
            sa.update(records_table)
            .where(r.ip == sa.bindparam("key"))
            .values({name: sa.bindparam(f"new_{name}") for name in _OFFLINE_COLUMNS})
        )
        rows = []
        for record in sorted(records, key=lambda r: r.ip):
            # The statement's own types convert the times (naive UTC).
            values = dict(zip(RECORD_COLUMNS, record_values(record, None, naive), strict=True))
            rows.append({"key": record.ip, **{f"new_{n}": values[n] for n in _OFFLINE_COLUMNS}})
        if rows:
            self._write(lambda conn: conn.execute(stmt, rows))

    # -- maintenance ----------------------------------------------------------------------

    def prune(self, now: dt.datetime | None = None) -> int:
        """Delete expired records that are not queued; return how many."""
        moment = naive(now or self.now())
        r = records_table.c
        stmt = (
            sa.delete(records_table)
            .where(r.expires_at.is_not(None), r.expires_at <= moment)
            .where(~sa.exists().where(pending_queue.c.ip == r.ip))
        )
        return int(self._write(lambda conn: conn.execute(stmt).rowcount))

    def stats(self, now: dt.datetime | None = None) -> StoreStats:
        """Counts by status and age."""
        moment = naive(now or self.now())
        assert moment is not None
        return self._run(functools.partial(census, now=moment))


def _fetch_mappings(query: sa.Select[Any], conn: Connection) -> list[Mapping[str, Any]]:
    return [dict(row) for row in conn.execute(query).mappings()]
