"""GreyNoise: is an address an internet-wide scanner, a benign service, or neither.

Off unless ``[plugins.enrich.greynoise]`` is present. The community API answers one
address a request (``GET /v3/community/{ip}``, key optional); with an enterprise key
(``offering = "enterprise"``) addresses go out in bulk quick-check requests
(``POST /v3/ip?quick=true``, up to 10,000 a request), the way bulk whois replaces
per-address whois. The key comes from the section or
``COWRIE_ENRICH_GREYNOISE_API_KEY``, goes only in the ``key`` header, and is never
printed, logged or stored. :mod:`.client` does the asking.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from ...checks import Setting

__all__ = ["SETTINGS", "SOURCE", "GreyNoisePlugin"]

#: The largest bulk request the enterprise API takes.
MAX_BULK: Final = 10_000

SETTINGS: Final[Mapping[str, Setting]] = {
    "api_key": Setting(str, None, optional=True, secret=True),
    "api_url": Setting(str, "https://api.greynoise.io"),
    "offering": Setting(str, "community", choices=("community", "enterprise")),
    "rate_per_second": Setting(float, 1.0, low=0, high=1000, low_open=True),
    "daily_quota": Setting(int, 0, low=0, high=10**9),
    "ttl_days": Setting(float, 7.0, low=0, high=3650, low_open=True),
    "negative_ttl_hours": Setting(float, 24.0, low=0, high=87600, low_open=True),
    "timeout": Setting(float, 10.0, low=0, high=600, low_open=True),
    "retries": Setting(int, 3, low=1, high=20),
    "bulk_size": Setting(int, 1000, low=1, high=MAX_BULK),
    "concurrency": Setting(int, 1, low=1, high=8),
}


class GreyNoisePlugin:
    """The entry point's object: settings, opening, and the doctor's check."""

    name = "greynoise"
    settings = SETTINGS

    def open(self, settings: Mapping[str, Any]) -> Any:
        """The client (``httpx`` is imported here, in the engine)."""
        from .client import GreyNoiseClient

        return GreyNoiseClient(
            api_url=str(settings["api_url"]),
            api_key=settings["api_key"],
            offering=str(settings["offering"]),
            rate_per_second=float(settings["rate_per_second"]),
            daily_quota=int(settings["daily_quota"]),
            ttl=dt.timedelta(days=float(settings["ttl_days"])),
            negative_ttl=dt.timedelta(hours=float(settings["negative_ttl_hours"])),
            timeout=float(settings["timeout"]),
            retries=int(settings["retries"]),
            bulk_size=int(settings["bulk_size"]),
            concurrency=int(settings["concurrency"]),
        )

    def check(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        """(OK/FAIL, line) for ``doctor``: the offering, the key (masked), reachability."""
        url = urlsplit(str(settings["api_url"]))
        key = "a key (***)" if settings["api_key"] else "no key"
        what = f"{settings['offering']} API at {url.scheme}://{url.netloc}, {key}"
        if settings["offering"] == "enterprise" and not settings["api_key"]:
            return "FAIL", f"{what}: the enterprise API needs a key (api_key)"
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "", port), timeout=10):
                pass
        except OSError as exc:
            return "FAIL", f"{what}: cannot reach it ({exc}); addresses stay pending"
        return "OK", f"{what}, reachable"


#: The instance the entry point names.
SOURCE = GreyNoisePlugin()
