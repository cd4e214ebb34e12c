"""A simulated clock for long-run tests: a day of a long-lived host, in minutes.

The processes to simulate are started with :meth:`SimulatedClock.environment` (the
worker inherits it) and read their time from the clock's file; the test moves it
forward (see :mod:`cowrie_enrich_plugin.clock`).
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from types import TracebackType

from ..clock import CLOCK_FILE_VARIABLE

__all__ = ["SimulatedClock"]

_DOUBLE = struct.Struct("<d")


class SimulatedClock:
    """Simulated time in a file, set and advanced by the test. A context manager.

    :param path: the clock's file (created or overwritten).
    :param start: the simulated time to start at, in seconds since the epoch.
    """

    def __init__(self, path: str | os.PathLike[str], start: float) -> None:
        self.path = Path(path)
        self.path.write_bytes(_DOUBLE.pack(start))
        with open(self.path, "r+b") as handle:
            self._view = mmap.mmap(handle.fileno(), _DOUBLE.size)

    def environment(self) -> dict[str, str]:
        """``os.environ`` with the variable that puts a process on this clock."""
        return {**os.environ, CLOCK_FILE_VARIABLE: str(self.path)}

    def now(self) -> float:
        """The simulated time, in seconds since the epoch."""
        return float(_DOUBLE.unpack_from(self._view)[0])

    def set(self, when: float) -> None:
        """Move the clock to ``when`` (seconds since the epoch); it never goes back."""
        # One 8-byte copy: ``pack_into`` zeroes its target before it writes the value,
        # and a process reading the clock in between would read 0.0 (the epoch).
        self._view[: _DOUBLE.size] = _DOUBLE.pack(max(when, self.now()))

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.set(self.now() + seconds)

    def close(self) -> None:
        """Stop writing the clock (the file stays: processes may still read it)."""
        self._view.close()

    def __enter__(self) -> SimulatedClock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
