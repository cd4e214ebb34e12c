"""The host's end of the engine: in a worker process beside the host (default), or a thread.

The host's thread pays only for collecting addresses; the database, the sources and
the merge run in the engine. A process has its own interpreter lock, so that work
does not slow the host's ingest, and the heavy imports (SQLAlchemy, geoip2) happen
there. The worker is our own ``cowrie_enrich_plugin.engine``, started in isolated
mode (``python -I``) and given the host's ``sys.path`` without the current
directory: a package planted there is never run, and host and worker run the same
code, however it was installed.

The host's end of the pipes is non-blocking and served from the host's own calls
(``send``, ``poll``, ``wait``): while the host ingests, the plugin runs no thread in
its process. A helper thread would have to take the interpreter lock from the host's
thread each time a message came or went, and on a small virtual machine each of those
hand-overs costs the host's thread more than the message itself.

Both pipes are widened where the system allows it (:mod:`.pipes`, 1 MiB on Linux). A
batch's records (tens of kilobytes) then fit beside what the host has not read yet:
the worker's write does not block until the host reads, and the host's read does not
wake a blocked writer, which the kernel may run on the host's own core (a pipe's
wake-up asks for the waker's core) while the other core is busy. The pipe to the
worker is widened too, because measuring said so: with it left at 64 KiB, the
``host-floor`` benchmark lost what the wide pipe from the worker gained. The host may
then be up to the outbox (:data:`_OUTBOX_BYTES`) and a pipeful ahead of its worker;
what a worker that stopped reading never read is dropped with the outbox when it is
abandoned (the run reports those addresses pending).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Final

from .channel import End, Exited, FrameDecoder, FromEngine, Init, ToEngine, encode
from .errors import WorkerError
from .pipes import widen
from .settings import EnrichConfig
from .worker_start import discard_early, spawn, take_early, worker_command

__all__ = [
    "ProcessTransport",
    "ThreadTransport",
    "Transport",
    "open_transport",
    "worker_command",
]

logger = logging.getLogger(__name__)

INBOX_MESSAGES: Final = 64  # messages (each up to a chunk's new addresses) before the host waits
#: Framed messages (about 60,000 addresses) queued beyond what the pipe holds before the host waits.
_OUTBOX_BYTES: Final = 1 << 20
_READ_BYTES: Final = 1 << 20


class Transport:
    """The host's end of an engine: send messages, collect what comes back."""

    def __init__(self) -> None:
        self.incoming: queue.SimpleQueue[FromEngine] = queue.SimpleQueue()

    def send(self, message: ToEngine) -> None:
        """Send one message; blocks while the engine is too far behind (backpressure)."""
        raise NotImplementedError

    def poll(self) -> list[FromEngine]:
        """Every message that has arrived, without waiting."""
        messages: list[FromEngine] = []
        while True:
            try:
                messages.append(self.incoming.get_nowait())
            except queue.Empty:
                return messages

    def wait(self, timeout: float) -> list[FromEngine]:
        """At least one message, or none after ``timeout`` seconds."""
        try:
            first = self.incoming.get(timeout=timeout)
        except queue.Empty:
            return []
        return [first, *self.poll()]

    def close(self, timeout: float = 10.0) -> None:
        """Release the engine (it has said it is done)."""

    def abandon(self, timeout: float) -> list[FromEngine]:
        """Stop the engine without waiting for the network; what came back meanwhile.

        What the engine leased is already recorded pending in the store.
        """
        return self.poll()


class ThreadTransport(Transport):
    """The engine in a thread of the host's process; opening errors are raised here."""

    def __init__(self, config: EnrichConfig) -> None:
        super().__init__()
        from .engine.serve import open_engine, serve

        self.engine = engine = open_engine(config)
        self.inbox: queue.Queue[ToEngine] = queue.Queue(maxsize=INBOX_MESSAGES)
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=serve,
            args=(engine, self.inbox, self.incoming.put, self.stopping),
            name="cowrie-enrich-engine",
            daemon=True,
        )
        self.thread.start()

    def send(self, message: ToEngine) -> None:
        """Queue a message for the engine thread."""
        self.inbox.put(message)

    def close(self, timeout: float = 10.0) -> None:
        """Wait for the engine thread (not again once it was abandoned)."""
        if not self.stopping.is_set():
            self.thread.join(timeout)

    def abandon(self, timeout: float) -> list[FromEngine]:
        """Tell the engine to stop asking the network; wait at most ``timeout``."""
        self.stopping.set()
        self.engine.stop_asking()
        with contextlib.suppress(queue.Full):
            self.inbox.put_nowait(End())
        self.thread.join(timeout)
        return self.poll()


