"""Team Cymru bulk whois, the wire format: the request builder and the answer parser.

No I/O here. The request builder takes parsed addresses only, so a string from a
log can never reach the socket. The parser is strict: a row is accepted only when
every column is well formed, and only when the answer proves the row complete.

Completeness: the bulk protocol has no end-of-answer marker, and an address on a
multi-origin prefix is answered with several consecutive rows. The rows of an
address are trusted only when a later complete line follows them, or when the
connection closed cleanly after every asked address was answered. (A server that
closes cleanly, exactly between two rows of the last address, before sending the
rest, cannot be told from a whole answer: that one case relies on the server.) Lines that
cannot be parsed and rows for addresses that were not asked make the rows next to
them untrusted too, since they may be one of those rows, garbled.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from socket import AF_INET, inet_pton
from typing import Final, NamedTuple

from ...addresses import (
    InvalidAddress,
    IPAddress,
    Usable,
    classify,
    fast_ipv4,
    is_usable_ipv4,
    non_global_reason,
    parse_address,
)
from ...record import CymruAnswer
from . import MAX_BATCH_SIZE

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_LINE_LENGTH",
    "BulkAnswer",
    "CymruRow",
    "build_bulk_request",
    "parse_bulk_answer",
    "parse_row",
]

#: A line longer than this is not a whois row (AS names are short).
MAX_LINE_LENGTH: Final = 4096

_HEADER: Final = ("as", "ip", "bgp prefix", "cc", "registry", "allocated", "as name")
_CC_RE: Final = re.compile(r"[A-Z]{2}")
_REGISTRY_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,15}")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_MAX_ASN: Final = 2**32 - 1
_ERROR: Final = "error"
_JUNK: Final = "junk"


def build_bulk_request(addresses: Iterable[IPAddress | str]) -> bytes:
    """Build one bulk request: ``begin``, ``verbose``, one address per line, ``end``.

    Each item is an :mod:`ipaddress` address, or a string that is *exactly* the
    canonical text of a globally routable address (anything else is refused, so
    no log value can smuggle a line into the request). Duplicates are dropped.

    :raises TypeError: for anything else than an address or a string.
    :raises ValueError: for a string that is not a canonical address, a non-global
        address, or more than :data:`MAX_BATCH_SIZE` distinct addresses.
    """
    lines = ["begin", "verbose"]
    seen: set[str] = set()
    for address in addresses:
        if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            why = non_global_reason(address)
            text = str(address)
            if why is not None:
                raise ValueError(f"{text} is not globally routable ({why}); it is never sent")
        elif isinstance(address, str):
            if not is_usable_ipv4(address):  # the common case, checked without a verdict
                verdict = classify(address)
                if not isinstance(verdict, Usable) or verdict.ip != address:
                    raise ValueError(
                        f"{address!r} is not a canonical global address; it is never sent"
                    )
            text = address
        else:
            raise TypeError(f"not an address: {type(address).__name__}")
        if text in seen:
            continue
        seen.add(text)
        lines.append(text)
    if len(seen) > MAX_BATCH_SIZE:
        raise ValueError(f"{len(seen)} addresses in one batch; the limit is {MAX_BATCH_SIZE}")
    lines.append("end")
    return ("\n".join(lines) + "\n").encode("ascii")


class CymruRow(NamedTuple):
    """One parsed data row of a verbose bulk answer (a named tuple: one is made per row)."""

    ip: str
    asns: tuple[int, ...]
    prefix: str | None
    cc: str | None
    registry: str | None
    allocated: str | None
    as_name: str | None


@dataclass
class BulkAnswer:
    """What one bulk answer established.

    ``answers`` holds only trusted, complete answers, keyed by canonical address;
    ``untrusted`` the addresses that had rows, but rows this answer cannot prove whole.
    """

    answers: dict[str, CymruAnswer] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    garbage: int = 0
    untrusted: set[str] = field(default_factory=set)
    partial_tail: bool = False


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
    if not 0 < asn <= _MAX_ASN or not _v4_network_holds(start, length, address):
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
            if not 0 < asn <= _MAX_ASN:
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
    if not _v4_network_holds(start, length, address):
        return None
    return f"{network}/{length}"


def _v4_network_holds(start: int, length: int, address: int) -> bool:
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


def _is_header(line: str) -> bool:
    return tuple(column.strip().lower() for column in line.split("|")) == _HEADER


def _merge_rows(rows: list[CymruRow], fetched_at: dt.datetime) -> CymruAnswer:
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


#: The rows of nearly every answer, every line of a text at once: IPv4, announced by
#: one AS or not at all (``NA``), the country and registry possibly blank.
_COMMON_LINES: Final = re.compile(
    # Bounded padding: with ``*`` a line of spaces that fails late costs time
    # quadratic in its length. Wider padding, like every other shape, is read line by line.
    (
        r"^ {0,32}(\d{1,10}|NA) {0,32}\| {0,32}(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}) {0,32}"
        r"\| {0,32}(?:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})/(\d{1,2})|NA) {0,32}"
        r"\| {0,32}([A-Z]{2})? {0,32}\| {0,32}([a-z][a-z0-9-]{0,15})? {0,32}"
        r"\| {0,32}(?:(\d{4}-\d{2}-\d{2}) {0,32})?\|(.*)$"
    ),
    re.ASCII | re.MULTILINE,
)
#: Longer AS names are left to the line-by-line reading. With the bounded padding, a
#: line read in one pass is always shorter than :data:`MAX_LINE_LENGTH`.
_COMMON_NAME_LENGTH: Final = 256


def parse_bulk_answer(
    data: bytes,
    asked: Collection[str],
    *,
    clean_eof: bool,
    fetched_at: dt.datetime,
) -> BulkAnswer:
    """Parse the bytes of one verbose bulk answer.

    :param data: everything read from the connection, possibly cut short.
    :param asked: the canonical addresses that were sent.
    :param clean_eof: whether the server closed the connection normally (as
        opposed to a reset, a timeout or too much data).
    :param fetched_at: the time to stamp on the answers.
    """
    # "\n" is never part of a multi-byte sequence: decoding the whole answer at once
    # gives the same lines as decoding each.
    text = data.decode("utf-8", errors="replace")
    whole = text.endswith("\n") or not text
    common = _parse_common_answer(text, asked, fetched_at)
    if common is None:
        return _parse_lines(text.split("\n"), asked, clean_eof=clean_eof, fetched_at=fetched_at)
    answers, last = common
    result = BulkAnswer(answers=answers, partial_tail=not whole)
    # As in _parse_lines: the last row's address is whole only if the answer is.
    if last is not None and not (clean_eof and whole and all(ip in answers for ip in asked)):
        del answers[last]
        result.untrusted = {last}
    return result


def _parse_common_answer(
    text: str, asked: Collection[str], fetched_at: dt.datetime
) -> tuple[dict[str, CymruAnswer], str | None] | None:
    """An answer whose every line is a well-formed common row of an asked address.

    One pass of one expression over the whole text, and the answers built from its
    groups. Returns the answers and the address of the last row; ``None`` when any
    line is anything else (a banner after the first line, a header, an error, a blank
    or cut line, another row's shape, a bad value, an address not asked): then
    :func:`_parse_lines` reads the answer line by line, and its result is the same
    as this would have been wherever this accepts.
    """
    end = text.rfind("\n") + 1
    start = 0
    if text.startswith("Bulk mode;"):
        start = text.find("\n") + 1
    lines = text.count("\n", start, end)
    rows = _COMMON_LINES.findall(text, start, end - 1 if end else 0)
    if len(rows) != lines:
        return None
    answers: dict[str, CymruAnswer] = {}
    dates: set[str] = set()
    last: str | None = None
    for as_text, ip_text, network, length_text, cc, registry, allocated, name in rows:
        if ip_text not in asked or len(name) > _COMMON_NAME_LENGTH:
            return None
        try:  # inet_pton refuses leading zeros and parts over 255
            address = int.from_bytes(inet_pton(AF_INET, ip_text), "big")
            first = int.from_bytes(inet_pton(AF_INET, network), "big") if network else 0
        except OSError:
            return None
        asns: tuple[int, ...] = ()
        if as_text != "NA":
            asn = int(as_text)
            if not 0 < asn <= _MAX_ASN:
                return None
            asns = (asn,)
        prefix = None
        if network:
            length = int(length_text)
            if not _v4_network_holds(first, length, address):
                return None
            prefix = f"{network}/{length}"
        if allocated and allocated not in dates:
            try:
                dt.date.fromisoformat(allocated)
            except ValueError:
                return None
            dates.add(allocated)
        if cc == "NA" and not asns and prefix is None:
            cc = ""  # "NA" is Namibia, but in an all-NA row it means "not available"
        name = name.strip()
        answer = CymruAnswer(
            asns,
            None if name in ("", "NA") else name,
            prefix,
            cc or None,
            registry or None,
            allocated or None,
            fetched_at,
        )
        if ip_text == last:  # one more row of a multi-origin prefix
            answer = _merge_rows(
                [_as_row(ip_text, answers[ip_text]), _as_row(ip_text, answer)], fetched_at
            )
        elif ip_text in answers:  # its rows are not together: read line by line
            return None
        answers[ip_text] = answer
        last = ip_text
    return answers, last


def _as_row(ip: str, answer: CymruAnswer) -> CymruRow:
    return CymruRow(
        ip,
        answer.asns,
        answer.prefix,
        answer.cc,
        answer.registry,
        answer.allocated,
        answer.as_name,
    )


def _parse_lines(
    pieces: list[str], asked: Collection[str], *, clean_eof: bool, fetched_at: dt.datetime
) -> BulkAnswer:
    """:func:`parse_bulk_answer` line by line, whatever the lines are."""
    result = BulkAnswer()
    if pieces[-1]:
        result.partial_tail = True  # the last line has no newline: it was cut
    complete_lines = pieces[:-1]

    # One entry per meaningful line: a data row of an asked address, an ``Error:``
    # line (the server's word for a whole address), or junk (a line that cannot be
    # parsed, or a row of an address that was not asked). Junk may be a garbled row
    # of the address before or after it: both are tainted.
    sequence: list[CymruRow | str] = []
    tainted: set[str] = set()
    rows_by_ip: dict[str, list[CymruRow]] = {}
    for piece in complete_lines:
        line = piece.rstrip("\r")
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("Bulk mode;") and not sequence:
            continue
        if stripped.startswith("Error:"):
            result.errors.append(stripped[:200])
            sequence.append(_ERROR)
            continue
        if stripped[:2] == "AS" and _is_header(stripped):
            continue
        row = parse_row(line) if len(line) <= MAX_LINE_LENGTH else None
        if row is not None and row.ip in asked:
            if sequence and sequence[-1] is _JUNK:
                tainted.add(row.ip)
            sequence.append(row)
            rows_by_ip.setdefault(row.ip, []).append(row)
            continue
        if row is None:
            result.garbage += 1
            ip = _ip_column(line)
            if ip is not None and ip in asked:
                tainted.add(ip)
        else:
            result.unexpected.append(row.ip)
        if sequence and isinstance(sequence[-1], CymruRow):
            tainted.add(sequence[-1].ip)
        sequence.append(_JUNK)

    # The rows of the last line are complete only if the answer is proven whole;
    # a cut line after them may be one more row of the same address.
    all_answered = all(ip in rows_by_ip for ip in asked)
    proven_complete = clean_eof and not result.partial_tail and all_answered
    if sequence and not proven_complete and isinstance(sequence[-1], CymruRow):
        tainted.add(sequence[-1].ip)

    for ip, rows in rows_by_ip.items():
        if ip in tainted:
            continue
        result.answers[ip] = _merge_rows(rows, fetched_at)
    result.untrusted = tainted & set(rows_by_ip)
    return result


def _ip_column(line: str) -> str | None:
    columns = line.split("|")
    if len(columns) < 2:
        return None
    address = parse_address(columns[1].strip())
    if isinstance(address, InvalidAddress):
        return None
    return str(address)
