"""The compiled index of every installed feed: one file, memory-mapped, shared by processes.

Matching rule (DESIGN): IPv4 and IPv6 are separate spaces; per feed, the longest
prefix holding the address, with one label for every entry listed with exactly that
prefix; feeds do not hide each other.

The address space of each family is cut into intervals at every prefix's first
address and one past its last. Within an interval every address is held by the same
prefixes, so each interval carries one *label set*: per feed, the labels of its
longest prefix there (CIDR prefixes of one feed nest or are disjoint, so a stack per
feed finds it in one sweep). A lookup is a binary search over the interval starts
(``bisect`` over the mapped arrays, in C): IPv4 starts as 32-bit integers; IPv6 as
two 64-bit halves, the high halves searched first, then the low ones among equal
high halves. Nothing of one family is ever looked up in the other's arrays.

File layout: ``CEFEEDS1``, a 4-byte header length, a JSON header (the sections'
offsets and kinds, the feeds' versions), then the sections, each 8-byte aligned:
``v4_starts`` (I), ``v4_sets`` (I), ``v6_hi`` (Q), ``v6_lo`` (Q), ``v6_sets`` (I),
``set_offsets`` (I), ``set_members`` (I), ``label_fields`` (I: five a label, its
feed's number and the string ids of its prefix, service, region and id; 0 is none),
``string_offsets`` (Q), ``strings`` (UTF-8, end to end). The feeds' names, kinds,
providers and versions are in the header. Arrays are in the compiling machine's byte order,
which the header records: an index is a local cache, compiled where it is used.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import mmap
import socket
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..files import replace_whole
from ..record import Classification
from .formats import Entry

__all__ = ["FeedContent", "Index", "compile_index"]

MAGIC: Final = b"CEFEEDS1"
_SECTIONS: Final = (
    ("v4_starts", "I"),
    ("v4_sets", "I"),
    ("v6_hi", "Q"),
    ("v6_lo", "Q"),
    ("v6_sets", "I"),
    ("set_offsets", "I"),
    ("set_members", "I"),
    ("label_fields", "I"),
    ("string_offsets", "Q"),
)
_FEED_KEYS: Final = ("name", "kind", "provider", "version", "fetched_at")
#: Classifications kept per process, by label set (most addresses share a handful).
_CACHED_SETS: Final = 65_536


@dataclass(frozen=True)
class FeedContent:
    """One installed feed's version and entries, as the index is compiled from them."""

    name: str
    kind: str
    provider: str
    version: str
    fetched_at: str
    entries: Sequence[Entry]


class _Builder:
    """Label ids, label-set ids and the interval sweep of one family."""

    def __init__(self) -> None:
        self.labels: list[tuple[int, int, int, int, int]] = []
        self._label_ids: dict[tuple[int, int, int, int, int], int] = {}
        self.strings: list[str] = [""]
        self._string_ids: dict[str | None, int] = {None: 0}
        self.sets: list[tuple[int, ...]] = [()]
        self._set_ids: dict[tuple[int, ...], int] = {(): 0}

    def string(self, text: str | None) -> int:
        found = self._string_ids.get(text)
        if found is None:
            found = self._string_ids[text] = len(self.strings)
            self.strings.append(str(text))
        return found

    def label(self, feed: int, entry: Entry) -> int:
        key = (feed, *(self.string(value) for value in entry))
        assert len(key) == 5
        found = self._label_ids.get(key)
        if found is None:
            found = self._label_ids[key] = len(self.labels)
            self.labels.append(key)
        return found

    def set_id(self, members: tuple[int, ...]) -> int:
        found = self._set_ids.get(members)
        if found is None:
            found = self._set_ids[members] = len(self.sets)
            self.sets.append(members)
        return found

    def sweep(
        self, nodes: dict[tuple[int, int, int], list[int]], top: int
    ) -> tuple[list[int], list[int]]:
        """Interval starts and their label-set ids, for nodes keyed (feed, first, last).

        ``top`` is the family's last address: one past it starts no interval.
        """
        starts_at: dict[int, list[tuple[int, int, int, tuple[int, ...]]]] = {}
        ends_after: dict[int, set[int]] = {}
        for (feed, first, last), labels in nodes.items():
            # outer (larger) prefixes first at the same start: pushed before inner ones
            starts_at.setdefault(first, []).append((-(last - first), feed, last, tuple(labels)))
            if last < top:
                ends_after.setdefault(last + 1, set()).add(feed)
        stacks: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        starts: list[int] = [0]
        sets: list[int] = [0]
        for point in sorted(set(starts_at) | set(ends_after)):
            for feed in ends_after.get(point, ()):
                stack = stacks[feed]
                while stack and stack[-1][0] < point:
                    stack.pop()
                if not stack:
                    del stacks[feed]
            for _size, feed, last, held in sorted(starts_at.get(point, ())):
                stacks.setdefault(feed, []).append((last, held))
            members = tuple(m for feed in sorted(stacks) for m in stacks[feed][-1][1])
            set_id = self.set_id(members)
            if point == starts[-1]:
                sets[-1] = set_id
            elif set_id != sets[-1]:
                starts.append(point)
                sets.append(set_id)
        return starts, sets