class ProcessTransport(Transport):
    """The engine in a worker process.

    :param config: the settings, sent to the worker first.
    :param command: the worker's command after the interpreter (a stand-in that
        speaks the same messages can be named here, as the benchmarks do).
    """

    def __init__(self, config: EnrichConfig, command: Sequence[str] | None = None) -> None:
        super().__init__()
        command = command or worker_command()
        try:
            self.proc = take_early(command) or spawn(command)
        except OSError as exc:
            raise WorkerError(
                f"cannot start the enrichment worker with {sys.executable!r} ({exc}); "
                'set worker = "thread" in [plugins.enrich] to run it in this process'
            ) from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._to_worker = self.proc.stdin.fileno()
        self._from_worker = self.proc.stdout.fileno()
        for pipe in (self._to_worker, self._from_worker):
            os.set_blocking(pipe, False)
            widen(pipe)
        self._out = bytearray()  # framed messages the pipe has not taken yet
        self._decoder = FrameDecoder()
        self._received: list[FromEngine] = []  # read while waiting to send
        self._broken = False  # the worker stopped reading
        self._eof = False
        self._exit_reported = False
        level = logging.getLogger("cowrie_enrich_plugin").getEffectiveLevel()
        self.send(Init(config, level))

    def send(self, message: ToEngine) -> None:
        """Queue a message for the worker; wait while too much is queued (backpressure).

        If the worker is gone the message is dropped rather than waiting forever; its
        exit is reported by the next ``poll``, and the host's next call raises it.
        """
        if self._broken:
            return
        self._out += encode(message)
        self._write_some()
        while len(self._out) > _OUTBOX_BYTES and not self._broken:
            if self.proc.poll() is not None:
                self._broken = True
                self._out.clear()
                return
            self._received.extend(self._wait_for_pipes(0.5))

    def poll(self) -> list[FromEngine]:
        """Every message that has arrived, without waiting."""
        self._write_some()
        messages = self._received + self._read_some()
        self._received = []
        return messages

    def wait(self, timeout: float) -> list[FromEngine]:
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

        By the time the host closes, the worker has said it is done: everything is
        persisted and its leases are released, so its exit is not awaited; a daemon
        thread reaps it.
        """
        deadline = time.monotonic() + timeout
        while self._out and not self._broken and time.monotonic() < deadline:
            self._wait_for_pipes(deadline - time.monotonic())
            self._write_some()
        self._close_input()
        threading.Thread(target=self.proc.wait, name="cowrie-enrich-reap", daemon=True).start()

    def abandon(self, timeout: float) -> list[FromEngine]:
        """Close the worker's input (it gives up its leases and exits); kill it if it lingers."""
        self._out.clear()
        self._close_input()
        deadline = time.monotonic() + timeout
        messages: list[FromEngine] = []
        while not self._eof and time.monotonic() < deadline:
            messages.extend(self._received)
            self._received = []
            messages.extend(self._wait_for_pipes(min(0.1, deadline - time.monotonic())))
        if not self._eof:
            self.proc.kill()
            self._eof = True
        messages.extend(self._read_some())
        return messages

    def _close_input(self) -> None:
        self._broken = True
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

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

    def _read_some(self) -> list[FromEngine]:
        messages: list[FromEngine] = []
        while not self._eof:
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
            try:
                messages.extend(self._decoder.feed(data))
            except (pickle.UnpicklingError, EOFError, ValueError) as exc:
                logger.error("lost the enrichment worker: %s", exc)
                self.proc.kill()  # its stream cannot be trusted any more
                self._eof = True
        if self._eof and not self._exit_reported:
            self._exit_reported = True
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
            messages.append(Exited(code))
        return messages

    def _wait_for_pipes(self, timeout: float) -> list[FromEngine]:
        """Sleep until the worker wrote or can take more (at most ``timeout``), then read."""
        readable = [] if self._eof else [self._from_worker]
        writable = [self._to_worker] if self._out and not self._broken else []
        if readable or writable:
            select.select(readable, writable, [], max(0.0, timeout))
        else:
            time.sleep(min(max(0.0, timeout), 0.05))
        self._write_some()
        return self._read_some()


def open_transport(config: EnrichConfig) -> Transport:
    """The engine the settings ask for: a worker process, or a thread (``worker = "thread"``)."""
    if config.worker == "thread":
        discard_early()
        return ThreadTransport(config)
    return ProcessTransport(config)
