"""The store's tables and the ordered migration steps between schema versions.

The ``cowrie_enrich_schema`` table holds one row: the version the database is
at. :func:`migrate` applies, in order and each in its own transaction, every step
above that version: its step in ``_STEPS``, then the record's columns that came with
it (declared in :mod:`.rows`, each with its version). A new record column names the
next version in :mod:`.rows` and needs nothing here; anything else is a new step.
Never edit an old one. A version of record columns alone does not only add: code one
version behind would refresh a record without them, leaving them stale beside its
fresh columns (an entry ``(None, True)`` here says a version may).

- version 1: records, pending queue, indexes.
- version 2: MaxMind database build times on each record
  (``mm_city_db_built_at``, ``mm_asn_db_built_at``), so stale geodata can be found.
- version 3: no secondary indexes. Every address is written several times per
  run (leased, recorded, its lease dropped) and read only by primary key on the hot
  path; the indexes on status, expiry, next attempt and lease owner cost each of
  those writes and served only maintenance commands (``cache stats``, ``prune``)
  and start and end of a run, which scan a table as fast.
- version 4: the network sources' answers (``source_answer``).
- version 5: what each long-lived run has delivered (``delivered``, see
  :mod:`.deliveries`).
- version 6: the offline feeds' labels on each record (``classification``, JSON).
- version 7: the network sources' requests a day, counted fleet-wide
  (``source_quota``); and, in the schema table, the oldest code that works with the
  database (``works_with``).
- version 8: the records each sensor owes its output (``owed``, see :mod:`.owed`).
- version 9: the network sources' leases (``lease_owner``, ``lease_expires_at`` of
  ``source_answer``): one process at a time asks a source about an address.

**Rolling upgrades.** A step that only adds (a table, or a nullable column older
code never reads) leaves the database usable by code one step or more behind: each
version's row records ``works_with``, the oldest schema version whose code still
reads and writes it correctly, and code that knows an older version than the
database's goes on working when its own is at least that (it logs a warning). A
step that changes or removes what older code uses sets ``works_with`` to its own
version. Steps 1 to 6 predate the column: code before version 7 refuses any newer
database. Step 7 is additive (``works_with`` = 6, but version-6 code cannot read
the column, so it is the first step after which code at version 7 can run behind).

Each step is self-contained: it names the columns it creates, so a column added to
a table later (by a later step) never makes an earlier step create it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .rows import STORED_TIME, record_columns

__all__ = [
    "SCHEMA_VERSION",
    "SchemaTooNew",
    "current_version",
    "delivered_table",
    "metadata",
    "migrate",
    "owed_table",
    "pending_queue",
    "records_table",
    "schema_table",
    "source_answers",
    "source_quota",
]

logger = logging.getLogger(__name__)

metadata = sa.MetaData()

_TIME: Final = STORED_TIME

#: The record's columns are declared with how a record is stored (:mod:`.rows`).
records_table = sa.Table("enrichment_record", metadata, *record_columns())

pending_queue = sa.Table(
    "pending_queue",
    metadata,
    sa.Column("ip", sa.String(45), primary_key=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("queued_at", _TIME),
    sa.Column("next_attempt_at", _TIME),
    sa.Column("lease_owner", sa.String(160)),
    sa.Column("lease_expires_at", _TIME),
)

source_answers = sa.Table(
    "source_answer",
    metadata,
    sa.Column("ip", sa.String(45), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("data", sa.Text),
    sa.Column("fetched_at", _TIME),
    sa.Column("expires_at", _TIME),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", _TIME, nullable=False),
    # the process asking the source about the address now (:func:`.source_sections.claim_sections`)
    sa.Column("lease_owner", sa.String(160)),
    sa.Column("lease_expires_at", _TIME),
)

#: Per long-lived run (its lease owner id) and address: the signature of the record
#: last delivered (:func:`cowrie_enrich_plugin.record.delivery_signature`).
delivered_table = sa.Table(
    "delivered",
    metadata,
    sa.Column("run", sa.String(160), primary_key=True),
    sa.Column("ip", sa.String(45), primary_key=True),
    sa.Column("signature", sa.String(200), nullable=False),
    sa.Column("at", _TIME, nullable=False),
)

#: Per network source and UTC day (``YYYY-MM-DD``): requests made by every process
#: on this database, and whether the source said the day's allowance is spent.
source_quota = sa.Table(
    "source_quota",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("spent", sa.Boolean, nullable=False),
    sa.Column("updated_at", _TIME, nullable=False),
)

#: Per sensor (:attr:`~..settings.EnrichConfig.sensor_name`) and address: a record this
#: sensor delivered unfinished and owes its output finished (:mod:`.owed`).
owed_table = sa.Table(
    "owed",
    metadata,
    sa.Column("sensor", sa.String(160), primary_key=True),
    sa.Column("ip", sa.String(45), primary_key=True),
    sa.Column("at", _TIME, nullable=False),
)

schema_table = sa.Table(
    "cowrie_enrich_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("works_with", sa.Integer),
)


#: The secondary indexes of versions 1 and 2: (name, table, column).
_V1_INDEXES: Final = (
    ("ix_enrichment_record_status", "enrichment_record", "status"),
    ("ix_enrichment_record_expires_at", "enrichment_record", "expires_at"),
    ("ix_pending_queue_next_attempt_at", "pending_queue", "next_attempt_at"),
    ("ix_pending_queue_lease_owner", "pending_queue", "lease_owner"),
)


def _as_of(table: sa.Table, metadata: sa.MetaData, columns: tuple[str, ...]) -> sa.Table:
    """``table`` with only ``columns``: what a step created, whatever was added since."""
    return sa.Table(table.name, metadata, *(table.c[name]._copy() for name in columns))


_V1_QUEUE_COLUMNS: Final = (
    "ip",
    "attempts",
    "last_error",
    "queued_at",
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
)
_V4_ANSWER_COLUMNS: Final = (
    "ip",
    "source",
    "status",
    "data",
    "fetched_at",
    "expires_at",
    "attempts",
    "last_error",
    "updated_at",
)
_V5_DELIVERED_COLUMNS: Final = ("run", "ip", "signature", "at")


def _step_1(conn: Connection) -> None:
    """Create the version-1 tables and indexes."""
    v1 = sa.MetaData()
    tables = {
        records_table.name: _as_of(records_table, v1, _record_columns_since(1)),
        pending_queue.name: _as_of(pending_queue, v1, _V1_QUEUE_COLUMNS),
    }
    for name, table, column in _V1_INDEXES:
        sa.Index(name, tables[table].c[column])
    v1.create_all(conn)


def _step_3(conn: Connection) -> None:
    """Drop the secondary indexes (see the module's notes on version 3)."""
    for name, _table, _column in _V1_INDEXES:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))


