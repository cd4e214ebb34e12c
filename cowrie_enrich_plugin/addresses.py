"""Address validation: which strings are addresses, and which addresses may be sent.

Everything that reaches the whois socket passes through :func:`classify`. A value
is accepted only when it is a plain textual IPv4 or IPv6 address (no port, no
scope id, no surrounding space, no leading zeros); the accepted address is put in
canonical form (IPv4-mapped IPv6 unwrapped to IPv4, IPv6 compressed, lower case).
The table of special-purpose networks is kept here rather than taken from
:mod:`ipaddress`, whose ``is_global`` changed between Python releases.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeGuard, cast

__all__ = [
    "IPAddress",
    "InvalidAddress",
    "NonGlobal",
    "Usable",
    "all_usable_ipv4",
    "classify",
    "is_usable_ipv4",
    "non_global_reason",
    "parse_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ALLOWED_CHARS: Final = frozenset("0123456789abcdefABCDEF:.")
_MAX_TEXT_LENGTH: Final = 45  # the longest IPv6 text form, with an embedded IPv4 tail


@dataclass(frozen=True, slots=True)
class Usable:
    """A globally routable address in canonical text form."""

    ip: str


@dataclass(frozen=True, slots=True)
class NonGlobal:
    """A valid address that is never sent anywhere (private, loopback, ...)."""

    ip: str
    reason: str


@dataclass(frozen=True, slots=True)
class InvalidAddress:
    """A value that is not an address; ``reason`` says why, for the operator."""

    reason: str


Classification = Usable | NonGlobal | InvalidAddress

_V4_SPECIAL: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "this-network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGN)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_SPECIAL: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4 (deprecated)"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_V6_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")

# The IPv4 table as sorted integer ranges, for the fast path (no objects per lookup).
_V4_STARTS: Final = [int(net.network_address) for net, _ in sorted(_V4_SPECIAL, key=lambda n: n[0])]
_V4_RANGES: Final = [
    (int(net.network_address), int(net.broadcast_address), why)
    for net, why in sorted(_V4_SPECIAL, key=lambda n: n[0])
]
_V4_CHARS: Final = frozenset("0123456789.")


def _v4_reason(value: int) -> str | None:
    index = bisect.bisect_right(_V4_STARTS, value) - 1
    if index >= 0:
        start, end, why = _V4_RANGES[index]
        if start <= value <= end:
            return why
    return None


def fast_ipv4(value: str) -> int | None:
    """The integer of a dotted-quad IPv4 text in canonical form, else ``None``.

    ``inet_pton`` accepts exactly four decimal octets without leading zeros, so an
    accepted text is already canonical.
    """
    if len(value) > 15 or not _V4_CHARS.issuperset(value):
        return None
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, value), "big")
    except OSError:
        return None


def is_usable_ipv4(value: object) -> TypeGuard[str]:
    """Whether ``value`` is the canonical text of a globally routable IPv4 address.

    The common case of :func:`classify` (a ``Usable`` whose text is ``value``
    itself), answered without building a verdict; ``False`` means "ask
    :func:`classify`", not "unusable".
    """
    if type(value) is not str:
        return False
    number = fast_ipv4(value)
    return number is not None and _v4_reason(number) is None


_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_QUAD: Final = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
#: Lines of canonical dotted quads (no leading zeros, no part over 255): what
#: ``inet_pton`` accepts, checked for a whole batch in one pass.
_QUAD_LINES: Final = re.compile(rf"(?:{_QUAD}\n)*{_QUAD}", re.ASCII)
_ONLY_STR: Final = frozenset({str})
#: The first parts ("8.") of the addresses no special-purpose network holds.
_CLEAN_FIRST: Final = frozenset(
    f"{first}."
    for first in range(256)
    if not any(start >> 24 <= first <= end >> 24 for start, end, _why in _V4_RANGES)
)


def all_usable_ipv4(values: Sequence[object]) -> TypeGuard[Sequence[str]]:
    """Whether every one of ``values`` passes :func:`is_usable_ipv4`, decided in bulk.

    A batch of addresses is checked in one expression pass; only an address whose
    first part a special-purpose network covers is looked at on its own. Only
    ``str`` itself passes (a subclass may read or print as something else).
    ``False`` means "check each one", as for :func:`is_usable_ipv4`.
    """
    if not values or set(map(type, values)) != _ONLY_STR:
        return False
    texts = cast("Sequence[str]", values)
    text = "\n".join(texts)
    # A value holding a newline would pass as two lines: the count says one per value.
    if text.count("\n") != len(texts) - 1 or not _QUAD_LINES.fullmatch(text):
        return False
    clean = _CLEAN_FIRST
    return all(ip[: ip.find(".") + 1] in clean or is_usable_ipv4(ip) for ip in texts)


def parse_address(value: object) -> IPAddress | InvalidAddress:
    """Parse one untrusted value into an address, strictly.

    Returns the address (IPv4-mapped IPv6 unwrapped to IPv4) or an
    :class:`InvalidAddress` saying what is wrong with the value.
    """
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        return InvalidAddress(f"src_ip is {kind}, not a string")
    if not value:
        return InvalidAddress("src_ip is empty")
    if len(value) > _MAX_TEXT_LENGTH:
        return InvalidAddress("src_ip is too long to be an address")
    if not _ALLOWED_CHARS.issuperset(value):
        return InvalidAddress(f"src_ip {_shown(value)} has characters no address has")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        hint = " (a port glued to the address?)" if value.count(":") == 1 else ""
        return InvalidAddress(f"src_ip {_shown(value)} is not an IP address{hint}")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def non_global_reason(address: IPAddress) -> str | None:
    """Say why ``address`` is not globally routable, or ``None`` when it is."""
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_reason(int(address))
    for net6, why in _V6_SPECIAL:
        if address in net6:
            return why
    if address not in _V6_GLOBAL_UNICAST:
        return "reserved (outside 2000::/3)"
    return None


def classify(value: object) -> Classification:
    """Classify one untrusted ``src_ip`` value: usable, valid but non-global, or invalid."""
    if isinstance(value, str):
        number = fast_ipv4(value)
        if number is not None:
            why = _v4_reason(number)
            return Usable(value) if why is None else NonGlobal(value, why)
    address = parse_address(value)
    if isinstance(address, InvalidAddress):
        return address
    text = str(address)
    why = non_global_reason(address)
    if why is not None:
        return NonGlobal(text, why)
    return Usable(text)


def _shown(value: str) -> str:
    """Quote an untrusted value for a message, escaping control characters."""
    return repr(value[:60])
