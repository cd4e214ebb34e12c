"""Following a growing ``cowrie.json`` across rotation, as ``tail -F`` does, line by line.

Cowrie rotates its log daily by renaming ``cowrie.json`` and creating a new one. The
follower keeps the file it has open until the path names another file; then it
reads what is left of the old one to its end, and only then opens the new one from
its start: no line is lost or read twice. A file that shrinks (truncated in place)
is read again from its start. A line is handed on only once its newline has been
written; a last line without one is handed on when its file is rotated away.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Final

__all__ = ["FollowedFile", "Line"]

_READ_BYTES: Final = 1 << 20


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

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def read(self) -> Iterator[Line]:
        """Every complete line written since the last call (none when nothing new)."""
        if self._handle is None and not self._open():
            return
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
        elif current is not None and self._handle is not None:
            size = os.stat(self.path).st_size
            if size < self._handle.tell():  # truncated in place
                self._handle.seek(0)
                self._partial = b""
                self._number = 0

    def _open(self) -> bool:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open while followed
        except FileNotFoundError:
            return False
        stat = os.fstat(handle.fileno())
        self._handle = handle
        self._inode = (stat.st_dev, stat.st_ino)
        self._number = 0
        self._label = self.path
        return True

    def _path_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None  # between the rename and the new file: keep reading the old one
        return (stat.st_dev, stat.st_ino)

    def _drain(self) -> Iterator[Line]:
        assert self._handle is not None
        while True:
            data = self._handle.read(_READ_BYTES)
            if not data:
                return
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