def _step_4(conn: Connection) -> None:
    """Add the network sources' answers."""
    _as_of(source_answers, sa.MetaData(), _V4_ANSWER_COLUMNS).create(conn)


def _step_5(conn: Connection) -> None:
    """Add what long-lived runs have delivered."""
    _as_of(delivered_table, sa.MetaData(), _V5_DELIVERED_COLUMNS).create(conn)


def _step_7(conn: Connection) -> None:
    """Add the fleet-wide request counts, and the oldest code each version works with."""
    _as_of(
        source_quota, sa.MetaData(), ("source", "day", "requests", "spent", "updated_at")
    ).create(conn)
    conn.execute(sa.text("ALTER TABLE cowrie_enrich_schema ADD COLUMN works_with INTEGER"))


def _step_8(conn: Connection) -> None:
    """Add what each sensor owes its output."""
    _as_of(owed_table, sa.MetaData(), ("sensor", "ip", "at")).create(conn)


def _step_9(conn: Connection) -> None:
    """Add the network sources' leases."""
    for column in ("lease_owner VARCHAR(160)", "lease_expires_at TIMESTAMP"):
        conn.execute(sa.text(f"ALTER TABLE source_answer ADD COLUMN {column}"))


def _record_columns_since(version: int) -> tuple[str, ...]:
    """The record's columns that ``version`` added (:func:`.rows.record_columns`)."""
    return tuple(c.name for c in records_table.columns if c.info["since"] == version)


