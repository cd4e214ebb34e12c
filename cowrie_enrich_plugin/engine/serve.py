"""The engine's one serve loop, in a worker process (:func:`main`) or a host's thread.

Both modes open the engine with :func:`open_engine` and run :func:`serve` over an
inbox of :mod:`..channel` messages; only how messages arrive and leave differs. In
a worker process a reader thread fills the inbox from stdin, and records go back
on stdout. When the host is gone (end of file on stdin before the end of the run)
or the worker is asked to terminate (SIGTERM), the worker gives up its leases (what
they hold stays pending in the store) and exits at once; it ignores SIGINT, which a
terminal sends to the whole process group, and leaves the host to decide.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from ..channel import (
    EXIT_HOST_GONE,
    EXIT_TERMINATED,
    Done,
    End,
    Failed,
    FromEngine,
    Init,
    NewAddresses,
    Ready,
    Records,
    SkippedAddresses,
    ToEngine,
    read_message,
    write_message,
)
from ..classification import export_classifications
from ..errors import ConfigError, GeoDatabaseError, StoreError, configure_logging
from ..settings import EnrichConfig
from .flusher import Flusher
from .steps import Enricher

__all__ = ["enrich_now", "main", "open_engine", "serve"]

_STATS_EVERY: Final = 0.5
_INBOX_MESSAGES: Final = 64
_GIVE_UP_SECONDS: Final = 3.0  # to release the leases when the host is gone
#: allocations between collections of the youngest generation (Python's default: 700)
_GC_ALLOCATIONS: Final = 20_000


def open_engine(config: EnrichConfig, *, create: bool = True) -> Enricher:
    """Open the store, the GeoIP files and the whois client that ``config`` names.

    Without ``create``, a database that holds no store is refused, not made.

    :raises GeoDatabaseError: for an unusable GeoIP file.
    :raises StoreError: when the database cannot be opened.
    """
    return Enricher.open(config, create=create)


class _Throttle:
    """True at most every half second: the loop reports the counters that often, records or not."""

    def __init__(self) -> None:
        self.next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now >= self.next:
            self.next = now + _STATS_EVERY
            return True
        return False


def serve(
    enricher: Enricher,
    inbox: queue.Queue[ToEngine],
    send: Callable[[FromEngine], None],
    stopping: threading.Event | None = None,
) -> None:
    """Say :class:`Ready`, run the flusher over ``inbox`` until :class:`End`, say :class:`Done`.

    The enricher is closed on the way out, after :class:`Done` (everything is persisted
    and the leases given up: the host may go on while the files are closed).
    """
    throttle = _Throttle()
    # Several threads emit: each snapshot is sent before the next is taken, so the host
    # (and a scrape of its metrics) never sees the counters go back.
    in_order = threading.Lock()

    # The counters ride with every batch of records (about 15 µs): a host waiting for
    # the end of the work (backlog, batches out) must not wait for the next report.
    def emit(records: list[dict[str, Any]], repeats: tuple[str, ...], stale: bool) -> None:
        with in_order:
            send(Records(records, flusher.counters(), repeats, stale))

    def idle() -> None:
        if throttle.due():
            with in_order:
                send(Records([], flusher.counters()))

    flusher = Flusher(enricher, emit, stopping)
    send(Ready())
    try:
        flusher.run(inbox, on_idle=idle)
    finally:
        enricher.release_leases()
        with contextlib.suppress(StoreError):  # the gauge keeps its last value
            enricher.count_pending()
        send(Done(flusher.counters()))
        enricher.close()


def enrich_now(
    enricher: Enricher,
    usable: Iterable[str],
    skipped: Iterable[str] = (),
    stopping: threading.Event | None = None,
    found: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Enrich addresses now, cache first, on this thread: the records, in no set order.

    The same path as a host's run (``lookup`` and ``cache retry`` use it), without
    the pending addresses of earlier runs. Once ``stopping`` is set (and
    :meth:`Enricher.stop_asking` called), it ends promptly, the rest pending. The
    records are added to ``found`` as they come (when given), and returned.
    """
    inbox: queue.Queue[ToEngine] = queue.Queue()
    inbox.put(NewAddresses(list(usable)))
    inbox.put(SkippedAddresses(list(skipped)))
    inbox.put(End())
    got: list[dict[str, Any]] = [] if found is None else found

    def emit(records: list[dict[str, Any]], _repeats: tuple[str, ...], _stale: bool) -> None:
        export_classifications(records)  # no host between to do it
        got.extend(records)

    Flusher(enricher, emit, stopping, resume_pending=False).run(inbox)
    return got


