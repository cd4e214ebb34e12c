"""MaxMind as an offline source: the entry point's plugin, and the source the engine asks.

Its keys are the plugin's top-level ``geoip_city`` and ``geoip_asn``; its section is
the record's ``maxmind`` (:class:`~cowrie_enrich_plugin.record.GeoAnswer`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any, Final

from ...checks import Setting
from ...errors import GeoDatabaseError
from ...record import GeoAnswer
from ...settings import rules_of
from .lookup import GeoDatabase, GeoLookup

__all__ = ["SOURCE", "MaxMindPlugin", "MaxMindSource"]

#: A file older than this many days is worth a warning (MaxMind publishes weekly).
_OLD_DAYS: Final = 30
#: The parts of a section each file gives.
_CITY_FIELDS: Final = (
    "country_iso_code",
    "country_name",
    "city",
    "latitude",
    "longitude",
    "accuracy_radius",
    "city_db_built_at",
)
_ASN_FIELDS: Final = ("asn", "as_org", "asn_db_built_at")


class MaxMindSource:
    """The configured files, as an :class:`~..plugin.OfflineSource`."""

    field = "maxmind"

    def __init__(self, city_path: str | None, asn_path: str | None) -> None:
        self.geo = GeoLookup(city_path, asn_path)

    def section(self, ip: str) -> GeoAnswer | None:
        """What the files say of ``ip`` (``None``: no file is configured).

        An address not in them gets a section of nulls with the files' build times.
        """
        return self.geo.lookup(ip)

    def outdated(self, section: GeoAnswer | None) -> bool:
        """Whether a file open now did not make its part of ``section`` (or it has none).

        A file not configured now outdates nothing: what it gave earlier is kept.
        """
        geo = self.geo
        if not geo.enabled:
            return False
        if section is None:
            return True
        city, asn = geo.city, geo.asn
        return (city is not None and section.city_db_built_at != city.built_at) or (
            asn is not None and section.asn_db_built_at != asn.built_at
        )

    def renewed(self, ip: str, old: GeoAnswer | None) -> GeoAnswer | None:
        """``ip``'s section from the files open now, and from ``old`` what no open file gives.

        With only the city file open, the ASN part ``old`` had (from an earlier run with
        the ASN file) stays, and the other way round.
        """
        new = self.geo.lookup(ip)
        if old is None or new is None:
            return new if new is not None else old
        if self.geo.city is None and old.city_db_built_at is not None:
            new = dataclasses.replace(
                new,
                **{name: getattr(old, name) for name in _CITY_FIELDS},
            )
        if self.geo.asn is None and old.asn_db_built_at is not None:
            new = dataclasses.replace(new, **{name: getattr(old, name) for name in _ASN_FIELDS})
        return new

    def refresh(self) -> None:
        """Reopen a file replaced since it was opened (``geoipupdate``)."""
        self.geo.refresh()

    def close(self) -> None:
        """Close the files."""
        self.geo.close()


class MaxMindPlugin:
    """The entry point's object."""

    @property
    def settings(self) -> Mapping[str, Setting]:
        """The top-level keys MaxMind reads."""
        return rules_of("geoip_city", "geoip_asn")

    def open(self, settings: Mapping[str, Any]) -> MaxMindSource:
        """The files, for one run.

        :raises GeoDatabaseError: for a file that is corrupt or of the wrong kind.
        """
        return MaxMindSource(settings.get("geoip_city"), settings.get("geoip_asn"))

    def check(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        """Each configured file: there, of its kind, and not older than a month."""
        found = [
            _check_file(key, settings[key])
            for key in ("geoip_city", "geoip_asn")
            if settings.get(key)
        ]
        if not found:
            return "OK", "geoip_city, geoip_asn: not configured (records carry no MaxMind data)"
        levels = {level for level, _line in found}
        worst = "FAIL" if "FAIL" in levels else "WARN" if "WARN" in levels else "OK"
        return worst, "; ".join(line for _level, line in found)


def _check_file(option: str, path: str) -> tuple[str, str]:
    if not os.path.exists(path):  # ingest goes on without it, as it says
        return "WARN", (
            f"{option}: {path} does not exist; records carry no MaxMind data for it "
            "(download it from MaxMind or fix the path)"
        )
    try:
        database = GeoDatabase(path, "city" if option == "geoip_city" else "asn")
    except GeoDatabaseError as exc:
        return "FAIL", f"{option}: {exc}"
    database.close()
    line = f"{option}: {path} ({database.database_type}, built {database.built_at:%Y-%m-%d})"
    if (time.time() - database.built_at.timestamp()) / 86400 > _OLD_DAYS:
        return "WARN", f"{line}; older than {_OLD_DAYS} days: update it (geoipupdate)"
    return "OK", line


#: The instance the entry point names.
SOURCE = MaxMindPlugin()
