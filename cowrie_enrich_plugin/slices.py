"""Consecutive slices of a sequence: whois batches, database chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

__all__ = ["balanced_slices", "before_last_round", "even_slices", "slices"]

_T = TypeVar("_T")


def slices(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Split ``items`` into consecutive slices of at most ``size`` (``size`` >= 1)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def even_slices(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """As few slices as :func:`slices` makes, their sizes differing by one at most.

    583 items in slices of at most 500 are 292 and 291, not 500 and 83.
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


def balanced_slices(items: Sequence[_T], size: int, lanes: int) -> Iterator[Sequence[_T]]:
    """As many slices as :func:`slices` makes: full ones, then a last round of even ones.

    The slices go out ``lanes`` at a time (whois connections); the last round (the one
    to ``lanes`` slices after the last whole round) is of even sizes, so that it ends
    together: 583 items on two lanes are 292 and 291, not 500 and 83, while 1,083 stay
    500, 500 and 83 (three even slices of 361 would take two rounds of 361).
    """
    head = before_last_round(-(-len(items) // size), lanes) * size
    yield from slices(items[:head], size)
    yield from even_slices(items[head:], size)


def before_last_round(count: int, lanes: int) -> int:
    """Of ``count`` slices going out ``lanes`` at a time, how many come before the last round."""
    return count - ((count - 1) % max(1, lanes) + 1) if count else 0
