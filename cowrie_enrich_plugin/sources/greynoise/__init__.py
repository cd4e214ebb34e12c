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

#: What to run when the HTTP client is missing.
INSTALL_HINT: Final = (
    "GreyNoise needs httpx, which is not installed: "
    "pip install 'cowrie-enrich-plugin[greynoise]' (or remove [plugins.enrich.greynoise])"
)

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
        """The client (``httpx`` is imported here, in the engine).

        :raises ValueError: for an ``api_url`` or ``api_key`` that cannot be used, or
            when httpx (the ``greynoise`` extra) is not installed.
        """
        problem = _problem(settings)
        if problem:
            raise ValueError(problem)
        try:
            from .client import GreyNoiseClient
        except ModuleNotFoundError as exc:
            if exc.name != "httpx":
                raise
            raise ValueError(INSTALL_HINT) from None

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
        """(OK/FAIL, line) for ``doctor``: the extra, the settings, reachability, the key.

        A key is tried with GreyNoise's ``GET /ping``, which costs no lookup.
        """
        problem = _problem(settings)
        if problem:
            return "FAIL", problem
        try:
            import httpx
        except ImportError:
            return "FAIL", INSTALL_HINT
        url = urlsplit(str(settings["api_url"]))
        key = "a key (***)" if settings["api_key"] else "no key"
        port = url.port or (443 if url.scheme == "https" else 80)
        what = f"{settings['offering']} API at {url.scheme}://{url.hostname}:{port}, {key}"
        if settings["offering"] == "enterprise" and not settings["api_key"]:
            return "FAIL", f"{what}: the enterprise API needs a key (api_key)"
        try:
            with socket.create_connection((url.hostname or "", port), timeout=10):
                pass
        except OSError as exc:
            return "FAIL", f"{what}: cannot reach it ({exc}); addresses stay pending"
        if not settings["api_key"]:
            return "OK", f"{what}, reachable"
        try:
            response = httpx.get(
                str(settings["api_url"]).rstrip("/") + "/ping",
                headers={"key": str(settings["api_key"]), "User-Agent": "cowrie-enrich"},
                timeout=10,
            )
        except httpx.HTTPError as exc:
            return (
                "WARN",
                f"{what}, reachable, but the key could not be tried ({type(exc).__name__})",
            )
        if response.status_code in (401, 403):
            return "FAIL", (
                f"{what}: GreyNoise refused the key ({response.status_code}); set a valid "
                "api_key in [plugins.enrich.greynoise] or COWRIE_ENRICH_GREYNOISE_API_KEY"
            )
        return "OK", f"{what}, reachable, the key accepted"


def _problem(settings: Mapping[str, Any]) -> str | None:
    """Why ``api_url`` or ``api_key`` cannot be used (never quoting either), or ``None``."""
    key = settings.get("api_key")
    if key is not None and (not key.isascii() or not key.isprintable() or " " in key):
        return "api_key holds spaces, line breaks or other characters a key never has"
    url = urlsplit(str(settings["api_url"]))
    try:
        url.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        return "api_url: the port is not a number from 1 to 65535"
    if url.scheme not in ("http", "https") or not url.hostname:
        return "api_url: give an http:// or https:// URL with a host name"
    if url.username or url.password:
        return "api_url: credentials do not belong in the URL (the key goes in api_key)"
    return None


#: The instance the entry point names.
SOURCE = GreyNoisePlugin()
