"""How a record becomes a row of ``enrichment_record`` and back.

Times are stored as naive UTC (both backends then compare them alike) and come back
aware; SQLite hands them back as text, parsed once per distinct value.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any

from .record import CymruAnswer, EnrichmentRecord, GeoAnswer, Status

__all__ = ["aware", "naive", "record_row", "row_record"]


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
    return "[" + ",".join(str(asn) for asn in asns) + "]"


def record_row(record: EnrichmentRecord, now: dt.datetime) -> dict[str, Any]:
    """The ``enrichment_record`` row of ``record``, stamped ``updated_at = now``."""
    cymru, geo = record.cymru, record.maxmind
    return {
        "ip": record.ip,
        "status": record.status.value,
        "cymru_asns": _asns_text(cymru.asns) if cymru is not None else None,
        "cymru_as_name": cymru.as_name if cymru else None,
        "cymru_prefix": cymru.prefix if cymru else None,
        "cymru_cc": cymru.cc if cymru else None,
        "cymru_registry": cymru.registry if cymru else None,
        "cymru_allocated": cymru.allocated if cymru else None,
        "cymru_fetched_at": naive(cymru.fetched_at) if cymru else None,
        "mm_present": geo is not None,
        "mm_country_iso_code": geo.country_iso_code if geo else None,
        "mm_country_name": geo.country_name if geo else None,
        "mm_city": geo.city if geo else None,
        "mm_latitude": geo.latitude if geo else None,
        "mm_longitude": geo.longitude if geo else None,
        "mm_accuracy_radius": geo.accuracy_radius if geo else None,
        "mm_asn": geo.asn if geo else None,
        "mm_as_org": geo.as_org if geo else None,
        "mm_city_db_built_at": naive(geo.city_db_built_at) if geo else None,
        "mm_asn_db_built_at": naive(geo.asn_db_built_at) if geo else None,
        "expires_at": naive(record.expires_at),
        "updated_at": naive(now),
    }


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
    return EnrichmentRecord(
        ip=row["ip"],
        status=Status(row["status"]),
        cymru=cymru,
        maxmind=geo,
        expires_at=aware(row["expires_at"]),
    )
