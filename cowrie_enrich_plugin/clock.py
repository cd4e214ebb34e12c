"""The clock the package's timing reads: the system's, or a simulated one for long runs.

Freshness (TTLs), background retries and their backoff, the flush interval, how long
a long-lived run remembers an address and the whois circuit breaker's cooldown all
read this clock. Waits on sockets and pipes do not: they are about the network, and
stay real.

A simulation (a day of a long-lived run, in minutes) sets the environment variable
:data:`CLOCK_FILE_VARIABLE` to a file of eight bytes, the simulated time in seconds
since the epoch (a little-endian double), before the process starts; the worker
process inherits it. The process then reads its time from that file, and a test
driver moves it forward (:class:`cowrie_enrich_plugin.testing.SimulatedClock`).
Sleeps on this clock end when the simulated time has passed.
"""

from __future__ import annotations

import datetime as dt
import mmap
import os
import struct
import time
from collections.abc import Callable
from typing import Final

__all__ = ["CLOCK_FILE_VARIABLE", "monotonic", "simulated", "sleep", "utc_now", "wall"]

#: Names the file of a simulated clock (unset: the system clock).
CLOCK_FILE_VARIABLE: Final = "COWRIE_ENRICH_CLOCK_FILE"
_DOUBLE: Final = struct.Struct("<d")
#: How often a sleep on a simulated clock looks at it again (real seconds).
_SIMULATED_POLL: Final = 0.005


def _file_clock(path: str) -> Callable[[], float]:
    with open(path, "rb") as handle:
        view = mmap.mmap(handle.fileno(), _DOUBLE.size, access=mmap.ACCESS_READ)
    unpack = _DOUBLE.unpack_from

    def read() -> float:
        return float(unpack(view)[0])

    return read


_path = os.environ.get(CLOCK_FILE_VARIABLE, "")
#: Seconds since the epoch: the system's, or the simulation's.
wall: Callable[[], float] = _file_clock(_path) if _path else time.time
#: A clock for intervals; under a simulation, the simulated time itself.
monotonic: Callable[[], float] = wall if _path else time.monotonic
#: Whether this process runs on a simulated clock.
simulated: Final = bool(_path)


def utc_now() -> dt.datetime:
    """The current time, timezone-aware, in UTC, to the second."""
    return dt.datetime.fromtimestamp(int(wall()), dt.timezone.utc)


def sleep(seconds: float) -> None:
    """Sleep ``seconds`` on this clock (under a simulation: until it has moved that far)."""
    if not simulated:
        time.sleep(seconds)
        return
    until = monotonic() + seconds
    while monotonic() < until:
        time.sleep(_SIMULATED_POLL)
