"""MaxMind as a source plugin: registered like any other, asked through the interface.

The engine merges MaxMind's answers into every record itself (offline, no batch, no
lease), so it drives :class:`~.lookup.GeoLookup` directly; this adapter is what the
entry point names. Its keys are the plugin's top-level ``geoip_*`` keys.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from ...checks import Setting
from ..plugin import Lookup

__all__ = ["SOURCE", "MaxMindSource"]


class MaxMindSource:
    """:class:`~.lookup.GeoLookup` behind the source interface."""

    batch_size = 10_000
    concurrency = 4
    #: the files change when the operator replaces them; a day is a fair freshness
    ttl = dt.timedelta(days=1)
    negative_ttl = dt.timedelta(days=1)

    def __init__(self, settings: Mapping[str, Any]) -> None:
        from .lookup import GeoLookup

        self._geo = GeoLookup(settings.get("geoip_city"), settings.get("geoip_asn"))

    def lookup(self, ips: Sequence[str]) -> Lookup:
        """Every address answered from the files, or not found in them."""
        self._geo.refresh()
        result = Lookup()
        for ip in ips:
            answer = self._geo.lookup(ip)
            if answer is None:
                result.not_found[ip] = {}
            else:
                result.answers[ip] = answer.to_dict()
        return result

    def close(self) -> None:
        """Close the files."""
        self._geo.close()


class MaxMindPlugin:
    """The entry point's object."""

    @property
    def settings(self) -> Mapping[str, Setting]:
        """The top-level keys MaxMind reads."""
        from ...config import source_rules_of

        return source_rules_of("geoip_city", "geoip_asn")

    def open(self, settings: Mapping[str, Any]) -> MaxMindSource:
        """The files, for one run."""
        return MaxMindSource(settings)


#: The instance the entry point names.
SOURCE = MaxMindPlugin()