def _add_record_columns(conn: Connection, version: int) -> None:
    """Add the record's columns that came with ``version`` (each nullable: rows exist)."""
    for name in _record_columns_since(version):
        column = sa.schema.CreateColumn(records_table.c[name]).compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {records_table.name} ADD COLUMN {column}"))


#: Each version's step beyond the record's own new columns (``None``: only those), and
#: whether the version only adds (see the module: code one version behind works on).
_STEPS: Final[dict[int, tuple[Callable[[Connection], None] | None, bool]]] = {
    1: (_step_1, False),
    2: (None, False),
    3: (_step_3, False),
    4: (_step_4, False),
    5: (_step_5, False),
    6: (None, False),
    7: (_step_7, True),
    8: (_step_8, True),
    9: (_step_9, True),
}

#: The schema version this code reads and writes: the last step's, or the last record
#: column's (a version that only adds record columns needs no step).
SCHEMA_VERSION: Final = max(*_STEPS, *(c.info["since"] for c in records_table.columns))


def current_version(conn: Connection) -> int:
    """The version the database is at (0 for an empty database)."""
    if not sa.inspect(conn).has_table(schema_table.name):
        return 0
    version = conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar()
    return int(version or 0)


class SchemaTooNew(Exception):
    """The database was written by a newer cowrie-enrich."""


def works_with(conn: Connection, version: int) -> int:
    """The oldest schema version whose code works with a database at ``version``."""
    if version < 7:  # the column came with version 7
        return version
    found = conn.execute(
        sa.select(schema_table.c.works_with).where(schema_table.c.version == version)
    ).scalar()
    return int(found) if found is not None else version


def refuse_newer(conn: Connection) -> None:
    """Refuse a database of a newer schema than this code can use (nothing is changed).

    A newer database whose steps since this code's version only added is used, with
    a warning (see the module's "Rolling upgrades").

    :raises SchemaTooNew: naming both versions.
    """
    start = current_version(conn)
    if start <= SCHEMA_VERSION:
        return
    if works_with(conn, start) <= SCHEMA_VERSION:
        logger.warning(
            "the database is at schema version %d, newer than this cowrie-enrich's (%d); "
            "the change allows this version to go on, but upgrade it soon",
            start,
            SCHEMA_VERSION,
        )
        return
    raise SchemaTooNew(
        f"the database is at schema version {start}, newer than this cowrie-enrich "
        f"understands ({SCHEMA_VERSION}); upgrade cowrie-enrich"
    )


def migrate(engine: Engine, target: int = SCHEMA_VERSION) -> int:
    """Bring the database up to ``target``; return the version it was at.

    Safe when several processes start at once: the version is read and the steps
    run under a lock held to the commit (PostgreSQL: an advisory lock; SQLite: the
    write lock, taken before the first read), so a second process waits and then
    finds the work done.
    """
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7460391)"))
        else:
            # The sqlite3 module begins a transaction only before the first write,
            # so without this a second process reads version 0 while the first is
            # still creating tables, and both run step 1.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        # As version 1 made it: step 7 adds its second column.
        _as_of(schema_table, sa.MetaData(), ("version",)).create(conn, checkfirst=True)
        start = current_version(conn)
        if start > SCHEMA_VERSION:
            refuse_newer(conn)
        oldest = works_with(conn, start) if start else 0
        for version in range(start + 1, target + 1):
            step, additive = _STEPS.get(version, (None, False))
            if step is not None:
                step(conn)
            if version > 1:  # step 1 creates the table with its columns
                _add_record_columns(conn, version)
            oldest = oldest if additive else version
            row: dict[str, int] = {"version": version}
            if version >= 7:
                row["works_with"] = oldest
            conn.execute(sa.insert(_as_of(schema_table, sa.MetaData(), tuple(row))).values(row))
        return start
