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
high halves. Nothing of one family is ever looked up in the other's arrays. Each
family has a jump table by an address's top 16 bits: where the starts under those
bits begin, so that a search looks among a few starts, not all of them (each step of
``bisect`` over a mapped array makes a Python integer: that is a lookup's cost).

A label set is kept whole, as the JSON text of its ``classification`` section
(:mod:`..classification`), made at compile time: classifying a listed address decodes
its set's text, and nothing is joined, parsed or built per label (the decoding, of a
few hundred bytes at a random place in the file, is most of a listed address's cost).
A set's kinds are known by the number of its *head* (``{"kinds":[...],"labels":[``,
one of a few). Labels shared by several sets (a cloud prefix holding Tor exits) are
written in each: the file is about 250 bytes a listed entry when feeds overlap as
real ones do, several times that when every address is listed by many feeds.

File layout: ``CEFEEDS4``, a 4-byte header length, a JSON header (the sections'
offsets, the feeds' kinds, providers and versions, each head's kinds), then the
sections, each 8-byte aligned: ``v4_starts`` (I), ``v4_sets`` (I), ``v4_jump`` (I),
``v6_hi`` (Q), ``v6_lo`` (Q), ``v6_sets`` (I), ``v6_jump`` (I), ``set_heads`` (I),
``text_offsets`` (Q), ``texts`` (UTF-8, the sets' texts end to end). Arrays are in
the compiling machine's byte order, which the header records: an index is a local
cache, compiled where it is used.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import json
import mmap
import socket
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..classification import SECTION_END, Classification, entry_text, feed_texts, section_head
from ..files import replace_whole
from .formats import Entry

__all__ = ["FeedContent", "Index", "compile_index"]

MAGIC: Final = b"CEFEEDS4"
_UNLISTED: Final = Classification((), ())
_from_text: Final = Classification.from_text
#: An address's top bits that pick its jump table entry (2**16 + 1 entries a family).
_JUMP_BITS: Final = 16
_V4: Final = struct.Struct(">I").unpack
_V6: Final = struct.Struct(">QQ").unpack


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
    """String ids, label-set ids and the interval sweep of one family."""

    def __init__(self) -> None:
        self.strings: list[str] = [""]
        self._string_ids: dict[str, int] = {"": 0}
        #: each feed's kind, by the feed's number
        self.kinds: list[str] = []
        self.sets: list[tuple[int, ...]] = [()]
        self._set_ids: dict[tuple[int, ...], int] = {(): 0}

    def string(self, text: str) -> int:
        found = self._string_ids.get(text)
        if found is None:
            found = self._string_ids[text] = len(self.strings)
            self.strings.append(text)
        return found

    def set_id(self, groups: tuple[int, ...], feeds: Iterable[int]) -> int:
        """The set of ``groups`` (the feeds' label groups, in feed order): its id."""
        if not groups:
            return 0
        members = (self.string(section_head(sorted({self.kinds[feed] for feed in feeds}))), *groups)
        found = self._set_ids.get(members)
        if found is None:
            found = self._set_ids[members] = len(self.sets)
            self.sets.append(members)
        return found

    def sweep(
        self, nodes: dict[tuple[int, int, int], int], top: int
    ) -> tuple[list[int], list[int]]:
        """Interval starts and their label-set ids, for label groups keyed (feed, first, last).

        ``top`` is the family's last address: one past it starts no interval.
        """
        starts_at: dict[int, list[tuple[int, int, int, int]]] = {}
        ends_after: dict[int, set[int]] = {}
        for (feed, first, last), group in nodes.items():
            # outer (larger) prefixes first at the same start: pushed before inner ones
            starts_at.setdefault(first, []).append((-(last - first), feed, last, group))
            if last < top:
                ends_after.setdefault(last + 1, set()).add(feed)
        stacks: dict[int, list[tuple[int, int]]] = {}
        starts: list[int] = [0]
        sets: list[int] = [0]
        for point in sorted(set(starts_at) | set(ends_after)):
            for feed in ends_after.get(point, ()):
                stack = stacks[feed]
                while stack and stack[-1][0] < point:
                    stack.pop()
                if not stack:
                    del stacks[feed]
            for _size, feed, last, group in sorted(starts_at.get(point, ())):
                stacks.setdefault(feed, []).append((last, group))
            feeds = sorted(stacks)
            set_id = self.set_id(tuple(stacks[feed][-1][1] for feed in feeds), feeds)
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
    nodes: tuple[dict[tuple[int, int, int], int], ...] = ({}, {})
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
        builder.kinds.append(feed.kind)
        before, after = feed_texts(_label_keys(described[feed.name]))
        texts: tuple[dict[tuple[int, int, int], list[str]], ...] = ({}, {})
        for entry in feed.entries:
            net = ipaddress.ip_network(entry.prefix)
            first = int(net.network_address)
            key = (number, first, first + net.num_addresses - 1)
            found = texts[net.version == 6].setdefault(key, [])
            label = f"{before},{entry_text(entry)},{after}"
            if label not in found:
                found.append(label)
        # one prefix's labels in a feed: one group, joined once, as every set holding it shows it
        for family, groups in zip(nodes, texts, strict=True):
            family.update((key, builder.string(",".join(group))) for key, group in groups.items())
    v4_starts, v4_sets = builder.sweep(nodes[0], (1 << 32) - 1)
    v6_starts, v6_sets = builder.sweep(nodes[1], (1 << 128) - 1)
    mask = (1 << 64) - 1
    v6_hi = [s >> 64 for s in v6_starts]
    set_texts, set_heads, heads = _set_texts(builder)
    del builder
    arrays = {
        "v4_starts": array("I", v4_starts),
        "v4_sets": array("I", v4_sets),
        "v4_jump": _jump(v4_starts, 32),
        "v6_hi": array("Q", v6_hi),
        "v6_lo": array("Q", (s & mask for s in v6_starts)),
        "v6_sets": array("I", v6_sets),
        "v6_jump": _jump(v6_hi, 64),
        "set_heads": array("I", set_heads),
        "text_offsets": array("Q", itertools.accumulate(map(len, set_texts), initial=0)),
    }
    sizes = {name: len(part) * part.itemsize for name, part in arrays.items()}
    sizes["texts"] = arrays["text_offsets"][-1]
    header: dict[str, Any] = {
        "byteorder": sys.byteorder,
        "feeds": described,
        "heads": heads,
        "order": order,
        "sections": {},
    }
    # The header's length depends on the offsets it holds: lay out until it settles.
    encoded = b""
    while True:
        position = _aligned(len(MAGIC) + 4 + len(encoded))
        layout: dict[str, list[int]] = {}
        for name, size in sizes.items():
            layout[name] = [position, size]
            position = _aligned(position + size)
        header["sections"] = layout
        again = json.dumps(header, sort_keys=True).encode()
        if len(again) == len(encoded):
            encoded = again
            break
        encoded = again

    def chunks() -> Iterator[bytes | memoryview]:
        """The file's bytes in order, written as they come (no copy of the whole)."""
        yield MAGIC + struct.pack("<I", len(encoded)) + encoded
        written = len(MAGIC) + 4 + len(encoded)
        for name, (start, size) in layout.items():
            yield bytes(start - written)  # alignment
            yield from set_texts if name == "texts" else (memoryview(arrays[name]),)
            written = start + size

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_whole(path, chunks(), mode=0o644, sync=True)
    return header


def _set_texts(builder: _Builder) -> tuple[list[bytes], list[int], list[list[str]]]:
    """Each label set's section text, its head's number, and each head's kinds.

    Head 0 is the empty set's (no kinds, no text).
    """
    strings = builder.strings
    numbers: dict[int, int] = {}
    texts: list[bytes] = []
    set_heads: list[int] = []
    for members in builder.sets:
        if not members:
            texts.append(b"")
            set_heads.append(0)
            continue
        head, groups = members[0], members[1:]
        set_heads.append(numbers.setdefault(head, len(numbers) + 1))
        texts.append(
            (strings[head] + ",".join([strings[g] for g in groups]) + SECTION_END).encode()
        )
    kinds = [json.loads(strings[head] + SECTION_END)["kinds"] for head in numbers]
    return texts, set_heads, [[], *kinds]


def _jump(starts: Sequence[int], width: int) -> array[int]:
    """The first start at or above each value ``k`` of the top :data:`_JUMP_BITS`.

    ``starts`` are of ``width`` bits; ``k + 1``'s entry ends ``k``'s starts.
    """
    shift = width - _JUMP_BITS
    return array(
        "I", (bisect.bisect_left(starts, k << shift) for k in range((1 << _JUMP_BITS) + 1))
    )


def _head_kinds(heads: object) -> list[tuple[str, ...]]:
    """The header's ``heads`` (each head's kinds; head 0, the empty set's, has none)."""
    if not (
        isinstance(heads, list)
        and heads[:1] == [[]]
        and all(
            isinstance(kinds, list) and all(isinstance(kind, str) for kind in kinds)
            for kinds in heads
        )
    ):
        raise ValueError("heads that are not lists of kinds")
    return [tuple(kinds) for kinds in heads]


def _aligned(offset: int) -> int:
    return (offset + 7) & ~7


def _label_keys(feed: dict[str, Any]) -> dict[str, Any]:
    """What a feed gives each of its labels, by the labels' keys."""
    return {**feed, "feed": feed["name"]}


class Index:
    """A compiled index, mapped read-only: :meth:`classify` answers in a few microseconds.

    :raises ValueError: for a file that is not an index of this machine's byte order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as file:
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            view = memoryview(self._map)
            self._views = [view]  # released before the map is closed, whatever fails
            if bytes(view[: len(MAGIC)]) != MAGIC:
                raise ValueError(f"{path} is not a compiled feed index")
            (size,) = struct.unpack_from("<I", self._map, len(MAGIC))
            header = json.loads(bytes(view[len(MAGIC) + 4 : len(MAGIC) + 4 + size]))
            if header["byteorder"] != sys.byteorder:
                raise ValueError(f"{path} was compiled on a machine of another byte order")
            sections = header["sections"]

            def section(name: str, wide: bool = False) -> memoryview[int]:
                start, length = sections[name]
                part = view[start : start + length]
                typed = part.cast("Q") if wide else part.cast("I")
                self._views += [part, typed]
                return typed

            self._v4_starts = section("v4_starts")
            self._v4_sets = section("v4_sets")
            self._v4_jump = section("v4_jump")
            self._v6_hi = section("v6_hi", wide=True)
            self._v6_lo = section("v6_lo", wide=True)
            self._v6_sets = section("v6_sets")
            self._v6_jump = section("v6_jump")
            self._set_heads = section("set_heads")
            self._text_offsets = section("text_offsets", wide=True)
            start, length = sections["texts"]
            self._texts = view[start : start + length]
            self._views.append(self._texts)
            #: each head's kinds, by its number
            self._kinds = _head_kinds(header["heads"])
            # Each array's end is what the one pointing into it says (an empty one, where
            # there must be an entry, raises IndexError here), and every number in an
            # array points into the next: a damaged file is refused here, not when an
            # address is classified (a few milliseconds for a real-sized index).
            if not (
                len(self._v4_jump) == len(self._v6_jump) == (1 << _JUMP_BITS) + 1
                and len(self._v4_starts) == len(self._v4_sets) == self._v4_jump[-1]
                and len(self._v6_hi) == len(self._v6_lo) == len(self._v6_sets) == self._v6_jump[-1]
                and len(self._set_heads) + 1 == len(self._text_offsets)
                and self._text_offsets[-1] == len(self._texts)
            ):
                raise ValueError("sections that do not agree in length")
            if max(self._v4_sets) >= len(self._set_heads) or max(self._v6_sets) >= len(
                self._set_heads
            ):
                raise ValueError("an interval of a label set that does not exist")
            if max(self._set_heads) >= len(self._kinds):
                raise ValueError("a label set of a head that does not exist")
        except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
            self.close()
            raise ValueError(f"{path} is not a usable feed index: {exc}") from None
        #: each feed's ``kind``, ``provider``, ``version``, ``fetched_at`` and ``entries``
        self.feeds: dict[str, dict[str, Any]] = header["feeds"]

    def set_of(self, ip: str) -> int:
        """The label set of a canonical address (0: no feed lists it)."""
        # Among the starts under the address's top bits (the one before them, when the
        # address is below all of them, is the entry before the jump's: found too).
        if ":" in ip:
            hi, lo = _V6(socket.inet_pton(socket.AF_INET6, ip))
            high, jump = self._v6_hi, self._v6_jump
            top = hi >> (64 - _JUMP_BITS)
            end = bisect.bisect_right(high, hi, jump[top], jump[top + 1])
            begin = bisect.bisect_left(high, hi, jump[top], end)
            return self._v6_sets[bisect.bisect_right(self._v6_lo, lo, begin, end) - 1]
        (number,) = _V4(socket.inet_pton(socket.AF_INET, ip))
        jump = self._v4_jump
        top = number >> (32 - _JUMP_BITS)
        return self._v4_sets[
            bisect.bisect_right(self._v4_starts, number, jump[top], jump[top + 1]) - 1
        ]

    def classify(self, ip: str) -> Classification:
        """The ``classification`` section of a canonical address."""
        set_id = self.set_of(ip)
        if not set_id:
            return _UNLISTED
        # Made anew each time: decoding a set's text costs a few hundred nanoseconds,
        # what a cache by set would spend on its own lookups, bounding and sharing.
        offsets = self._text_offsets
        text = str(self._texts[offsets[set_id] : offsets[set_id + 1]], "utf-8")
        return _from_text(text, self._kinds[self._set_heads[set_id]])

    def close(self) -> None:
        """Unmap the file (classifications already handed out stay valid)."""
        for view in reversed(getattr(self, "_views", [])):
            view.release()
        self._views = []
        if hasattr(self, "_map"):
            self._map.close()
