"""Consecutive slices of a sequence: whois batches, database chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

__all__ = ["slices"]

_T = TypeVar("_T")


def slices(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Split ``items`` into consecutive slices of at most ``size`` (``size`` >= 1)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
