"""Offline feeds: public lists of who runs a network, downloaded now and then, matched inline.

What a third-party feed needs is here: :class:`Feed` (what it is, where it comes
from, how it is read), :class:`Entry` and :class:`Parsed` (what its reader returns),
:class:`FeedFormatError` (what its reader raises), :func:`network` (a prefix checked
and made canonical) and the built-in readers of the common formats.
"""

from __future__ import annotations

from .catalog import Feed
from .formats import (
    Entry,
    FeedFormatError,
    Parsed,
    network,
    read_geofeed,
    read_netset,
    read_prefix_lists,
)

__all__ = [
    "Entry",
    "Feed",
    "FeedFormatError",
    "Parsed",
    "network",
    "read_geofeed",
    "read_netset",
    "read_prefix_lists",
]