def compile_index(feeds: Iterable[FeedContent], path: Path) -> dict[str, Any]:
    """Compile ``feeds`` into an index file at ``path`` (written aside, then renamed).

    :returns: the header written (each feed's version, fetch time and entry count).
    """
    builder = _Builder()
    nodes: tuple[dict[tuple[int, int, int], list[int]], ...] = ({}, {})
    described: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for number, feed in enumerate(feeds):
        order.append(feed.name)
        described[feed.name] = {
            "name": feed.name,
            "kind": feed.kind,
            "provider": feed.provider,
            "version": feed.version,
            "fetched_at": feed.fetched_at,
            "entries": len(feed.entries),
        }
        for entry in feed.entries:
            net = ipaddress.ip_network(entry.prefix)
            first = int(net.network_address)
            key = (number, first, first + net.num_addresses - 1)
            found = nodes[net.version == 6].setdefault(key, [])
            label = builder.label(number, entry)
            if label not in found:
                found.append(label)
    v4_starts, v4_sets = builder.sweep(nodes[0], (1 << 32) - 1)
    v6_starts, v6_sets = builder.sweep(nodes[1], (1 << 128) - 1)
    mask = (1 << 64) - 1
    offsets = [0]
    members: list[int] = []
    for label_set in builder.sets:
        members.extend(label_set)
        offsets.append(len(members))
    blob = bytearray()
    string_offsets = [0]
    for string in builder.strings:
        blob += string.encode()
        string_offsets.append(len(blob))
    arrays = {
        "v4_starts": array("I", v4_starts),
        "v4_sets": array("I", v4_sets),
        "v6_hi": array("Q", (s >> 64 for s in v6_starts)),
        "v6_lo": array("Q", (s & mask for s in v6_starts)),
        "v6_sets": array("I", v6_sets),
        "set_offsets": array("I", offsets),
        "set_members": array("I", members),
        "label_fields": array("I", (n for label in builder.labels for n in label)),
        "string_offsets": array("Q", string_offsets),
    }
    parts = [arrays[name].tobytes() for name, _code in _SECTIONS] + [bytes(blob)]
    header: dict[str, Any] = {
        "byteorder": sys.byteorder,
        "feeds": described,
        "order": order,
        "sections": {},
    }
    # The header's length depends on the offsets it holds: lay out until it settles.
    encoded = b""
    while True:
        position = _aligned(len(MAGIC) + 4 + len(encoded))
        layout: dict[str, list[int]] = {}
        for (name, _code), part in zip((*_SECTIONS, ("strings", "B")), parts, strict=True):
            layout[name] = [position, len(part)]
            position = _aligned(position + len(part))
        header["sections"] = layout
        again = json.dumps(header, sort_keys=True).encode()
        if len(again) == len(encoded):
            encoded = again
            break
        encoded = again
    data = bytearray(position)
    data[: len(MAGIC) + 4 + len(encoded)] = MAGIC + struct.pack("<I", len(encoded)) + encoded
    for (name, _code), part in zip((*_SECTIONS, ("strings", "B")), parts, strict=True):
        start = layout[name][0]
        data[start : start + len(part)] = part
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_whole(path, bytes(data), mode=0o644, sync=True)
    return header


def _aligned(offset: int) -> int:
    return (offset + 7) & ~7


