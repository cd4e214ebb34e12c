"""The store's tables and the ordered migration steps between schema versions.

The ``cowrie_enrich_schema`` table holds one row: the version the database is
at. :func:`migrate` applies, in order and each in its own transaction, every step
above that version. Add a step by appending to ``_STEPS``; never edit an old one.

- version 1: records, pending queue, indexes.
- version 2: MaxMind database build times on each record
  (``mm_city_db_built_at``, ``mm_asn_db_built_at``), so stale geodata can be found.
- version 3: no secondary indexes. Every address is written several times per
  run (leased, recorded, its lease dropped) and read only by primary key on the hot
  path; the indexes on status, expiry, next attempt and lease owner cost each of
  those writes and served only maintenance commands (``cache stats``, ``prune``)
  and start and end of a run, which scan a table as fast.
- version 4: the extra sources' answers (``source_answer``).
- version 5: what each long-lived run has delivered (``delivered``, see
  :mod:`.deliveries`).
- version 6: the offline feeds' labels on each record (``classification``, JSON).

Each step is self-contained: it names the columns it creates, so a column added to
a table later (by a later step) never makes an earlier step create it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "SCHEMA_VERSION",
    "SchemaTooNew",
    "current_version",
    "delivered_table",
    "metadata",
    "migrate",
    "pending_queue",
    "records_table",
    "schema_table",
    "source_answers",
]

metadata = sa.MetaData()

_TIME = sa.DateTime(timezone=False)  # always UTC; naive so both backends compare alike

records_table = sa.Table(
    "enrichment_record",
    metadata,
    sa.Column("ip", sa.String(45), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cymru_asns", sa.Text),
    sa.Column("cymru_as_name", sa.Text),
    sa.Column("cymru_prefix", sa.String(64)),
    sa.Column("cymru_cc", sa.String(8)),
    sa.Column("cymru_registry", sa.String(16)),
    sa.Column("cymru_allocated", sa.String(10)),
    sa.Column("cymru_fetched_at", _TIME),
    sa.Column("mm_present", sa.Boolean, nullable=False, default=False),
    sa.Column("mm_country_iso_code", sa.String(8)),
    sa.Column("mm_country_name", sa.Text),
    sa.Column("mm_city", sa.Text),
    sa.Column("mm_latitude", sa.Float),
    sa.Column("mm_longitude", sa.Float),
    sa.Column("mm_accuracy_radius", sa.Integer),
    sa.Column("mm_asn", sa.BigInteger),
    sa.Column("mm_as_org", sa.Text),
    sa.Column("mm_city_db_built_at", _TIME),
    sa.Column("mm_asn_db_built_at", _TIME),
    sa.Column("expires_at", _TIME),
    sa.Column("updated_at", _TIME, nullable=False),
    sa.Column("classification", sa.Text),
)

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

schema_table = sa.Table(
    "cowrie_enrich_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
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


_V1_RECORD_COLUMNS: Final = (
    "ip",
    "status",
    "cymru_asns",
    "cymru_as_name",
    "cymru_prefix",
    "cymru_cc",
    "cymru_registry",
    "cymru_allocated",
    "cymru_fetched_at",
    "mm_present",
    "mm_country_iso_code",
    "mm_country_name",
    "mm_city",
    "mm_latitude",
    "mm_longitude",
    "mm_accuracy_radius",
    "mm_asn",
    "mm_as_org",
    "expires_at",
    "updated_at",
)
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
        records_table.name: _as_of(records_table, v1, _V1_RECORD_COLUMNS),
        pending_queue.name: _as_of(pending_queue, v1, _V1_QUEUE_COLUMNS),
    }
    for name, table, column in _V1_INDEXES:
        sa.Index(name, tables[table].c[column])
    v1.create_all(conn)


def _step_2(conn: Connection) -> None:
    """Add the MaxMind database build times."""
    for column in ("mm_city_db_built_at", "mm_asn_db_built_at"):
        conn.execute(sa.text(f"ALTER TABLE enrichment_record ADD COLUMN {column} TIMESTAMP"))


def _step_3(conn: Connection) -> None:
    """Drop the secondary indexes (see the module's notes on version 3)."""
    for name, _table, _column in _V1_INDEXES:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))


def _step_4(conn: Connection) -> None:
    """Add the extra sources' answers."""
    _as_of(source_answers, sa.MetaData(), _V4_ANSWER_COLUMNS).create(conn)


def _step_5(conn: Connection) -> None:
    """Add what long-lived runs have delivered."""
    _as_of(delivered_table, sa.MetaData(), _V5_DELIVERED_COLUMNS).create(conn)


def _step_6(conn: Connection) -> None:
    """Add the offline feeds' labels."""
    conn.execute(sa.text("ALTER TABLE enrichment_record ADD COLUMN classification TEXT"))


_STEPS: Final[tuple[Callable[[Connection], None], ...]] = (
    _step_1,
    _step_2,
    _step_3,
    _step_4,
    _step_5,
    _step_6,
)

#: The schema version this code reads and writes.
SCHEMA_VERSION: Final = len(_STEPS)


def current_version(conn: Connection) -> int:
    """The version the database is at (0 for an empty database)."""
    if not sa.inspect(conn).has_table(schema_table.name):
        return 0
    version = conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar()
    return int(version or 0)


class SchemaTooNew(Exception):
    """The database was written by a newer cowrie-enrich."""


def refuse_newer(conn: Connection) -> None:
    """Refuse a database of a newer schema than this version knows (nothing is changed).

    :raises SchemaTooNew: naming both versions.
    """
    start = current_version(conn)
    if start > SCHEMA_VERSION:
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
        schema_table.create(conn, checkfirst=True)
        start = current_version(conn)
        if start > SCHEMA_VERSION:
            refuse_newer(conn)
        for version in range(start + 1, target + 1):
            _STEPS[version - 1](conn)
            conn.execute(sa.insert(schema_table).values(version=version))
        return start
