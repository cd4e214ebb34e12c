"""The ``enrich`` filter's lines: read in batches, each line with its event's address.

A batch is parsed whole in C when every line is a JSON object with a hashable
``src_ip`` (the common case), and line by line otherwise. Each line keeps its
bytes: the filter writes them back with the record added (:mod:`.stream`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter
from typing import Any, Final

from ..addresses import InvalidAddress, classify
from ..fastjson import json_loads

__all__ = [
    "MAX_WAITING",
    "Batch",
    "Parsed",
    "Waiting",
    "address_of",
    "all_end_with_brace",
    "parse_batch",
]

#: Lines that may wait for records at once (and ``src_ip`` values remembered).
MAX_WAITING: Final = 200_000
_SRC_IP: Final = repeat("src_ip")
#: ``dict.get`` unbound: TypeError for anything but a dict (a line that is not an object)
_DICT_GET: Final[Callable[[Any, str], object]] = dict.get
_BEFORE_NEWLINE: Final = itemgetter(-2)


class Batch:
    """Lines read together, each with its address (``None``: it passes through untouched).

    ``keyed``: the lines (native format) whose event has an ``enrich`` member
    already. ``plain``: every line ends with ``}`` and none is keyed, so an event can
    take its record in place of its closing brace. ``start``: the lines before it
    are written.
    """

    __slots__ = ("arrived", "ips", "keyed", "lines", "plain", "start")

    def __init__(self, lines: list[bytes], ips: list[str | None], arrived: float, plain: bool):
        self.lines = lines
        self.ips = ips
        self.arrived = arrived
        self.plain = plain
        self.keyed: set[int] | None = None  # None: the event's text decides (ecs)
        self.start = 0


class Waiting:
    """The lines not written yet, oldest first, in the batches they were read in."""

    __slots__ = ("batches", "count")

    def __init__(self) -> None:
        self.batches: deque[Batch] = deque()
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, batch: Batch) -> None:
        """Let ``batch``'s lines wait (after every line already waiting)."""
        if batch.lines:
            self.batches.append(batch)
            self.count += len(batch.lines)

    def head(self) -> tuple[str | None, float] | None:
        """The oldest line's address and arrival (``None``: nothing waits)."""
        if not self.batches:
            return None
        batch = self.batches[0]
        return batch.ips[batch.start], batch.arrived


def all_end_with_brace(lines: list[bytes]) -> bool:
    """Whether every line ends with ``}`` and its newline (only the last can lack one)."""
    try:
        return bytes(map(_BEFORE_NEWLINE, lines)) == b"}" * len(lines) and lines[-1][-1:] == b"\n"
    except IndexError:  # a line of one byte, or none at all
        return False


def parse_batch(lines: list[bytes], canonical: dict[str, str | None], now: float) -> Parsed:
    """Parse ``lines``: see :data:`Parsed`.

    Positions are ``None`` when every line is an event handed on (the common case,
    done a whole batch at a time in C); a batch holding a line that is not a JSON
    object or a ``src_ip`` that cannot be hashed is read line by line.
    """
    try:
        parsed = list(map(json_loads, lines))
        values = list(map(_DICT_GET, parsed, _SRC_IP))  # TypeError: not all objects
        ips = list(map(canonical.get, values))  # type: ignore[arg-type]  # TypeError: unhashable
    except (ValueError, TypeError, RecursionError):
        return _parse_each(lines, canonical, now)
    if None in ips:  # first sight of an address, or events without a usable one
        # Only those places are looked at (a new address is a line or two of a read).
        missing = 0
        index = -1
        for _ in range(ips.count(None)):
            index = ips.index(None, index + 1)
            ips[index] = ip = address_of(values[index], canonical)
            missing += ip is None
        if missing:
            kept = [i for i, ip in enumerate(ips) if ip is not None]
            return Batch(lines, ips, now, False), [parsed[i] for i in kept], kept, missing
    return Batch(lines, ips, now, False), parsed, None, 0


def _parse_each(lines: list[bytes], canonical: dict[str, str | None], now: float) -> Parsed:
    """:func:`parse_batch`, one line at a time."""
    ips: list[str | None] = []
    events: list[dict[str, Any]] = []
    positions: list[int] = []
    missing = 0
    remember = canonical.get
    for line in lines:
        try:
            event = json_loads(line)
        except (ValueError, RecursionError):  # the latter: deep nesting, stdlib parser
            ips.append(None)
            continue
        ip = None
        if type(event) is dict:
            value = event.get("src_ip")
            ip = remember(value) if type(value) is str else None
            if ip is None:
                ip = address_of(value, canonical)
            if ip is None:
                missing += 1
            else:
                events.append(event)
                positions.append(len(ips))
        ips.append(ip)
    return Batch(lines, ips, now, False), events, positions, missing


def address_of(value: object, canonical: dict[str, str | None]) -> str | None:
    """The canonical address a ``src_ip`` value names (``None``: none); remembered."""
    if not isinstance(value, str):
        return None
    if value in canonical:
        return canonical[value]
    verdict = classify(value)
    ip = None if isinstance(verdict, InvalidAddress) else verdict.ip
    if len(canonical) >= MAX_WAITING:
        canonical.clear()
    canonical[value] = ip
    return ip


#: A parsed batch: the batch, the events to hand on, each one's line (``None``: every
#: line is an event handed on), and how many events have no usable address.
Parsed = tuple[Batch, list[dict[str, Any]], list[int] | None, int]
