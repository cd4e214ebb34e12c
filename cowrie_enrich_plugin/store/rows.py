"""The record's table, ``enrichment_record``: its columns, and a record as a row and back.

A new field of a built-in section is a column here: its declaration (with the next
schema version: migrating adds it, see :mod:`.schema`), its value in
:func:`record_values` and its place in :func:`row_record`.

Times are stored as naive UTC (both backends then compare them alike) and come back
aware; SQLite hands them back as text, parsed once per distinct value.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from typing import Any, Final

import sqlalchemy as sa

from ..record import (
    STATUS_TEXT,
    Classification,
    CymruAnswer,
    EnrichmentRecord,
    GeoAnswer,
    Status,
)

#: How a time goes to the driver: naive UTC, as a ``datetime`` or as SQLite's text.
TimeValue = Callable[[dt.datetime | None], Any]

__all__ = [
    "RECORD_COLUMNS",
    "STORED_TIME",
    "TimeValue",
    "aware",
    "naive",
    "record_columns",
    "record_values",
    "row_record",
]

#: How every table stores a time: always UTC, naive so both backends compare alike.
STORED_TIME: Final = sa.DateTime(timezone=False)


def record_columns() -> tuple[sa.Column[Any], ...]:
    """The columns of ``enrichment_record``, in table order.

    Each names the schema version that added it (``info["since"]``). New each call:
    a column belongs to one table. A new column must be nullable (the table has rows
    when it is added).
    """

    def column(name: str, kind: Any, since: int = 1, **options: Any) -> sa.Column[Any]:
        return sa.Column(name, kind, info={"since": since}, **options)

    return (
        column("ip", sa.String(45), primary_key=True),
        column("status", sa.String(16), nullable=False),
        column("cymru_asns", sa.Text),
        column("cymru_as_name", sa.Text),
        column("cymru_prefix", sa.String(64)),
        column("cymru_cc", sa.String(8)),
        column("cymru_registry", sa.String(16)),
        column("cymru_allocated", sa.String(10)),
        column("cymru_fetched_at", STORED_TIME),
        column("mm_present", sa.Boolean, nullable=False, default=False),
        column("mm_country_iso_code", sa.String(8)),
        column("mm_country_name", sa.Text),
        column("mm_city", sa.Text),
        column("mm_latitude", sa.Float),
        column("mm_longitude", sa.Float),
        column("mm_accuracy_radius", sa.Integer),
        column("mm_asn", sa.BigInteger),
        column("mm_as_org", sa.Text),
        column("mm_city_db_built_at", STORED_TIME, since=2),
        column("mm_asn_db_built_at", STORED_TIME, since=2),
        column("expires_at", STORED_TIME),
        column("updated_at", STORED_TIME, nullable=False),
        column("classification", sa.Text, since=6),
    )


#: The columns of ``enrichment_record``, in table order: :func:`record_values` gives
#: its values in this order (``tests/test_record.py`` reads a row back through it).
RECORD_COLUMNS: Final = tuple(column.name for column in record_columns())
_NO_CYMRU: Final = (None,) * 7
_NO_GEO: Final = (False,) + (None,) * 10


@functools.lru_cache(maxsize=4096)
def _parse_stored_time(text: str) -> dt.datetime:
    """A time as SQLite stores it, parsed once per distinct value (a batch shares its times)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


def aware(value: dt.datetime | str | None) -> dt.datetime | None:
    """A stored time (naive UTC, or SQLite's text) as an aware UTC time."""
    if isinstance(value, str):
        return _parse_stored_time(value)
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


def naive(value: dt.datetime | None) -> dt.datetime | None:
    """UTC, without tzinfo: what both backends compare consistently."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _asns_from_text(text: str | None) -> tuple[int, ...]:
    inner = (text or "[]").strip("[] ")
    return tuple(int(part) for part in inner.split(",")) if inner else ()


def _asns_text(asns: tuple[int, ...]) -> str:
    if len(asns) == 1:  # nearly every announced address
        return f"[{asns[0]}]"
    return "[" + ",".join(map(str, asns)) + "]"


def record_values(record: EnrichmentRecord, now: Any, when: TimeValue) -> tuple[Any, ...]:
    """The ``enrichment_record`` row of ``record`` in :data:`RECORD_COLUMNS` order.

    :param now: ``updated_at``, already as the driver takes it.
    :param when: turns each time of the record into what the driver takes.
    """
    cymru, geo = record.cymru, record.maxmind
    return (
        record.ip,
        STATUS_TEXT[record.status],
        *(
            _NO_CYMRU
            if cymru is None
            else (
                _asns_text(cymru.asns),
                cymru.as_name,
                cymru.prefix,
                cymru.cc,
                cymru.registry,
                cymru.allocated,
                when(cymru.fetched_at),
            )
        ),
        *(
            _NO_GEO
            if geo is None
            else (
                True,
                geo.country_iso_code,
                geo.country_name,
                geo.city,
                geo.latitude,
                geo.longitude,
                geo.accuracy_radius,
                geo.asn,
                geo.as_org,
                when(geo.city_db_built_at),
                when(geo.asn_db_built_at),
            )
        ),
        when(record.expires_at),
        now,
        record.classification.text if record.classification is not None else None,
    )


def row_record(row: Mapping[Any, Any]) -> EnrichmentRecord:
    """The record an ``enrichment_record`` row holds."""
    cymru = None
    if row["cymru_fetched_at"] is not None:
        fetched = aware(row["cymru_fetched_at"])
        assert fetched is not None
        cymru = CymruAnswer(
            asns=_asns_from_text(row["cymru_asns"]),
            as_name=row["cymru_as_name"],
            prefix=row["cymru_prefix"],
            cc=row["cymru_cc"],
            registry=row["cymru_registry"],
            allocated=row["cymru_allocated"],
            fetched_at=fetched,
        )
    geo = None
    if row["mm_present"]:
        geo = GeoAnswer(
            country_iso_code=row["mm_country_iso_code"],
            country_name=row["mm_country_name"],
            city=row["mm_city"],
            latitude=row["mm_latitude"],
            longitude=row["mm_longitude"],
            accuracy_radius=row["mm_accuracy_radius"],
            asn=row["mm_asn"],
            as_org=row["mm_as_org"],
            city_db_built_at=aware(row["mm_city_db_built_at"]),
            asn_db_built_at=aware(row["mm_asn_db_built_at"]),
        )
    labels = row["classification"]
    return EnrichmentRecord(
        ip=row["ip"],
        status=Status(row["status"]),
        cymru=cymru,
        maxmind=geo,
        expires_at=aware(row["expires_at"]),
        classification=Classification.from_text(labels) if labels else None,
    )
