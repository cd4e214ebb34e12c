"""Where the flusher runs: a worker process beside the host (default), or a host thread.

The host's thread pays only for collecting addresses; the database, the whois
connections, MaxMind and the merge run in the worker. A process has its own
interpreter lock, so that work does not slow the host's ingest, and the heavy
imports (SQLAlchemy, geoip2) happen there, not in the host.

Messages are pickled tuples with a 4-byte length, over the child's stdin/stdout
(the child is our own ``python -m cowrie_enrich_plugin.worker``, so no host module
is re-imported, unlike ``multiprocessing``'s spawn). To the worker: ``("init",
config, log_level)``, then ``("ips", [...])``, ``("skip", [...])``, ``("flush",)``,
``("end",)``. From it: ``("ready",)``, ``("records", [dicts], counters)``,
``("error", kind, message)``, ``("done", counters)``. When the host dies, the
worker reads end-of-file and exits at once: its leases expire, or are taken over by
the next run on the same host.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any, Final

from .config import EnrichConfig
from .errors import ConfigError, GeoDatabaseError, StoreError, WorkerError, configure_logging

__all__ = ["ProcessTransport", "ThreadTransport", "Transport", "build_enricher", "main"]

logger = logging.getLogger(__name__)

_HEADER: Final = struct.Struct(">I")
_INBOX_MESSAGES: Final = 64  # messages (each up to a chunk's new addresses) before the host waits
_STATS_EVERY: Final = 0.5
_ERRORS: Final[dict[str, type[Exception]]] = {
    "ConfigError": ConfigError,
    "GeoDatabaseError": GeoDatabaseError,
    "StoreError": StoreError,
}

Message = tuple[Any, ...]


def write_message(stream: IO[bytes], message: Message) -> None:
    """Write one framed message and flush."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def coalesce(messages: list[Message | None]) -> list[Message | None]:
    """Merge runs of ``("ips", ...)`` (and of ``("skip", ...)``) messages into one each.

    While the worker is busy, the host's chunks queue up; each of their handful of
    new addresses need not cost a message of its own. Order is kept.
    """
    merged: list[Message | None] = []
    for message in messages:
        previous = merged[-1] if merged else None
        if (
            message is not None
            and previous is not None
            and message[0] in ("ips", "skip")
            and previous[0] == message[0]
        ):
            merged[-1] = (message[0], [*previous[1], *message[1]])
        else:
            merged.append(message)
    return merged


def read_message(stream: IO[bytes]) -> Message | None:
    """Read one framed message; ``None`` at end of file."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    message: Message = pickle.loads(data)
    return message


def build_enricher(config: EnrichConfig) -> Any:
    """Open the store, the GeoIP files and the whois client (the heavy imports live here)."""
    from .enricher import Enricher

    return Enricher.open(config)


class _Throttle:
    """Counters attached to outgoing records at most every half second."""

    def __init__(self) -> None:
        self.next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now >= self.next:
            self.next = now + _STATS_EVERY
            return True
        return False


# -- the host's side ---------------------------------------------------------------------


class Transport:
    """The host's end of a flusher: send messages, collect what comes back."""

    def __init__(self) -> None:
        self.incoming: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def send(self, message: Message) -> None:
        """Send one message; blocks while the worker is too far behind (backpressure)."""
        raise NotImplementedError

    def poll(self) -> list[Message]:
        """Every message that has arrived, without waiting."""
        messages: list[Message] = []
        while True:
            try:
                messages.append(self.incoming.get_nowait())
            except queue.Empty:
                return messages

    def wait(self, timeout: float) -> list[Message]:
        """At least one message, or none after ``timeout`` seconds."""
        try:
            first = self.incoming.get(timeout=timeout)
        except queue.Empty:
            return []
        return [first, *self.poll()]

    def close(self, timeout: float = 10.0) -> None:
        """Release the worker."""


class ThreadTransport(Transport):
    """The flusher in a thread of the host's process; opening errors are raised here."""

    def __init__(self, config: EnrichConfig) -> None:
        super().__init__()
        from .flusher import Flusher

        self.enricher = build_enricher(config)
        self.inbox: queue.Queue[Message] = queue.Queue(maxsize=_INBOX_MESSAGES)
        throttle = _Throttle()

        def emit(records: list[dict[str, Any]]) -> None:
            self.incoming.put(("records", records, flusher.counters() if throttle.due() else None))

        flusher = Flusher(self.enricher, emit)

        def run() -> None:
            try:
                flusher.run(self.inbox)
            finally:
                # Everything is persisted and the leases given up: the host may go on
                # while the store and the GeoIP files are closed.
                self.enricher.release_leases()
                self.incoming.put(("done", flusher.counters()))
                self.enricher.close()

        self.thread = threading.Thread(target=run, name="cowrie-enrich-flusher", daemon=True)
        self.thread.start()
        self.incoming.put(("ready",))

    def send(self, message: Message) -> None:
        """Queue a message for the flusher thread."""
        self.inbox.put(message)

    def close(self, timeout: float = 10.0) -> None:
        """Wait for the flusher thread."""
        self.thread.join(timeout)


