"""The enrichment record: value objects for what each source said, and the merge.

Precedence of the merge, applied only in :meth:`EnrichmentRecord.to_dict`'s summary
fields (``asn``, ``as_name``, ``country``); each source's own section is kept
exactly as that source said it:

- routing (``asn``, ``as_name``): Team Cymru, the live BGP view; MaxMind's ASN
  database fills in only when Cymru gave no origin AS (unannounced, pending).
- geography (``country``): MaxMind's geolocation; Cymru's registry country fills
  in only when MaxMind has none.

Nothing is invented: a value no source gave is ``None``.

Every other source (GreyNoise, third-party ones) adds a section of its own under its
name, kept exactly as it answered (:class:`SourceSection`); they do not take part in
the merged fields, and the record's ``status`` is Cymru's alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, Final

from .classification import LABEL_KEYS, Classification, section_kinds
from .clock import utc_now
from .values import value_class

__all__ = [
    "LABEL_KEYS",
    "RECORD_KEYS",
    "SECTION_KEYS",
    "STATUS_TEXT",
    "Classification",
    "CymruAnswer",
    "EnrichmentRecord",
    "GeoAnswer",
    "SectionStatus",
    "SourceSection",
    "Status",
    "delivery_signature",
    "format_time",
    "parse_time",
    "utc_now",
]


class Status(str, Enum):
    """What is known about an address."""

    ENRICHED = "enriched"
    UNANNOUNCED = "unannounced"
    SKIPPED = "skipped"
    PENDING = "pending"


#: Each status's text, looked up faster than ``status.value`` (an enum property).
STATUS_TEXT: Final = {status: status.value for status in Status}


def format_time(value: dt.datetime | None) -> str | None:
    """Format a UTC time as ``2026-11-28T20:00:00Z`` (``None`` stays ``None``)."""
    if value is None:
        return None
    return _format_time(value)


@functools.lru_cache(maxsize=1024)
def _format_time(value: dt.datetime) -> str:
    """:func:`format_time`, once per distinct time (the records of a batch share theirs)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: What :func:`format_time` writes (strptime, the slow way, reads anything else it accepts).
_TIME_TEXT: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", re.ASCII)


def parse_time(value: str | None) -> dt.datetime | None:
    """Parse :func:`format_time`'s output back into an aware UTC time."""
    if value is None:
        return None
    if _TIME_TEXT.fullmatch(value):
        # fromisoformat: a fifth of strptime's cost, and a host parses one per record
        return dt.datetime.fromisoformat(value[:19]).replace(tzinfo=dt.timezone.utc)
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


@value_class
class CymruAnswer:
    """What Team Cymru's bulk whois said about one address (all its rows merged)."""

    asns: tuple[int, ...]
    as_name: str | None
    prefix: str | None
    cc: str | None
    registry: str | None
    allocated: str | None
    fetched_at: dt.datetime

    @property
    def asn(self) -> int | None:
        """The first origin AS reported, or ``None`` when the prefix is not announced."""
        return self.asns[0] if self.asns else None

    @property
    def announced(self) -> bool:
        """Whether any origin AS announces the address."""
        return bool(self.asns)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``cymru`` section of the exported record."""
        asns = self.asns
        return {
            "asn": asns[0] if asns else None,
            "asns": list(asns),
            "as_name": self.as_name,
            "prefix": self.prefix,
            "cc": self.cc,
            "registry": self.registry,
            "allocated": self.allocated,
            "fetched_at": format_time(self.fetched_at),
        }


@value_class
class GeoAnswer:
    """What the MaxMind databases say about one address; ``None`` where they say nothing."""

    country_iso_code: str | None = None
    country_name: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    accuracy_radius: int | None = None
    asn: int | None = None
    as_org: str | None = None
    city_db_built_at: dt.datetime | None = None
    asn_db_built_at: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the ``maxmind`` section of the exported record."""
        return {
            "country_iso_code": self.country_iso_code,
            "country_name": self.country_name,
            "city": self.city,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "accuracy_radius": self.accuracy_radius,
            "asn": self.asn,
            "as_org": self.as_org,
            "city_db_built_at": format_time(self.city_db_built_at),
            "asn_db_built_at": format_time(self.asn_db_built_at),
        }


class SectionStatus(str, Enum):
    """What one network source said about an address."""

    ANSWERED = "answered"
    NOT_FOUND = "not_found"
    PENDING = "pending"


@value_class
class SourceSection:
    """One network source's section of a record, with its own freshness."""

    status: SectionStatus
    data: dict[str, Any] | None = None
    fetched_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    error: str | None = None

    def is_fresh(self, now: dt.datetime) -> bool:
        """Whether the source need not be asked again now."""
        return (
            self.status is not SectionStatus.PENDING
            and self.expires_at is not None
            and self.expires_at > now
        )

    def to_dict(self) -> dict[str, Any]:
        """The source's section: its answer and when it was fetched, or ``pending``."""
        if self.status is SectionStatus.PENDING:
            return {"pending": True, "fetched_at": None}
        return {**(self.data or {}), "pending": False, "fetched_at": format_time(self.fetched_at)}


