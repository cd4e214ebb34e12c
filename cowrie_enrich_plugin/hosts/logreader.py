"""Reading Cowrie's JSON logs: files, ``.gz``, ``.bz2``, directories and stdin, streamed.

Events come out in chunks of parsed objects, each with the file and line numbers
they came from, so that a refused event can be named. A line that is not JSON, not
an object, not UTF-8 or too long is counted and named; a file that vanishes, cannot
be read or ends early (a truncated ``.gz``) is named too; the rest of the input is
still read. Memory stays bounded by the chunk size and the longest allowed line.
"""

from __future__ import annotations

import logging
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from ..fastjson import json_loads

__all__ = [
    "CHUNK_EVENTS",
    "Chunk",
    "LogProblem",
    "LogReader",
    "expand_paths",
    "parse_event",
]

_DATED: Final = re.compile(r"^cowrie\.json\.(\d{4}-\d{2}-\d{2})(?:\.(?:gz|bz2))?$")
_NUMBERED: Final = re.compile(r"^cowrie\.json\.(\d+)(?:\.(?:gz|bz2))?$")
_MAX_LINE: Final = 4 * 1024 * 1024
STDIN: Final = "-"
#: Events handed to the plugins at a time. Small enough that a chunk (a few hundred
#: bytes to a few KiB an event) is still in the core's cache when the plugins look
#: at it again (measured: docs/performance.rst).
CHUNK_EVENTS: Final = 250

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LogProblem:
    """One bad line (``line`` > 0) or one bad file (``line`` == 0), with what is wrong."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


@dataclass(slots=True)
class Chunk:
    """Parsed events from one file, with the line number of each."""

    path: str
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def _log_order(path: Path) -> tuple[int, str, int]:
    """Oldest first: dated files by date, numbered ones (highest oldest), the live file last."""
    dated = _DATED.match(path.name)
    if dated:
        return (0, dated.group(1), 0)
    numbered = _NUMBERED.match(path.name)
    if numbered:
        return (1, "", -int(numbered.group(1)))
    return (2, path.name, 0)


def _not_a_log(path: Path) -> str | None:
    """Why a ``cowrie.json*`` entry of a folder is not read (``None``: it is a log file)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:  # a dangling symlink, a symlink loop, no permission
        return f"cannot be opened ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory, not a log file"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a log file"
    return "not a regular file"


def expand_paths(paths: Iterable[str], skipped: list[str] | None = None) -> list[str]:
    """Expand directories into their ``cowrie.json*`` files, oldest first.

    What a folder holds and is not read goes to ``skipped`` as "path: why", and is
    logged: ``cowrie.json*`` entries that are not regular files as warnings, other
    names at info level; a folder that gave no log at all is a warning.
    """
    expanded: list[str] = []
    for raw in paths:
        if raw == STDIN:
            expanded.append(raw)
            continue
        path = Path(raw)
        if not path.is_dir():
            expanded.append(raw)
            continue
        files: list[Path] = []
        others: list[str] = []
        for entry in sorted(path.iterdir()):
            if not entry.name.startswith("cowrie.json"):
                others.append(entry.name)
                _skip(skipped, entry, "not named cowrie.json*", logging.INFO)
                continue
            why = _not_a_log(entry)
            if why is None:
                files.append(entry)
            else:
                _skip(skipped, entry, why, logging.WARNING)
        if not files:
            held = f"; it holds {', '.join(others[:5])}" if others else "; it is empty"
            logger.warning("%s holds no Cowrie log (cowrie.json*)%s", path, held[:200])
            if skipped is not None:
                skipped.append(f"{path}: no cowrie.json* log in this folder")
        expanded.extend(str(p) for p in sorted(files, key=_log_order))
    return expanded


def _skip(skipped: list[str] | None, path: Path, why: str, level: int) -> None:
    logger.log(level, "skipped %s: %s", path, why)
    if skipped is not None and level >= logging.WARNING:
        skipped.append(f"{path}: {why}")


