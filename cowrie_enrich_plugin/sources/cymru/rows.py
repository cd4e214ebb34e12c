"""Team Cymru bulk whois: one data row of a verbose answer, parsed and checked.

A row is accepted only when every column is well formed: an AS number in range (or
``NA``), an address and a prefix holding it, a country code, a registry, a date.
The common shape (one origin AS, an IPv4 address in its announced prefix) is read
with one regular expression; every other shape column by column, alike.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from socket import AF_INET, inet_pton
from typing import Final, NamedTuple

from ...addresses import InvalidAddress, IPAddress, fast_ipv4, parse_address
from ...record import CymruAnswer

__all__ = [
    "MAX_ASN",
    "MAX_LINE_LENGTH",
    "CymruRow",
    "is_header",
    "merge_rows",
    "parse_row",
    "v4_network_holds",
]

#: A line longer than this is not a whois row (AS names are short).
MAX_LINE_LENGTH: Final = 4096
#: The largest AS number (32 bits).
MAX_ASN: Final = 2**32 - 1

_HEADER: Final = ("as", "ip", "bgp prefix", "cc", "registry", "allocated", "as name")
_CC_RE: Final = re.compile(r"[A-Z]{2}")
_REGISTRY_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,15}")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


class CymruRow(NamedTuple):
    """One parsed data row of a verbose bulk answer (a named tuple: one is made per row)."""

    ip: str
    asns: tuple[int, ...]
    prefix: str | None
    cc: str | None
    registry: str | None
    allocated: str | None
    as_name: str | None


def _null(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "NA") else value


# The shape of nearly every row: one origin AS, an IPv4 address in its announced
# prefix, every column filled but the allocation date, columns padded with spaces.
_COMMON_ROW: Final = re.compile(
    r" *(\d{1,10}) *\| *(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}) *"
    r"\| *(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})/(\d{1,2}) *\| *([A-Z]{2}) *"
    r"\| *([a-z][a-z0-9-]{0,15}) *\| *(?:(\d{4}-\d{2}-\d{2}) *)?\|(.*)",
    re.ASCII,
)


def parse_row(line: str) -> CymruRow | None:
    """Parse one verbose data row; ``None`` when any column is malformed."""
    common = _parse_common_row(line)
    return common if common is not None else _parse_any_row(line)


def _parse_common_row(line: str) -> CymruRow | None:
    """The most common shape of row, read with one regular expression.

    ``None`` when the line has another shape (or is malformed): then
    :func:`_parse_any_row` decides. Whatever this accepts, that would accept alike.
    """
    match = _COMMON_ROW.fullmatch(line)
    if match is None:
        return None
    as_text, ip_text, network, length_text, cc, registry, allocated, name = match.groups()
    asn = int(as_text)
    length = int(length_text)
    try:  # the shape is dotted-quad digits already; inet_pton refuses leading zeros, > 255
        address = int.from_bytes(inet_pton(AF_INET, ip_text), "big")
        start = int.from_bytes(inet_pton(AF_INET, network), "big")
    except OSError:
        return None
    if not 0 < asn <= MAX_ASN or not v4_network_holds(start, length, address):
        return None
    if allocated is not None:
        try:
            dt.date.fromisoformat(allocated)
        except ValueError:
            return None
    return CymruRow(ip_text, (asn,), f"{network}/{length}", cc, registry, allocated, _null(name))


def _parse_any_row(line: str) -> CymruRow | None:
    """:func:`parse_row` for every shape: each column split off, checked and normalised."""
    columns = line.split("|", 6)
    if len(columns) != 7:
        return None
    as_col, ip_col, prefix_col, cc_col, registry_col, allocated_col, name_col = columns
    ip_text = ip_col.strip()
    v4 = fast_ipv4(ip_text)
    address: IPAddress | None = None
    if v4 is None:
        parsed = parse_address(ip_text)
        if isinstance(parsed, InvalidAddress):
            return None
        address = parsed
        ip_text = str(address)
    asns: list[int] = []
    as_text = as_col.strip()
    if as_text != "NA":
        for token in as_text.split():
            if not _is_number(token) or len(token) > 10:
                return None
            asn = int(token)
            if not 0 < asn <= MAX_ASN:
                return None
            if asn not in asns:
                asns.append(asn)
        if not asns:
            return None
    prefix = _null(prefix_col)
    if prefix is not None:
        if v4 is not None:
            prefix = _v4_prefix(prefix, v4)
        elif address is not None:
            prefix = _any_prefix(prefix, address)
        if prefix is None:
            return None
    cc = cc_col.strip() or None
    if cc is not None and not _CC_RE.fullmatch(cc):
        return None
    if cc == "NA" and not asns and prefix is None:
        cc = None  # "NA" is Namibia, but in an all-NA row it means "not available"
    registry = _null(registry_col)
    if registry is not None:
        registry = registry.lower()
        if not _REGISTRY_RE.fullmatch(registry):
            return None
    allocated = _null(allocated_col)
    if allocated is not None:
        if not _DATE_RE.fullmatch(allocated):
            return None
        try:
            dt.date.fromisoformat(allocated)
        except ValueError:
            return None
    return CymruRow(
        ip=ip_text,
        asns=tuple(asns),
        prefix=prefix,
        cc=cc,
        registry=registry,
        allocated=allocated,
        as_name=_null(name_col),
    )


def _is_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²`` and other scripts' digits)."""
    return text.isascii() and text.isdigit()


def _v4_prefix(text: str, address: int) -> str | None:
    """``text`` as a canonical IPv4 prefix holding ``address``, else ``None``."""
    network, slash, length_text = text.partition("/")
    start = fast_ipv4(network)
    if not slash or start is None or not _is_number(length_text) or len(length_text) > 2:
        return None
    length = int(length_text)
    if not v4_network_holds(start, length, address):
        return None
    return f"{network}/{length}"


def v4_network_holds(start: int, length: int, address: int) -> bool:
    """Whether ``start/length`` is a proper IPv4 network (no host bits) holding ``address``."""
    if length > 32:
        return False
    host_bits = (1 << (32 - length)) - 1
    return not start & host_bits and start <= address <= start | host_bits


def _any_prefix(text: str, address: IPAddress) -> str | None:
    """``text`` as a canonical prefix of ``address``'s family holding it, else ``None``."""
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None
    if network.version != address.version or address not in network:
        return None
    return str(network)


def is_header(line: str) -> bool:
    """Whether ``line`` is the column header a server may send first."""
    return tuple(column.strip().lower() for column in line.split("|")) == _HEADER


def merge_rows(rows: list[CymruRow], fetched_at: dt.datetime) -> CymruAnswer:
    """Merge the rows of one address: every origin AS, the rest from the first announced row."""
    if len(rows) == 1:
        first = rows[0]
        asns = list(first.asns)
    else:
        asns = []
        for row in rows:
            asns.extend(asn for asn in row.asns if asn not in asns)
        first = next((row for row in rows if row.asns), rows[0])
    return CymruAnswer(
        asns=tuple(asns),
        as_name=first.as_name,
        prefix=first.prefix,
        cc=first.cc,
        registry=first.registry,
        allocated=first.allocated,
        fetched_at=fetched_at,
    )
