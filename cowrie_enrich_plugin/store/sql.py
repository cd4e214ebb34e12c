"""The statements the store runs per batch, built once per backend.

An address set is always bound as *one* parameter (:func:`ip_set`): a JSON array
read with ``json_each`` on SQLite, an array compared with ``ANY`` on PostgreSQL.
SQLAlchemy's expanding ``IN`` renders and names one parameter per address on every
execution, which costs more than the query, and one parameter has no size limit.

Writes that touch many rows go as compiled multi-row inserts (:mod:`.bulk`). On
PostgreSQL, concurrent writers take row locks in one order: the queue's rows first,
by address, then the records' rows, by address (:meth:`Statements.lock_queue`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from ..record import Status
from .bulk import BulkInsert
from .rows import RECORD_COLUMNS, TimeValue, naive
from .schema import pending_queue, records_table

__all__ = ["Statements", "bound_addresses", "insert", "ip_set", "ip_set_params", "time_converter"]

_TIME_COLUMNS: Final = frozenset(
    c.name
    for table in (records_table, pending_queue)
    for c in table.columns
    if isinstance(c.type, sa.DateTime)
)
#: The name of the one parameter an address set is bound as.
_IPS: Final = "ips"
_PLACEHOLDER_COLUMNS: Final = ("ip", "status", "mm_present", "updated_at")
#: A claim's values, in the queue's column order (the table says which they are).
_QUEUE_COLUMNS: Final = [column.name for column in pending_queue.columns]


def ip_set(column: sa.Column[str], dialect: str) -> sa.ColumnElement[bool]:
    """``column IN`` the address set bound by :func:`ip_set_params`."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # imported only for PostgreSQL (~30 ms)

        return column == sa.any_(sa.bindparam(_IPS, type_=postgresql.ARRAY(sa.String)))
    each = sa.func.json_each(sa.bindparam(_IPS))
    return column.in_(sa.select(sa.literal_column("value")).select_from(each).scalar_subquery())


def ip_set_params(ips: Iterable[str], dialect: str) -> dict[str, object]:
    """The parameters binding ``ips`` for :func:`ip_set` and :func:`bound_addresses`.

    A list on PostgreSQL, a JSON array on SQLite.
    """
    return {_IPS: list(ips) if dialect == "postgresql" else json.dumps(list(ips))}


def time_converter(dialect: str) -> TimeValue:
    """Times as the driver takes them: naive UTC, as SQLAlchemy's own text on SQLite.

    Each distinct time is converted once (a batch shares its times).
    """
    as_text = dialect == "sqlite"
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


def insert(table: sa.Table, dialect: str) -> Any:
    """The backend's ``INSERT`` (with ``ON CONFLICT``) for ``table``."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _is_fresh() -> sa.ColumnElement[bool]:
    """A stored record that needs no asking at the time bound as ``now``."""
    r = records_table.c
    return sa.or_(
        r.status == Status.SKIPPED.value,
        sa.and_(
            r.status != Status.PENDING.value,
            r.expires_at > sa.bindparam("now", type_=sa.DateTime()),
        ),
    )


def bound_addresses(dialect: str) -> Any:
    """The address set bound by :func:`ip_set_params`, as rows of one column."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        unnest = sa.func.unnest(sa.bindparam(_IPS, type_=postgresql.ARRAY(sa.String)))
        return unnest.table_valued("value").render_derived()
    return sa.func.json_each(sa.bindparam(_IPS)).table_valued("value")


def _claim(dialect: str) -> Any:
    """The lease of a batch, one statement: the addresses this process now holds.

    Each address not fresh in the store gets a queue row leased to ``owner`` until
    ``expires`` (``owner`` ``NULL``: queued, not leased), or takes over the existing
    row unless another process's lease on it runs past ``at``. ``RETURNING`` gives
    the rows inserted or taken over: every other address is fresh already or
    leased elsewhere.
    """
    q, r = pending_queue.c, records_table.c
    given = bound_addresses(dialect)
    at = sa.bindparam("at", type_=sa.DateTime())
    rows = sa.select(
        given.c.value,
        sa.literal(0),
        sa.null(),
        at,
        at,
        sa.bindparam("owner", type_=sa.String()),
        sa.bindparam("expires", type_=sa.DateTime()),
    ).where(~sa.exists().where(r.ip == given.c.value, _is_fresh()))
    if dialect == "postgresql":  # the queue's rows are locked in address order (lock_queue)
        rows = rows.order_by(given.c.value)
    claim = insert(pending_queue, dialect).from_select(_QUEUE_COLUMNS, rows)
    return claim.on_conflict_do_update(
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
    ).returning(q.ip)


