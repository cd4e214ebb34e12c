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
from typing import Final

from ...addresses import (
    InvalidAddress,
    IPAddress,
    Usable,
    all_usable_ipv4,
    classify,
    is_usable_ipv4,
    non_global_reason,
    parse_address,
)
from ...record import CymruAnswer
from . import MAX_BATCH_SIZE
from .rows import (
    MAX_ASN,
    MAX_LINE_LENGTH,
    CymruRow,
    is_header,
    merge_rows,
    parse_row,
    v4_network_holds,
)

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_LINE_LENGTH",
    "BulkAnswer",
    "CymruRow",
    "build_bulk_request",
    "parse_bulk_answer",
    "parse_row",
]

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
    items = list(addresses)
    # Nearly every batch is checked in one pass; any other, address by address.
    checked = items if all_usable_ipv4(items) else map(_request_text, items)
    distinct = list(dict.fromkeys(checked))
    if len(distinct) > MAX_BATCH_SIZE:
        raise ValueError(f"{len(distinct)} addresses in one batch; the limit is {MAX_BATCH_SIZE}")
    # joined, not formatted: a str subclass could format as something else
    return "\n".join(["begin", "verbose", *distinct, "end", ""]).encode("ascii")


def _request_text(address: object) -> str:
    """The line of one address in a request (see :func:`build_bulk_request`)."""
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        why = non_global_reason(address)
        if why is not None:
            raise ValueError(f"{address} is not globally routable ({why}); it is never sent")
        return str(address)
    if isinstance(address, str):
        if not is_usable_ipv4(address):  # the common case, checked without a verdict
            verdict = classify(address)
            if not isinstance(verdict, Usable) or verdict.ip != address:
                raise ValueError(f"{address!r} is not a canonical global address; it is never sent")
        return address
    raise TypeError(f"not an address: {type(address).__name__}")


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
    line is anything else (a banner after the first line, a header but right after
    the banner, an error, a blank or cut line, another row's shape, a bad value, an
    address not asked): then :func:`_parse_lines` reads the answer line by line, and
    its result is the same as this would have been wherever this accepts.
    """
    end = text.rfind("\n") + 1
    start = 0
    if text.startswith("Bulk mode;"):
        start = text.find("\n") + 1
    # A verbose answer's column header comes next (the line by line reading skips it
    # wherever it is; here, only there).
    if text.startswith("AS", start):
        header_end = text.find("\n", start)
        if header_end >= 0 and is_header(text[start:header_end]):
            start = header_end + 1
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
            if not 0 < asn <= MAX_ASN:
                return None
            asns = (asn,)
        prefix = None
        if network:
            length = int(length_text)
            if not v4_network_holds(first, length, address):
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
            answer = merge_rows(
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
        if stripped[:2] == "AS" and is_header(stripped):
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
        result.answers[ip] = merge_rows(rows, fetched_at)
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
