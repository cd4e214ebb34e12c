"""MaxMind GeoIP2 / GeoLite2 offline lookups: a City-or-Country database and an ASN database.

Each database is optional. A configured path that does not exist is a warning and
the run goes on without it; a file that is corrupt or of the wrong type (an ASN
file given as the City file) is refused with a :class:`GeoDatabaseError` naming the
file. Files are memory-mapped, opened once, and reopened when the file on disk is
replaced (operators update weekly): :meth:`GeoLookup.refresh` checks, cheaply, at
each flush.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import GeoDatabaseError
from ...record import GeoAnswer
from ...sources.maxmind.geofile import Kind, check_type, option_name, unreadable

if TYPE_CHECKING:
    import geoip2.database

# geoip2 and maxminddb are imported when a file is configured, not before: a run
# without GeoIP files does not pay for them.

__all__ = ["GeoDatabase", "GeoDatabaseError", "GeoLookup"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Signature:
    inode: int
    size: int
    mtime_ns: int


class GeoDatabase:
    """One memory-mapped MaxMind database file of a given kind (``city`` or ``asn``)."""

    def __init__(self, path: str | os.PathLike[str], kind: Kind) -> None:
        self.path = Path(path)
        self.kind = kind
        self._lock = threading.Lock()
        self._warned_corrupt = False
        self._reader, self._signature, self.database_type, self.built_at = self._open()

    def _open(self) -> tuple[geoip2.database.Reader, _Signature, str, dt.datetime]:
        import geoip2.database
        import geoip2.errors
        import maxminddb

        # what a lookup may raise: not in the file, and a file corrupt in part
        self._not_found: type[Exception] = geoip2.errors.AddressNotFoundError
        self._corrupt_error: type[Exception] = maxminddb.InvalidDatabaseError
        signature = _signature(self.path)
        try:
            reader = geoip2.database.Reader(str(self.path), mode=maxminddb.MODE_MMAP)
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            raise unreadable(self.path, self.kind, exc) from exc
        metadata = reader.metadata()
        database_type = str(metadata.database_type)
        try:
            check_type(self.path, self.kind, database_type)
        except GeoDatabaseError:
            reader.close()
            raise
        built_at = dt.datetime.fromtimestamp(metadata.build_epoch, dt.timezone.utc)
        return reader, signature, database_type, built_at

    def refresh(self) -> bool:
        """Reopen the file if it was replaced on disk; return whether it was.

        A replacement that cannot be opened is logged and the old file kept.
        """
        try:
            signature = _signature(self.path)
        except OSError:
            return False
        if signature == self._signature:
            return False
        try:
            reader, signature, database_type, built_at = self._open()
        except (GeoDatabaseError, OSError) as exc:
            logger.warning("keeping the previous %s: %s", self.path, exc)
            self._signature = signature
            return False
        with self._lock:
            # The old reader is dropped, not closed: a lookup in another thread may
            # still hold it; its memory map goes when the last reference does.
            self._reader, self._signature = reader, signature
            self.database_type, self.built_at = database_type, built_at
        logger.info("reloaded %s (built %s)", self.path, built_at.date())
        return True

    def lookup_city(self, ip: str) -> GeoAnswer:
        """Look ``ip`` up in a City or Country database; nulls when it is not there."""
        with self._lock:
            reader, built = self._reader, self.built_at
        try:
            if "Country" in self.database_type:
                country = reader.country(ip)
                return GeoAnswer(
                    country_iso_code=country.country.iso_code,
                    country_name=country.country.name,
                    city_db_built_at=built,
                )
            city = reader.city(ip)
        except (self._not_found, ValueError):
            # ValueError: an IPv6 address in an IPv4-only database.
            return GeoAnswer(city_db_built_at=built)
        except self._corrupt_error as exc:
            self._corrupt(exc)
            return GeoAnswer(city_db_built_at=built)
        return GeoAnswer(
            country_iso_code=city.country.iso_code,
            country_name=city.country.name,
            city=city.city.name,
            latitude=city.location.latitude,
            longitude=city.location.longitude,
            accuracy_radius=city.location.accuracy_radius,
            city_db_built_at=built,
        )

    def lookup_asn(self, ip: str) -> tuple[int | None, str | None]:
        """Look ``ip`` up in an ASN (or ISP) database: (number, organisation)."""
        with self._lock:
            reader = self._reader
        try:
            if "ISP" in self.database_type:
                isp = reader.isp(ip)
                return isp.autonomous_system_number, isp.autonomous_system_organization
            asn = reader.asn(ip)
        except (self._not_found, ValueError):
            return None, None
        except self._corrupt_error as exc:
            self._corrupt(exc)
            return None, None
        return asn.autonomous_system_number, asn.autonomous_system_organization

    def _corrupt(self, exc: Exception) -> None:
        if not self._warned_corrupt:
            self._warned_corrupt = True
            logger.error(
                "%s is corrupt in part (%s); affected addresses get no MaxMind data. "
                "Replace the file atomically (geoipupdate does; use mv, not cp)",
                self.path,
                exc,
            )

    def close(self) -> None:
        """Close the reader."""
        with self._lock:
            self._reader.close()


def _signature(path: Path) -> _Signature:
    stat = path.stat()
    return _Signature(stat.st_ino, stat.st_size, stat.st_mtime_ns)


class GeoLookup:
    """The configured MaxMind databases, both optional.

    :raises GeoDatabaseError: when a configured file exists but is unusable.
    """

    def __init__(self, city_path: str | None = None, asn_path: str | None = None) -> None:
        self.city = self._open_optional(city_path, "city")
        self.asn = self._open_optional(asn_path, "asn")

    @staticmethod
    def _open_optional(path: str | None, kind: Kind) -> GeoDatabase | None:
        if not path:
            return None
        if not Path(path).exists():
            logger.warning(
                "%s file %s does not exist; going on without it", option_name(kind), path
            )
            return None
        return GeoDatabase(path, kind)

    @property
    def enabled(self) -> bool:
        """Whether any database is configured and open."""
        return self.city is not None or self.asn is not None

    def refresh(self) -> None:
        """Reopen any database whose file was replaced."""
        for database in (self.city, self.asn):
            if database is not None:
                database.refresh()

    def lookup(self, ip: str) -> GeoAnswer | None:
        """MaxMind's answer for ``ip``, or ``None`` when no database is configured."""
        if not self.enabled:
            return None
        answer = self.city.lookup_city(ip) if self.city is not None else GeoAnswer()
        if self.asn is None:
            return answer
        number, organisation = self.asn.lookup_asn(ip)
        return dataclasses.replace(
            answer, asn=number, as_org=organisation, asn_db_built_at=self.asn.built_at
        )

    def close(self) -> None:
        """Close every open database."""
        for database in (self.city, self.asn):
            if database is not None:
                database.close()