# -- the worker process -------------------------------------------------------------------


def main() -> int:
    """Serve one run over messages on stdin; write records and counters to stdout.

    Returns only when the run could not start; otherwise the process exits itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host decides what Ctrl-C means
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the message stream
    init = read_message(stdin)
    if not isinstance(init, Init):
        return 2
    configure_logging(init.log_level)
    lock = threading.Lock()
    host_gone = threading.Event()
    # A host that closes our input to stop us may still read what we send (the last
    # records, the final counters): only a write that fails ends the sending.
    unread = threading.Event()

    def send(message: FromEngine) -> None:
        if unread.is_set():
            return
        try:
            with lock:
                write_message(stdout, message)
        except OSError:  # BrokenPipeError included: nobody reads any more
            unread.set()
            host_gone.set()

    try:
        enricher = open_engine(init.config)
    except (ConfigError, GeoDatabaseError, StoreError) as exc:
        send(Failed.of(exc))
        return 2
    except Exception as exc:
        send(Failed.of(exc))
        return 1
    # What is loaded now (SQLAlchemy, the compiled statements) lives as long as the
    # process: out of the collector's sight, full collections stop rescanning it.
    gc.freeze()
    # A batch makes tens of thousands of short-lived dicts and tuples without cycles; at
    # the default 700 allocations the youngest generation was scanned every few records.
    gc.set_threshold(_GC_ALLOCATIONS, 10, 10)
    done = threading.Event()
    stopping = threading.Event()
    inbox: queue.Queue[ToEngine] = queue.Queue(maxsize=_INBOX_MESSAGES)

    def stop(status: int) -> None:
        """The host is gone or we are told to go: stop asking, record what is owed, leave.

        The flusher records the addresses it received and had not leased yet as
        queued in the store (a long-lived host cannot give them again); past
        ``_GIVE_UP_SECONDS`` the process leaves anyway, its leases given up if the
        database lets it in time.
        """
        if done.is_set() or stopping.is_set():
            return
        stopping.set()
        enricher.stop_asking()  # even while the loop waits for a connection slot
        with contextlib.suppress(queue.Full):
            inbox.put(End(), timeout=1)
        time.sleep(_GIVE_UP_SECONDS)
        if not done.is_set():
            releasing = threading.Thread(target=enricher.release_leases, daemon=True)
            releasing.start()
            releasing.join(1.0)
            os._exit(status)

    def on_sigterm(_signum: int, _frame: object) -> None:
        threading.Thread(target=stop, args=(EXIT_TERMINATED,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)

    def receive() -> None:
        while True:
            message = read_message(stdin)
            if message is None:  # the host closed the pipe or is gone
                host_gone.set()
                stop(EXIT_HOST_GONE)
                return
            if not done.is_set():
                inbox.put(message)

    threading.Thread(target=receive, name="receive", daemon=True).start()

    def send_final(message: FromEngine) -> None:
        send(message)
        if isinstance(message, Done):  # sent: a host that stopped reading cannot hold it
            done.set()

    serve(enricher, inbox, send_final, stopping)
    # The reader thread is still blocked on stdin; an interpreter that finalised now
    # would abort on its buffer's lock. Everything is sent and closed: leave at once.
    with contextlib.suppress(OSError):
        stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_HOST_GONE if host_gone.is_set() and stopping.is_set() else 0)
