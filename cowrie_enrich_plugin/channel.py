"""The messages between the host side and the engine, and their one framing.

To the engine: :class:`Init` (first, process mode only), then any number of
:class:`NewAddresses`, :class:`SkippedAddresses` and :class:`Flush`, and one
:class:`End`. From the engine: :class:`Ready`, :class:`Records` (with the run's
counters, and alone every half second), :class:`Failed` (it could not start) and
:class:`Done` (everything persisted, leases given up). :class:`Exited` is made by
the host's end of a process transport when the worker is gone.

In process mode each message is pickled behind a 4-byte big-endian length, over
the worker's stdin and stdout. Adding a message type touches this module and the
one handler of its receiving side (``match`` ending in :func:`assert_never`, so mypy
names a receiver that misses it). The worker's exit statuses and the errors that
cross as :class:`Failed` are defined here too.
"""

from __future__ import annotations

import pickle
import signal
import struct
from typing import IO, Any, Final, NamedTuple, NoReturn

from .counters import RunCounters
from .errors import ConfigError, GeoDatabaseError, StoreError, WorkerError
from .settings import EnrichConfig

__all__ = [
    "EXIT_HOST_GONE",
    "EXIT_TERMINATED",
    "STOPPED_EXITS",
    "Done",
    "End",
    "Exited",
    "Failed",
    "Flush",
    "FrameDecoder",
    "FromEngine",
    "Init",
    "NewAddresses",
    "Ready",
    "Records",
    "SkippedAddresses",
    "ToEngine",
    "assert_never",
    "encode",
    "read_message",
    "write_message",
]


class Init(NamedTuple):
    """The settings and the host's log level, sent first to a worker process."""

    config: EnrichConfig
    log_level: int


class NewAddresses(NamedTuple):
    """Canonical, globally routable addresses first seen by the host in this run."""

    ips: list[str]


class SkippedAddresses(NamedTuple):
    """Canonical addresses that are not globally routable: recorded, never sent."""

    ips: list[str]


class Flush(NamedTuple):
    """Send partly filled batches now (the host committed)."""


class End(NamedTuple):
    """No more addresses: finish, persist, give up the leases, say :class:`Done`."""


class Ready(NamedTuple):
    """The engine opened its store and sources."""


class Records(NamedTuple):
    """Records ready to deliver (exported shape), and the run's counters as they stand.

    A feed-listed address's ``classification`` is still a :class:`.Classification`
    (it crosses as its text): the receiver makes it the section before delivering
    (:func:`~.classification.export_classifications`).

    ``repeats`` names those of ``records`` that a long-lived run has delivered as they
    are: the host notes when they expire, and delivers them only if it must.
    ``stale``: the engine served them knowing they had expired (their refresh waits
    out its backoff).
    """

    records: list[dict[str, Any]]
    counters: RunCounters | None
    repeats: tuple[str, ...] = ()
    stale: bool = False


class Failed(NamedTuple):
    """The engine could not start: the error's kind (its class name) and message."""

    kind: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> Failed:
        """The message for ``exc``: an operator's error by its kind, anything else a bug."""
        for kind in _OPERATOR_ERRORS:
            if isinstance(exc, kind):
                return cls(kind.__name__, str(exc))
        return cls(WorkerError.__name__, f"{type(exc).__name__}: {exc}")

    def error(self) -> Exception:
        """The exception to raise on the host's side (:class:`WorkerError` for a bug)."""
        kind = {e.__name__: e for e in _OPERATOR_ERRORS}.get(self.kind, WorkerError)
        return kind(self.message)


class Done(NamedTuple):
    """Everything is persisted and the leases given up; the final counters."""

    counters: RunCounters


class Exited(NamedTuple):
    """The worker process ended (made by the host's end of the pipes, never sent)."""

    code: int


ToEngine = Init | NewAddresses | SkippedAddresses | Flush | End
FromEngine = Ready | Records | Failed | Done | Exited

#: The errors an operator can act on: they cross by kind and are raised as themselves.
_OPERATOR_ERRORS: Final = (ConfigError, GeoDatabaseError, StoreError)
#: The worker's exit status when the host went away (or it was told to stop after that).
EXIT_HOST_GONE: Final = 3
#: The worker's exit status when it was told to terminate (SIGTERM).
EXIT_TERMINATED: Final = 128 + signal.SIGTERM
#: The exit statuses of a worker that went because it was told to.
STOPPED_EXITS: Final = frozenset({-signal.SIGTERM, EXIT_TERMINATED, EXIT_HOST_GONE})


def assert_never(message: NoReturn) -> NoReturn:
    """The last case of a receiver's ``match``: mypy flags one that misses a message."""
    raise AssertionError(f"no handler for {message!r}")


_HEADER: Final = struct.Struct(">I")


def encode(message: ToEngine | FromEngine) -> bytes:
    """One framed message."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def write_message(stream: IO[bytes], message: ToEngine | FromEngine) -> None:
    """Write one framed message and flush."""
    stream.write(encode(message))
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """Read one framed message from a blocking stream; ``None`` at end of file."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


class FrameDecoder:
    """Whole messages out of bytes that arrive in pieces (a non-blocking pipe)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return every message now complete.

        :raises pickle.UnpicklingError: (or ``EOFError``, ``ValueError``) for a frame
            that does not hold a message: the stream cannot be trusted any more.
        """
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            start = offset + _HEADER.size
            if len(buffer) - start < size:
                break
            messages.append(pickle.loads(buffer[start : start + size]))
            offset = start + size
        del buffer[:offset]
        return messages