class Index:
    """A compiled index, mapped read-only: :meth:`classify` answers in about a microsecond.

    :raises ValueError: for a file that is not an index of this machine's byte order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as file:
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            view = memoryview(self._map)
            if bytes(view[: len(MAGIC)]) != MAGIC:
                raise ValueError(f"{path} is not a compiled feed index")
            (size,) = struct.unpack_from("<I", self._map, len(MAGIC))
            header = json.loads(bytes(view[len(MAGIC) + 4 : len(MAGIC) + 4 + size]))
            if header["byteorder"] != sys.byteorder:
                raise ValueError(f"{path} was compiled on a machine of another byte order")
            sections = header["sections"]
            self._views = [view]

            def section(name: str, wide: bool = False) -> memoryview[int]:
                start, length = sections[name]
                part = view[start : start + length]
                typed = part.cast("Q") if wide else part.cast("I")
                self._views += [part, typed]
                return typed

            self._v4_starts = section("v4_starts")
            self._v4_sets = section("v4_sets")
            self._v6_hi = section("v6_hi", wide=True)
            self._v6_lo = section("v6_lo", wide=True)
            self._v6_sets = section("v6_sets")
            self._set_offsets = section("set_offsets")
            self._set_members = section("set_members")
            self._label_fields = section("label_fields")
            self._string_offsets = section("string_offsets", wide=True)
            start, length = sections["strings"]
            self._strings = view[start : start + length]
            self._views.append(self._strings)
            # what a label takes from its feed: the same for all of the feed's labels
            self._feed_parts = [
                tuple(header["feeds"][name][key] for key in _FEED_KEYS) for name in header["order"]
            ]
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            self.close()
            raise ValueError(f"{path} is not a usable feed index: {exc}") from None
        #: each feed's ``kind``, ``provider``, ``version``, ``fetched_at`` and ``entries``
        self.feeds: dict[str, dict[str, Any]] = header["feeds"]
        self._cache: dict[int, Classification] = {}
        self._labels: dict[int, dict[str, Any]] = {}
        self._decoded: dict[int, str] = {}

    def set_of(self, ip: str) -> int:
        """The label set of a canonical address (0: no feed lists it)."""
        if ":" in ip:
            hi, lo = struct.unpack(">QQ", socket.inet_pton(socket.AF_INET6, ip))
            high = self._v6_hi
            end = bisect.bisect_right(high, hi)
            begin = bisect.bisect_left(high, hi, 0, end)
            return self._v6_sets[bisect.bisect_right(self._v6_lo, lo, begin, end) - 1]
        (number,) = struct.unpack(">I", socket.inet_pton(socket.AF_INET, ip))
        return self._v4_sets[bisect.bisect_right(self._v4_starts, number) - 1]

    def classify(self, ip: str) -> Classification:
        """The ``classification`` section of a canonical address."""
        set_id = self.set_of(ip)
        found = self._cache.get(set_id)
        if found is None:
            found = self._classification(set_id)
            if len(self._cache) >= _CACHED_SETS:
                self._cache.clear()
            self._cache[set_id] = found
        return found

    def _common(self, string_id: int) -> str | None:
        """A string many labels share (a service, a region), decoded once."""
        found = self._decoded.get(string_id)
        if found is None and string_id:
            offsets = self._string_offsets
            found = str(self._strings[offsets[string_id] : offsets[string_id + 1]], "utf-8")
            if len(self._decoded) < _CACHED_SETS:
                self._decoded[string_id] = found
        return found

    def _classification(self, set_id: int) -> Classification:
        labels = self._labels
        members = self._set_members
        found = []
        for n in range(self._set_offsets[set_id], self._set_offsets[set_id + 1]):
            # A label is in every set of the prefixes nested in its own (a cloud region's
            # /12 in thousands): made once, shared like the sets' classifications.
            label = labels.get(members[n])
            if label is None:
                label = self._label(members[n])
                if len(labels) >= _CACHED_SETS:
                    labels.clear()
                labels[members[n]] = label
            found.append(label)
        return Classification(tuple(sorted({label["kind"] for label in found})), tuple(found))

    def _label(self, member: int) -> dict[str, Any]:
        """Label ``member`` of the labels section, as the record shows it."""
        fields, offsets, strings = self._label_fields, self._string_offsets, self._strings
        at = member * 5
        name, kind, provider, version, fetched_at = self._feed_parts[fields[at]]
        # string 0 is "none"; the others are UTF-8 slices of the strings section.
        # Services and regions repeat: kept once decoded; prefixes and ids do not.
        first, second, third, fourth = fields[at + 1 : at + 5]
        return {
            "feed": name,
            "kind": kind,
            "provider": provider,
            "prefix": str(strings[offsets[first] : offsets[first + 1]], "utf-8"),
            "service": self._common(second),
            "region": self._common(third),
            "id": str(strings[offsets[fourth] : offsets[fourth + 1]], "utf-8") if fourth else None,
            "version": version,
            "fetched_at": fetched_at,
        }

    def close(self) -> None:
        """Unmap the file (classifications already handed out stay valid)."""
        for view in reversed(getattr(self, "_views", [])):
            view.release()
        self._views = []
        if hasattr(self, "_map"):
            self._map.close()