def _all_columns(stmt: Any) -> dict[str, Any]:
    return {c.name: stmt.excluded[c.name] for c in records_table.columns if c.name != "ip"}


class Statements:
    """Every per-batch statement of one backend."""

    def __init__(self, dialect: Dialect) -> None:
        name = self.dialect = dialect.name
        r, q = records_table.c, pending_queue.c
        # On SQLite the times come back as the stored text and are parsed by
        # ``rows.aware`` with a cache: SQLAlchemy's per-value parsing costs more.
        columns = [
            sa.type_coerce(c, sa.String).label(c.name)
            if name == "sqlite" and c.name in _TIME_COLUMNS
            else c
            for c in records_table.columns
        ]
        self.records = sa.select(*columns).where(ip_set(r.ip, name))
        # Only the primary key narrows this read: with a condition on ``lease_owner``
        # too, SQLite's planner may prefer that column and scan all the owner holds.
        self.owners = sa.select(q.ip, q.lease_owner).where(ip_set(q.ip, name))
        self.attempts = sa.select(q.ip, q.attempts).where(ip_set(q.ip, name))
        self.fresh = sa.select(r.ip).where(ip_set(r.ip, name), _is_fresh())
        self.delete_queued = sa.delete(pending_queue).where(ip_set(q.ip, name))
        self.delete_own = sa.delete(pending_queue).where(
            ip_set(q.ip, name), q.lease_owner == sa.bindparam("owner")
        )
        self.lock_rows = sa.select(q.ip).where(ip_set(q.ip, name)).order_by(q.ip).with_for_update()
        self.lock_owned = (
            sa.select(q.ip)
            .where(q.lease_owner == sa.bindparam("owner"))
            .order_by(q.ip)
            .with_for_update()
        )

        def compile_(stmt: Any, cols: Sequence[str]) -> BulkInsert:
            return BulkInsert.compile(stmt, cols, dialect)

        self.claim = _claim(name)
        placeholder = insert(records_table, name).on_conflict_do_nothing(index_elements=[r.ip])
        self.placeholder = compile_(placeholder, _PLACEHOLDER_COLUMNS)
        upsert = insert(records_table, name)
        upsert = upsert.on_conflict_do_update(index_elements=[r.ip], set_=_all_columns(upsert))
        self.upsert = compile_(upsert, RECORD_COLUMNS)
        pending = insert(records_table, name)
        pending = pending.on_conflict_do_update(
            index_elements=[r.ip],
            set_=_all_columns(pending),
            where=r.status == sa.literal_column("'pending'"),
        )
        self.pending = compile_(pending, RECORD_COLUMNS)

    def lock_queue(self, conn: Connection, ips: Sequence[str]) -> None:
        """On PostgreSQL, lock the queue rows of ``ips`` in address order (before changing them).

        Updates and deletes lock rows in the order the plan finds them; taking the
        locks first, ordered, keeps every writer's order the same, so two sensors
        never wait for each other in a cycle. SQLite locks the whole database.
        """
        if self.dialect == "postgresql" and ips:
            conn.execute(self.lock_rows, ip_set_params(ips, self.dialect)).all()

    def lock_owner(self, conn: Connection, owner: str) -> None:
        """On PostgreSQL, lock the queue rows ``owner`` holds, in address order."""
        if self.dialect == "postgresql":
            conn.execute(self.lock_owned, {"owner": owner}).all()

    def overtake(
        self,
        conn: Connection,
        held: Sequence[str],
        dead: Iterable[str],
        owner: str,
        until: dt.datetime,
    ) -> list[str]:
        """Give ``owner`` (until ``until``) the leases on ``held`` whose holder is ``dead``."""
        self.lock_queue(conn, held)
        q = pending_queue.c
        stmt = (
            sa.update(pending_queue)
            .where(ip_set(q.ip, self.dialect), q.lease_owner.in_(sorted(dead)))
            .values(lease_owner=owner, lease_expires_at=until)
            .returning(q.ip)
        )
        return [row[0] for row in conn.execute(stmt, ip_set_params(held, self.dialect))]
