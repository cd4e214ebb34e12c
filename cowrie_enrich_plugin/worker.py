"""Where the flusher runs: a worker process beside the host (default), or a host thread.

The host's thread pays only for collecting addresses; the database, the whois
connections, MaxMind and the merge run in the worker. A process has its own
interpreter lock, so that work does not slow the host's ingest, and the heavy
imports (SQLAlchemy, geoip2) happen there, not in the host.

Messages are pickled tuples with a 4-byte length, over the child's stdin/stdout
(the child is our own ``python -m cowrie_enrich_plugin.worker``, so no host module
is re-imported, unlike ``multiprocessing``'s spawn). The host's end of the pipes is
non-blocking and served from the host's own calls: while the host ingests, the
plugin runs no thread in its process. To the worker: ``("init",
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
import select
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
_OUTBOX_BYTES: Final = 1 << 20  # framed messages (about 60,000 addresses) before the host waits
_READ_BYTES: Final = 1 << 20
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
    """The flusher in a worker process (``python -m cowrie_enrich_plugin.worker``).

    While the host ingests, no thread runs in its process for the plugin: the pipes
    are non-blocking and served from the host's own calls (``send``, ``poll``,
    ``wait``); only after the end does a daemon thread reap the worker. A helper thread
    would have to take the interpreter lock from the host's thread each time a
    message came or went, and on a small virtual machine each of those hand-overs
    costs the host's thread more than the message itself.
    """

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
        self._to_worker = self.proc.stdin.fileno()
        self._from_worker = self.proc.stdout.fileno()
        os.set_blocking(self._to_worker, False)
        os.set_blocking(self._from_worker, False)
        self._out = bytearray()  # framed messages the pipe has not taken yet
        self._in = bytearray()  # bytes read and not yet a whole message
        self._received: list[Message] = []  # read while waiting to send
        self._broken = False  # the worker stopped reading
        self._eof = False
        self._exit_reported = False
        level = logging.getLogger("cowrie_enrich_plugin").getEffectiveLevel()
        self.send(("init", config, level))

    def send(self, message: Message) -> None:
        """Queue a message for the worker; wait while too much is queued (backpressure).

        If the worker is gone the message is dropped rather than waiting forever; its
        exit is reported by the next ``poll``, and the host's next call raises it.
        """
        if self._broken:
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._out += _HEADER.pack(len(data))
        self._out += data
        self._write_some()
        while len(self._out) > _OUTBOX_BYTES and not self._broken:
            if self.proc.poll() is not None:
                self._broken = True
                self._out.clear()
                return
            self._received.extend(self._wait_for_pipes(0.5))

    def poll(self) -> list[Message]:
        """Every message that has arrived, without waiting."""
        self._write_some()
        messages = self._received + self._read_some()
        self._received = []
        return messages

    def wait(self, timeout: float) -> list[Message]:
        """At least one message, or none after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.poll()
            left = deadline - time.monotonic()
            if messages or left <= 0 or self._exit_reported:
                return messages
            self._received.extend(self._wait_for_pipes(left))

    def close(self, timeout: float = 10.0) -> None:
        """Hand the worker what is still queued, close its input, and let it exit.

        By the time the host closes, the worker has said ``done``: everything is
        persisted and its leases are released, so its exit is not awaited; a daemon
        thread reaps it.
        """
        deadline = time.monotonic() + timeout
        while self._out and not self._broken and time.monotonic() < deadline:
            self._wait_for_pipes(deadline - time.monotonic())
            self._write_some()
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        threading.Thread(target=self.proc.wait, name="cowrie-enrich-reap", daemon=True).start()

    # -- the pipes -------------------------------------------------------------------

    def _write_some(self) -> None:
        if not self._out or self._broken:
            return
        try:
            written = os.write(self._to_worker, self._out)
        except BlockingIOError:
            return
        except OSError:  # BrokenPipeError included: the worker is gone
            self._broken = True
            self._out.clear()
            return
        del self._out[:written]

    def _read_some(self) -> list[Message]:
        if self._eof:
            return []
        while True:
            try:
                data = os.read(self._from_worker, _READ_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                logger.error("lost the enrichment worker: %s", exc)
                data = b""
            if not data:
                self._eof = True
                break
            self._in += data
        messages: list[Message] = []
        buffer, offset = self._in, 0
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            start = offset + _HEADER.size
            if len(buffer) - start < size:
                break
            try:
                messages.append(pickle.loads(buffer[start : start + size]))
            except (pickle.UnpicklingError, EOFError, ValueError) as exc:
                logger.error("lost the enrichment worker: %s", exc)
                self.proc.kill()  # its stream cannot be trusted any more
                self._eof = True
                break
            offset = start + size
        del buffer[:offset]
        if self._eof and not self._exit_reported:
            self._exit_reported = True
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
            messages.append(("exit", code))
        return messages

    def _wait_for_pipes(self, timeout: float) -> list[Message]:
        """Sleep until the worker wrote or can take more (at most ``timeout``), then read."""
        readable = [] if self._eof else [self._from_worker]
        writable = [self._to_worker] if self._out and not self._broken else []
        if readable or writable:
            select.select(readable, writable, [], max(0.0, timeout))
        else:
            time.sleep(min(max(0.0, timeout), 0.05))
        self._write_some()
        return self._read_some()


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
