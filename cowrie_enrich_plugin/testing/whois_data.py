"""The answers of the loopback whois server: rows, made up deterministically per address.

:func:`synthetic_rows` gives each address the same answer every time (most
announced, some unannounced, some on multi-origin prefixes, AS names with commas
and punctuation); :func:`expected_cymru` is what a correct client records from
them; :func:`render_row` is their line in the verbose bulk format.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["Row", "canonical", "expected_cymru", "render_row", "synthetic_rows"]


@dataclass(frozen=True)
class Row:
    """One verbose answer row as the server will send it (``asn=None`` is ``NA``)."""

    asn: int | None
    ip: str
    prefix: str | None
    cc: str | None
    registry: str | None
    allocated: str | None
    as_name: str | None


_NAMES = (
    "EXAMPLE-NET, US",
    "ACME Hosting, Inc., DE",
    "CHINANET-BACKBONE No.31,Jin-rong Street, CN",
    "O'Reilly & Sons (Transit) | Peering, GB",
    "TELSTRA-AS Telstra Pty Ltd, AU",
    "Société Française du Réseau, FR",
)
_REGISTRIES = ("arin", "ripencc", "apnic", "lacnic", "afrinic")


def canonical(text: str) -> str:
    """The canonical text of an address (IPv4 without :mod:`ipaddress`, it being common).

    :raises ValueError: for text that is not an address.
    """
    try:
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text
    except OSError:
        pass
    return str(ipaddress.ip_address(text))


def _digest(ip: str) -> bytes:
    return hashlib.sha256(ip.encode("ascii")).digest()


def synthetic_rows(ip: str) -> list[Row]:
    """Deterministic answer rows for ``ip``: 10 % unannounced, 5 % multi-origin."""
    address = ipaddress.ip_address(ip)
    digest = _digest(ip)
    roll = digest[0] % 100
    prefix_len = 24 if address.version == 4 else 48
    prefix = str(ipaddress.ip_network(f"{address}/{prefix_len}", strict=False))
    cc = "".join(chr(ord("A") + b % 26) for b in digest[1:3])
    registry = _REGISTRIES[digest[3] % len(_REGISTRIES)]
    allocated = (
        None
        if digest[4] % 17 == 0
        else f"{1990 + digest[4] % 35}-{1 + digest[5] % 12:02d}-{1 + digest[6] % 28:02d}"
    )
    if roll < 10:
        # In an unannounced row a CC of "NA" would read as "not available".
        unannounced_cc = cc if roll % 2 and cc != "NA" else None
        return [Row(None, ip, None, unannounced_cc, registry, allocated, None)]
    asn = 1 + struct.unpack(">I", digest[8:12])[0] % 400000
    name = _NAMES[digest[7] % len(_NAMES)]
    rows = [Row(asn, ip, prefix, cc, registry, allocated, name)]
    if roll >= 95:
        rows.append(Row(asn + 1 + digest[12], ip, prefix, cc, registry, allocated, name))
    return rows


def expected_cymru(rows: list[Row]) -> dict[str, Any]:
    """The ``cymru`` section a correct client derives from ``rows`` (without ``fetched_at``)."""
    asns: list[int] = []
    for row in rows:
        if row.asn is not None and row.asn not in asns:
            asns.append(row.asn)
    first = next((row for row in rows if row.asn is not None), rows[0])
    return {
        "asn": asns[0] if asns else None,
        "asns": asns,
        "as_name": first.as_name,
        "prefix": first.prefix,
        "cc": first.cc,
        "registry": first.registry,
        "allocated": first.allocated,
    }


def render_row(row: Row) -> bytes:
    """Render one row in the padded, ``|``-separated verbose format."""

    def na(value: object) -> str:
        return "NA" if value is None else str(value)

    as_field = na(row.asn)
    text = (
        f"{as_field:<8}| {row.ip:<16} | {na(row.prefix):<20}| {row.cc or '':<2} | "
        f"{row.registry or '':<8} | {row.allocated or '':<10} | {na(row.as_name)}"
    )
    return text.encode("utf-8")
