"""Consecutive slices of a sequence: whois batches, database chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

__all__ = ["even_slices", "slices"]

_T = TypeVar("_T")


def slices(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Split ``items`` into consecutive slices of at most ``size`` (``size`` >= 1)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def even_slices(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """As few slices as :func:`slices` makes, their sizes differing by one at most.

    583 items in slices of at most 500 are 292 and 291, not 500 and 83: sent on two
    connections at once, the last of them is answered when the first is.
    """
    count = -(-len(items) // size)
    if not count:
        return
    small, larger = divmod(len(items), count)
    start = 0
    for number in range(count):
        end = start + small + (number < larger)
        yield items[start:end]
        start = end
