"""Following a growing ``cowrie.json`` across rotation, as ``tail -F`` does, line by line.

Cowrie rotates its log daily by renaming ``cowrie.json`` and creating a new one. The
follower keeps the file it has open until the path names another file; then it
reads what is left of the old one to its end, and only then opens the new one from
its start: no line is lost or read twice. A file truncated in place (logrotate's
``copytruncate``) is read again from its start, also when the writer has already
written past the old end by the time the follower looks: the last bytes it read are
compared with what the file now holds there. A line is handed on only once its
newline has been written; a last line without one is handed on when its file is
rotated away. A path that cannot be opened for now (a folder in its place, no
permission) is said once and tried again; the follower does not stop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Final

__all__ = ["FollowedFile", "Line"]

logger = logging.getLogger(__name__)

_READ_BYTES: Final = 1 << 20
#: How many of the last bytes read are kept to recognise the file when it is looked at again.
_TAIL_BYTES: Final = 256


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line of the followed file, with its number in the file it came from."""

    path: str
    number: int
    text: bytes


class FollowedFile:
    """The lines written to ``path`` from now on (and those already there)."""

    def __init__(self, path: str, max_line: int = 4 * 1024 * 1024) -> None:
        self.path = path
        self.max_line = max_line
        self.rotations = 0
        self._handle: IO[bytes] | None = None
        self._inode: tuple[int, int] | None = None
        self._partial = b""
        self._number = 0
        self._label = path
        #: the last bytes read, and where they end: still there unless truncated
        self._tail = b""
        #: why the path could not be opened last time (said once)
        self._refused: str | None = None

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def read(self) -> Iterator[Line]:
        """Every complete line written since the last call (none when nothing new)."""
        if self._handle is None and not self._open():
            return
        if self._truncated():
            self._restart()
        yield from self._drain()
        current = self._path_identity()
        if current is not None and current != self._inode:
            # Rotated: what the writer put in the old file before the rename is read
            # first, the last unterminated line too, then the new file from its start.
            yield from self._drain()
            if self._partial:
                yield self._line(self._partial)
                self._partial = b""
            self.close()
            self.rotations += 1
            self._label = f"{self.path} (before rotation {self.rotations})"
            if self._open():
                yield from self._drain()
        elif current is not None and self._truncated():
            self._restart()

    def _truncated(self) -> bool:
        """Whether the open file no longer holds, before the read position, what was read."""
        if self._handle is None or not self._tail:
            return False
        handle = self._handle
        end = handle.tell()
        try:
            if os.fstat(handle.fileno()).st_size < end:
                return True
            return os.pread(handle.fileno(), len(self._tail), end - len(self._tail)) != self._tail
        except OSError:
            return False

    def _restart(self) -> None:
        """Read the file again from its start (it was truncated in place)."""
        assert self._handle is not None
        self._handle.seek(0)
        self._partial = b""
        self._tail = b""
        self._number = 0

    def _open(self) -> bool:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open while followed
        except FileNotFoundError:
            return False
        except OSError as exc:  # a folder in its place, no permission: wait and see
            why = exc.strerror or str(exc)
            if why != self._refused:
                logger.warning("cannot read %s (%s); trying again", self.path, why)
                self._refused = why
            return False
        self._refused = None
        stat = os.fstat(handle.fileno())
        self._handle = handle
        self._inode = (stat.st_dev, stat.st_ino)
        self._number = 0
        self._tail = b""
        self._label = self.path
        return True

    def _path_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:  # between the rename and the new file: keep reading the old one
            return None
        return (stat.st_dev, stat.st_ino)

    def _drain(self) -> Iterator[Line]:
        assert self._handle is not None
        while True:
            data = self._handle.read(_READ_BYTES)
            if not data:
                return
            self._tail = (self._tail + data)[-_TAIL_BYTES:]
            data = self._partial + data
            lines = data.split(b"\n")
            self._partial = lines.pop()
            if len(self._partial) > self.max_line:  # a runaway line: hand it on as it is
                lines.append(self._partial)
                self._partial = b""
            for text in lines:
                yield self._line(text)

    def _line(self, text: bytes) -> Line:
        self._number += 1
        return Line(self._label, self._number, text)