class ProcessTransport(Transport):
    """The flusher in a worker process (``python -m cowrie_enrich_plugin.worker``)."""

    #: The worker's command after the interpreter. The benchmarks swap in a stand-in
    #: that speaks the same messages, to measure the host's side alone.
    command: tuple[str, ...] = ("-m", "cowrie_enrich_plugin.worker")

    def __init__(self, config: EnrichConfig) -> None:
        super().__init__()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *self.command],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as exc:
            raise WorkerError(
                f"cannot start the enrichment worker with {sys.executable!r} ({exc}); "
                'set worker = "thread" in [plugins.enrich] to run it in this process'
            ) from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        level = logging.getLogger("cowrie_enrich_plugin").getEffectiveLevel()
        self.outbox: queue.Queue[Message | None] = queue.Queue(maxsize=_INBOX_MESSAGES)
        self.outbox.put(("init", config, level))
        self.writer = threading.Thread(target=self._write, name="cowrie-enrich-send", daemon=True)
        self.reader = threading.Thread(target=self._read, name="cowrie-enrich-receive", daemon=True)
        self.writer.start()
        self.reader.start()

    def _write(self) -> None:
        assert self.proc.stdin is not None
        try:
            while True:
                waiting = [self.outbox.get()]
                with contextlib.suppress(queue.Empty):
                    while len(waiting) < _INBOX_MESSAGES:
                        waiting.append(self.outbox.get_nowait())
                for message in coalesce(waiting):
                    if message is None:
                        return
                    write_message(self.proc.stdin, message)
        except (BrokenPipeError, OSError, ValueError):
            pass  # the worker is gone; the reader reports it
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                message = read_message(self.proc.stdout)
                if message is None:
                    break
                self.incoming.put(message)
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            logger.error("lost the enrichment worker: %s", exc)
        self.incoming.put(("exit", self.proc.wait()))

    def send(self, message: Message) -> None:
        """Queue a message for the worker (blocks while the queue is full).

        If the worker is gone the message is dropped rather than waiting forever;
        the reader reports the exit, and the host's next call raises it.
        """
        while True:
            try:
                self.outbox.put(message, timeout=0.5)
                return
            except queue.Full:
                if self.proc.poll() is not None:
                    return

    def close(self, timeout: float = 10.0) -> None:
        """Stop feeding the worker; it exits on its own (the reader thread reaps it).

        By the time the host closes, the worker has said ``done``: everything is
        persisted and its leases are released, so its exit need not be awaited.
        """
        with contextlib.suppress(queue.Full):
            self.outbox.put(None, timeout=timeout)


def raise_worker_error(kind: str, message: str) -> None:
    """Re-raise an error the worker reported, as the same kind of exception."""
    raise _ERRORS.get(kind, WorkerError)(message)


# -- the worker's side ------------------------------------------------------------------------


def main() -> int:
    """Run one flusher over messages on stdin; write records and counters to stdout."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the message stream
    init = read_message(stdin)
    if init is None or init[0] != "init":
        return 2
    _, config, level = init
    configure_logging(level)
    lock = threading.Lock()

    def send(message: Message) -> None:
        with lock:
            write_message(stdout, message)

    try:
        enricher = build_enricher(config)
    except (ConfigError, GeoDatabaseError, StoreError) as exc:
        send(("error", type(exc).__name__, str(exc)))
        return 2
    except Exception as exc:
        send(("error", "WorkerError", f"{type(exc).__name__}: {exc}"))
        return 1
    from .flusher import Flusher

    # What is loaded now (SQLAlchemy, the compiled statements) lives as long as the
    # process: out of the collector's sight, full collections stop rescanning it.
    gc.freeze()
    send(("ready",))

    inbox: queue.Queue[Message] = queue.Queue(maxsize=_INBOX_MESSAGES)
    throttle = _Throttle()

    def emit(records: list[dict[str, Any]]) -> None:
        send(("records", records, flusher.counters() if throttle.due() else None))

    flusher = Flusher(enricher, emit)

    def receive() -> None:
        while True:
            message = read_message(stdin)
            if message is None:  # the host is gone without saying "end"
                os._exit(3)
            inbox.put(message)
            if message[0] == "end":
                return

    threading.Thread(target=receive, name="receive", daemon=True).start()

    def idle() -> None:
        if throttle.due():
            send(("records", [], flusher.counters()))

    try:
        flusher.run(inbox, on_idle=idle)
    finally:
        # Everything is persisted and the leases given up: the host may go on while
        # the store and the GeoIP files are closed.
        enricher.release_leases()
        send(("done", flusher.counters()))
        enricher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
