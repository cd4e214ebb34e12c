"""Pipes to another process, as wide as the system lets them be.

A pipe holds 16 pages by default (64 KiB with 4 KiB pages; two pages for a user past
its share of pipe memory). Linux lets a process give one up to
``/proc/sys/fs/pipe-max-size`` (1 MiB unless changed), counted against the user's
share (``/proc/sys/fs/pipe-user-pages-soft``). A writer that finds room
goes on instead of sleeping until the reader has read, and the reader's read then
wakes nobody.
"""

from __future__ import annotations

import contextlib
from typing import Final

__all__ = ["PIPE_BYTES", "widen"]

#: The room asked for: Linux's default most for a user's pipe.
PIPE_BYTES: Final = 1 << 20


def widen(pipe: int, size: int = PIPE_BYTES) -> bool:
    """Give ``pipe`` (either end) ``size`` bytes of room; whether the system did.

    Where it is refused (no such setting off Linux, a size above the system's most,
    or a user past its share of pipe memory), the pipe stays as it is and works as
    before.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return False
    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setting is None:
        return False
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe, setting, size)
        return True
    return False