def _open(path: str) -> IO[bytes]:
    if path == STDIN:
        return sys.stdin.buffer
    # The decompressors load when a file needs them: the enrich filter reads none.
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.endswith(".bz2"):
        import bz2

        return bz2.open(path, "rb")
    return open(path, "rb")


class LogReader:
    """Streams Cowrie events from paths, collecting problems as it goes.

    :param paths: files, directories and ``-`` (stdin).
    :param chunk_size: events per chunk.
    :param max_line: longest line accepted, in bytes.
    """

    def __init__(
        self,
        paths: Iterable[str],
        *,
        chunk_size: int = CHUNK_EVENTS,
        max_line: int = _MAX_LINE,
        loads: Callable[[bytes], Any] = json_loads,
    ) -> None:
        #: what folders held that was not read, as "path: why"
        self.skipped_paths: list[str] = []
        self.paths = expand_paths(paths, self.skipped_paths)
        self.chunk_size = chunk_size
        self.max_line = max_line
        self.loads = loads
        self.problems: list[LogProblem] = []
        self.bad_lines = 0
        self.bad_files = 0
        self.lines = 0

    def problem(self, path: str, line: int, reason: str) -> None:
        """Record one problem (line 0 for the whole file)."""
        self.problems.append(LogProblem(path, line, reason))
        if line:
            self.bad_lines += 1
        else:
            self.bad_files += 1

    def __iter__(self) -> Iterator[Chunk]:
        for path in self.paths:
            yield from self._read_file(path)

    def _read_file(self, path: str) -> Iterator[Chunk]:
        label = "<stdin>" if path == STDIN else path
        lineno = 0
        try:
            handle = _open(path)
        except FileNotFoundError:
            self.problem(label, 0, "file not found (moved or deleted?)")
            return
        except OSError as exc:
            self.problem(label, 0, f"cannot open: {exc.strerror or exc}")
            return
        chunk = Chunk(label)
        loads, limit = self.loads, self.max_line
        try:
            readline = handle.readline
            while True:
                raw = readline(limit + 1)
                if not raw:
                    break
                lineno += 1
                if len(raw) > limit and not raw.endswith(b"\n"):
                    self._skip_rest_of_line(handle)
                    self.problem(label, lineno, f"line longer than {limit} bytes; skipped")
                    continue
                event = parse_event(raw, loads)
                if isinstance(event, str):
                    self.problem(label, lineno, event)
                    continue
                chunk.events.append(event)
                chunk.lines.append(lineno)
                if len(chunk.events) >= self.chunk_size:
                    yield chunk
                    chunk = Chunk(label)
        except EOFError:
            self.problem(label, 0, f"ends early after line {lineno} (truncated compressed file)")
        except OSError as exc:
            self.problem(label, 0, f"read failed after line {lineno}: {exc}")
        finally:
            self.lines += lineno
            if handle is not sys.stdin.buffer:
                handle.close()
        if chunk.events:
            yield chunk

    def _skip_rest_of_line(self, handle: IO[bytes]) -> None:
        while True:
            piece = handle.readline(self.max_line)
            if not piece or piece.endswith(b"\n"):
                return


def parse_event(raw: bytes, loads: Callable[[bytes], Any] = json_loads) -> dict[str, Any] | str:
    """The event one line holds, or why it holds none (a reason to report)."""
    try:
        event = loads(raw)
    except RecursionError:  # the standard library's parser, on nesting orjson refuses
        return "not JSON (nested too deeply)"
    except ValueError as exc:  # JSON errors and invalid UTF-8 alike
        if not raw.strip():
            return "empty line"
        if isinstance(exc, UnicodeDecodeError):
            return "not UTF-8"
        return f"not JSON ({_short(exc)})"
    if type(event) is not dict:
        return f"a JSON {type(event).__name__}, not an object"
    return event


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:80]