@value_class
class EnrichmentRecord:
    """One address's merged record, as stored, delivered and exported."""

    ip: str
    status: Status
    cymru: CymruAnswer | None = None
    maxmind: GeoAnswer | None = None
    expires_at: dt.datetime | None = None
    #: the network sources' sections, by source name, in name order
    sections: tuple[tuple[str, SourceSection], ...] = ()
    #: the offline feeds' labels (``None``: no feed installed)
    classification: Classification | None = None

    def with_sections(self, sections: dict[str, SourceSection]) -> EnrichmentRecord:
        """The same record with the network sources' sections set (in name order)."""
        if not sections and not self.sections:
            return self
        return self._with(tuple(sorted(sections.items())), self.classification)

    def with_classification(self, classification: Classification | None) -> EnrichmentRecord:
        """The same record with the feeds' labels set."""
        if classification is self.classification:
            return self
        return self._with(self.sections, classification)

    def with_maxmind(self, maxmind: GeoAnswer | None) -> EnrichmentRecord:
        """The same record with MaxMind's section set."""
        return EnrichmentRecord(
            self.ip,
            self.status,
            self.cymru,
            maxmind,
            self.expires_at,
            self.sections,
            self.classification,
        )

    def _with(
        self,
        sections: tuple[tuple[str, SourceSection], ...],
        classification: Classification | None,
    ) -> EnrichmentRecord:
        # positional, not ``dataclasses.replace`` (slower): this runs for delivered records
        return EnrichmentRecord(
            self.ip,
            self.status,
            self.cymru,
            self.maxmind,
            self.expires_at,
            sections,
            classification,
        )

    @property
    def merged_asn(self) -> int | None:
        """Cymru's first origin AS, else MaxMind's ASN, else ``None``."""
        return self._merged_as()[0]

    @property
    def merged_as_name(self) -> str | None:
        """The AS name belonging to :attr:`merged_asn`, from the same source."""
        return self._merged_as()[1]

    def _merged_as(self) -> tuple[int | None, str | None]:
        """(origin AS, its name): Cymru's when it gave an origin AS, else MaxMind's."""
        cymru, geo = self.cymru, self.maxmind
        if cymru is not None and cymru.asns:
            return cymru.asns[0], cymru.as_name
        if geo is not None:
            return geo.asn, geo.as_org
        return None, None

    @property
    def merged_country(self) -> str | None:
        """MaxMind's country, else Cymru's registry country, else ``None``."""
        if self.maxmind is not None and self.maxmind.country_iso_code is not None:
            return self.maxmind.country_iso_code
        return self.cymru.cc if self.cymru is not None else None

    def is_fresh(self, now: dt.datetime) -> bool:
        """Whether the record can be used without asking the network again."""
        if self.status is Status.SKIPPED:
            return True
        if self.status is Status.PENDING or self.expires_at is None:
            return False
        return self.expires_at > now

    def to_dict(self, *, classification_as_is: bool = False) -> dict[str, Any]:
        """Return the exported record (``docs/records.rst``), JSON-ready.

        With ``classification_as_is``, a listed address's ``classification`` stays a
        :class:`Classification`: the engine sends records so, and the host makes the
        section (:func:`~.classification.export_classifications`).
        """
        cymru, geo, classification = self.cymru, self.maxmind, self.classification
        asn, as_name = self._merged_as()
        data = {
            "ip": self.ip,
            "status": STATUS_TEXT[self.status],
            "cymru": cymru.to_dict() if cymru is not None else None,
            "maxmind": geo.to_dict() if geo is not None else None,
            "expires_at": format_time(self.expires_at),
            "asn": asn,
            "as_name": as_name,
            "country": self.merged_country,
            "classification": (
                classification
                if classification is None or (classification_as_is and classification.listed)
                else classification.to_dict()
            ),
        }
        for name, section in self.sections:
            data[name] = section.to_dict()
        return data


#: The exported record's shape, declared once: its keys in order (then one per network
#: source) and the keys of each built-in section (a feed label's are ``LABEL_KEYS``, in
#: :mod:`.classification`). :meth:`EnrichmentRecord.to_dict` builds it; the CSV columns are
#: derived from it; the store's rows, ``docs/records.rst`` and the ECS mapping are
#: tested against it (``tests/test_record_shape.py``).
RECORD_KEYS: Final = (
    "ip",
    "status",
    "cymru",
    "maxmind",
    "expires_at",
    "asn",
    "as_name",
    "country",
    "classification",
)
SECTION_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "cymru": ("asn", "asns", "as_name", "prefix", "cc", "registry", "allocated", "fetched_at"),
    "maxmind": tuple(f.name for f in dataclasses.fields(GeoAnswer)),
    "classification": ("kinds", "labels"),
}


def delivery_signature(record: Mapping[str, Any]) -> str:
    """What makes a delivery of an exported record news to a host that had one before.

    Its status, its expiry, which sections are pending and the feeds' kinds: a
    pending record that resolves, an expired one refreshed, a source's section
    answered, an address relabelled as a Tor exit. The same record delivered again is
    not news.
    """
    pending = ",".join(
        name for name, part in record.items() if isinstance(part, dict) and part.get("pending")
    )
    signature = f"{record['status']}|{record['expires_at']}|{pending}"
    classification = record.get("classification")
    if classification:
        signature += "|" + ",".join(section_kinds(classification))
    return signature
