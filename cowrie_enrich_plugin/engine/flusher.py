"""The flusher: the one order of the enrichment steps, and when each batch goes.

It reads the host's messages (:mod:`..channel`) from an inbox, looks new
addresses up in the cache in bulk, and
sends what is unknown or stale in batches: when a batch is full, when
``flush_interval`` has passed since the oldest waiting address arrived, at a flush
(checkpoint) and at the end. Before a batch is sent its addresses are leased and
recorded ``pending`` in the store, so a kill at any point loses nothing. Up to
``concurrency`` batches are in flight; persisting a batch's outcome happens on a
separate thread, so a connection slot never waits for the database. Records go out
through ``emit`` as dicts, ready to deliver.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

from .. import clock
from ..channel import End, Flush, Init, NewAddresses, SkippedAddresses, ToEngine, assert_never
from ..counters import RunCounters
from ..dburl import scrub
from ..errors import StoreError
from ..record import EnrichmentRecord, Status
from ..slices import slices
from ..sources.cymru.client import BatchResult
from ..store.parts import due_pending_parts
from .foreign import ForeignLeases
from .lifecycle import BackgroundRetries, Handled, OncePerRun, due_retries
from .sections import ExtraAsking, Sections, with_every_part
from .steps import Enricher

__all__ = ["Flusher"]

logger = logging.getLogger(__name__)

_FOREIGN_POLL: Final = 0.5
_STORE_PAUSE: Final = 30.0  # after the database failed every retry, skip it this long
#: records ready, and which of them this long-lived run delivered as they are
Emit = Callable[[list[dict[str, Any]], tuple[str, ...]], None]


class Flusher:
    """The flush loop over one run's messages.

    :param enricher: the enrichment steps.
    :param emit: called (from any of the flusher's threads) with ready records as dicts,
        and which of them a long-lived run delivered as they are (:class:`OncePerRun`).
    :param stopping: once set, no new batch is sent and other processes' leases
        are not waited for: the host is going away (what is leased stays pending).
    :param resume_pending: also retry what earlier runs left pending and due.
    """

    def __init__(
        self,
        enricher: Enricher,
        emit: Emit,
        stopping: threading.Event | None = None,
        *,
        resume_pending: bool = True,
    ) -> None:
        self.enricher = enricher
        self.config = enricher.config
        self._emit_dicts = emit
        self._stopping = stopping or threading.Event()
        self._resume_pending = resume_pending
        self._foreign = ForeignLeases()
        self._on_idle: Callable[[], None] | None = None
        #: addresses taken on and not in a batch yet (the loop's buffers)
        self._buffered = 0
        self._stale: dict[str, EnrichmentRecord] = {}
        self._sections = Sections()
        self._handled = Handled(self.config)
        self._retries = BackgroundRetries(self.config)
        concurrency = self.config.concurrency
        self._in_flight = threading.BoundedSemaphore(max(2, 2 * concurrency))
        self._futures: set[Future[None]] = set()
        #: addresses in a whois batch of this engine now (never claimed twice at once)
        self._asking_now: set[str] = set()
        self._lock = threading.Lock()
        self._network = ThreadPoolExecutor(concurrency, thread_name_prefix="cymru")
        self._persist = ThreadPoolExecutor(1, thread_name_prefix="cowrie-enrich-store")
        self._asking = ExtraAsking(
            enricher,
            self._sections,
            self._track,
            self._emit,
            lambda exc: self._store_failed(exc, 0),
            early=self.config.long_lived,
        )
        self.skipped = 0
        self.errors = 0
        self.unsaved = 0
        #: addresses delivered pending that the steps never saw fail (left to other
        #: processes, or answered but not saved)
        self.uncounted_pending = 0
        self._store_down_until = 0.0
        self._once = OncePerRun(enricher)

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet persisted."""
        with self._lock:
            return len(self._futures)

    # -- the loop -------------------------------------------------------------------------

    def run(self, inbox: queue.Queue[ToEngine], on_idle: Callable[[], None] | None = None) -> None:
        """Process messages until :class:`End`; then finish every batch and return.

        ``on_idle`` is called (throttled by the caller) at every turn of the loop, and
        while it waits for a connection slot.
        """
        self._on_idle = on_idle
        try:
            self._loop(inbox)
        except Exception:
            logger.exception("the enrichment flusher failed; unsent addresses stay pending")
            self.errors += 1
        finally:
            self._wait_for_batches()
            self._network.shutdown(wait=True)
            self._persist.shutdown(wait=True)
            self._asking.shutdown()

    def _loop(self, inbox: queue.Queue[ToEngine]) -> None:
        interval = self.config.flush_interval
        size = self.config.batch_size
        new: list[str] = []
        try:
            self._once.start()
        except StoreError as exc:
            self._store_failed(exc, 0)
        if self._resume_pending:  # what earlier runs left pending is retried in this one
            try:
                store, names = self.enricher.store, self.enricher.extras.names
                earlier = store.due_pending() + due_pending_parts(store, names)
                new = self._unseen(earlier)
            except StoreError as exc:
                self._store_failed(exc, 0)
        skipped: list[str] = []
        to_fetch: list[str] = []
        oldest: float | None = None
        while True:
            timeout = (
                interval if oldest is None else max(0.0, oldest + interval - clock.monotonic())
            )
            message: ToEngine | None
            try:
                message = inbox.get(timeout=min(timeout, 0.5))
            except queue.Empty:
                message = None
            # Throttled by the caller; called on every turn, so a busy inbox cannot starve it.
            if self._on_idle is not None:
                self._on_idle()
            if self._stopping.is_set():  # what the host sent is recorded, not dropped
                new, skipped = self._drain(inbox, message, new, skipped)
                message = End()
            if self.config.long_lived:
                new.extend(self._due_in_background())
            self._take(message, new, skipped)
            # What else the host sent meanwhile joins it (a backlog, e.g. what a host
            # read while the engine started): one look in the cache, not one a message.
            while (
                isinstance(message, NewAddresses | SkippedAddresses)
                and max(len(new), len(skipped)) < size
            ):
                try:
                    message = inbox.get_nowait()
                except queue.Empty:
                    break
                self._take(message, new, skipped)
            end = isinstance(message, End) or self._stopping.is_set()
            force = end or isinstance(message, Flush)
            if oldest is None and (new or skipped):
                oldest = clock.monotonic()
            due = oldest is not None and clock.monotonic() - oldest >= interval
            # A long-lived host waits for nothing it can have now: the cache is looked
            # at at once, and only what must go to the network waits for a batch.
            prompt = self.config.long_lived and bool(new or skipped)
            if (
                prompt
                or len(new) >= size
                or len(skipped) >= size
                or ((force or due) and (new or skipped))
            ):
                to_fetch.extend(self._handle_new(new, skipped))
                new, skipped = [], []
            if len(to_fetch) >= size:
                whole = len(to_fetch) - len(to_fetch) % size
                self._buffered = len(to_fetch)
                self._send(to_fetch[:whole])
                to_fetch = to_fetch[whole:]
            if force or due or len(self._sections.partial) >= size:
                self._send_partial()
            if force or due:
                to_fetch.extend(self._poll_foreign())
                if to_fetch:
                    self._send(to_fetch)
                    to_fetch = []
            self._buffered = len(new) + len(skipped) + len(to_fetch)
            if not new and not skipped and not to_fetch:
                oldest = None
            elif due or force:
                oldest = clock.monotonic()
            if end:
                self._finish_foreign()
                return

    # -- steps -------------------------------------------------------------------------------

    def _take(self, message: ToEngine | None, new: list[str], skipped: list[str]) -> None:
        """Add a message's addresses not handled yet to ``new`` or ``skipped``."""
        match message:
            case NewAddresses():
                new.extend(self._unseen(message.ips))
            case SkippedAddresses():
                skipped.extend(self._unseen(message.ips))
            case Flush() | End() | Init() | None:  # the loop acts on these
                pass
            case _:
                assert_never(message)

    def _drain(
        self,
        inbox: queue.Queue[ToEngine],
        first: ToEngine | None,
        new: list[str],
        skipped: list[str],
    ) -> tuple[list[str], list[str]]:
        """Every address still in the inbox, added to ``new`` and ``skipped``."""
        message = first
        while True:
            self._take(message, new, skipped)
            try:
                message = inbox.get_nowait()
            except queue.Empty:
                return new, skipped

    def _due_in_background(self) -> list[str]:
        """In a long-lived run, now and then: the pending addresses whose retry is due."""
        if not self._retries.due() or self._store_paused():
            return []
        try:
            due = due_retries(self.enricher)
        except StoreError as exc:
            self._store_failed(exc, 0)
            return []
        busy = self._busy_among(due)
        return [ip for ip in due if ip not in self._foreign and ip not in busy]

    def _busy_among(self, ips: Iterable[str]) -> set[str]:
        """Those of ``ips`` in this engine's whois batches now."""
        with self._lock:
            return self._asking_now.intersection(ips)

    def _unseen(self, ips: Iterable[str]) -> list[str]:
        return self._handled.first_time(ips)

    def _handle_new(self, new: list[str], skipped: list[str]) -> list[str]:
        """Cache first: emit fresh records; return what whois must answer."""
        if skipped:
            records = [self.enricher.skipped_record(ip) for ip in skipped]
            try:
                self.enricher.store.put_records(records)
            except StoreError as exc:
                self._store_failed(exc, len(records))
            self._emit(records)
            self.skipped += len(records)
        if not new:
            return []
        self.enricher.refresh_offline()
        if self._store_paused():
            return new
        try:
            view = self.enricher.look_in_cache(new)
        except StoreError as exc:
            self._store_failed(exc, 0)
            return new
        self._emit(view.fresh.values())
        self._stale.update(view.stale)
        self._sections.remember(view)
        if self.config.long_lived and view.stale:
            later = self._asked_already(list(view.stale))
            return [ip for ip in view.to_fetch if ip not in later]
        return view.to_fetch

    def _asked_already(self, stale: list[str]) -> set[str]:
        """Of addresses seen again in a long-lived run, those not to ask now.

        One whose batch is out has its answer on the way; one whose retry waits out
        its backoff is asked by the background (its stored record goes out now).
        """
        busy = self._busy_among(stale)
        for ip in busy:
            del self._stale[ip]
        try:
            waiting = self.enricher.store.backing_off([ip for ip in stale if ip not in busy])
        except StoreError as exc:
            self._store_failed(exc, 0)
            waiting = set()
        self._emit(self._stale.pop(ip) for ip in sorted(waiting))
        self._sections.take(waiting)  # nothing is kept for what is not asked now
        return busy | waiting

    def _send_partial(self) -> None:
        self._asking.partial(self.config.batch_size, self._stopping.is_set())

    def _track(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _send(self, ips: list[str]) -> None:
        """Send ``ips`` in batches of at most ``batch_size``, whatever their origin.

        Addresses taken over from an exited process, or coming back from another
        process's lease, go out like any others.
        """
        for batch in slices(list(dict.fromkeys(ips)), self.config.batch_size):
            self._send_batch(list(batch))

    def _send_batch(self, batch: list[str]) -> None:
        """Lease a batch, then hand it to a connection slot (blocking while too many are out).

        When the database cannot record the batch as pending, it is not sent: its
        addresses are reported pending, unsaved, and are collected again next run.
        Once the host is going away, nothing more is sent (it stays queued).
        """
        if self._stopping.is_set():
            try:  # queued in the store: the next start asks for them
                self.enricher.store.queue(batch)
            except StoreError as exc:
                self._store_failed(exc, len(batch))  # counted as unsaved
            else:
                with self._lock:
                    self.uncounted_pending += len(batch)
            pending = self.enricher.pending_record
            self._emit(self._stale.get(ip) or pending(ip) for ip in batch)
            return
        if self._store_paused():
            self._not_recorded(batch)
            return
        # One of this engine's batches holds some already: their answer is on the way
        # (the loop's thread alone adds to ``_asking_now``: no one else can in between).
        out = self._busy_among(batch)
        if out:
            batch = [ip for ip in batch if ip not in out]
            for ip in out:
                self._stale.pop(ip, None)
            if not batch:
                return
        try:
            mine, theirs = self.enricher.claim(batch)
        except StoreError as exc:
            self._store_failed(exc, 0)
            self._not_recorded(batch)
            return
        for ip in theirs:
            self._foreign.add(ip, self._stale.get(ip))
        if not mine:
            return
        with self._lock:
            self._asking_now.update(mine)
        previous = {ip: self._stale.pop(ip) for ip in mine if ip in self._stale}
        while not self._in_flight.acquire(timeout=0.5):  # the host hears how it goes
            if self._on_idle is not None:
                self._on_idle()
        future = self._network.submit(self._fetch, mine, previous)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _store_paused(self) -> bool:
        return time.monotonic() < self._store_down_until

    def _store_failed(self, exc: Exception, unsaved: int) -> None:
        with self._lock:
            self.unsaved += unsaved
            first = not self._store_paused()
            self._store_down_until = time.monotonic() + _STORE_PAUSE
        if first:
            logger.error(
                "the database failed (%s); for %.0fs no batch is sent, and addresses that "
                "cannot be recorded are collected again on the next run",
                scrub(str(exc), self.config.db),
                _STORE_PAUSE,
            )

    def _not_recorded(self, batch: list[str]) -> None:
        with self._lock:
            self.unsaved += len(batch)
        stale, pending = self._stale, self.enricher.pending_record
        self._emit(stale.pop(ip) if ip in stale else pending(ip) for ip in batch)

    def _fetch(self, batch: list[str], previous: dict[str, EnrichmentRecord]) -> None:
        """On a connection slot: ask whois, then hand persisting to the store thread."""
        try:
            try:
                result = self.enricher.client.query_batch(batch)  # network trouble is inside
            except Exception as exc:  # a bug, not the network: the batch stays pending
                logger.exception("a whois batch of %d address(es) failed", len(batch))
                result = BatchResult(unresolved=dict.fromkeys(batch, f"internal error: {exc}"))
            done = self._persist.submit(self._store, batch, previous, result)
            with self._lock:
                self._futures.add(done)
            done.add_done_callback(self._forget)
        finally:
            self._in_flight.release()

    def _store(
        self, batch: list[str], previous: dict[str, EnrichmentRecord], result: BatchResult
    ) -> None:
        """Persist whois's answer (the lease ends here); the extra sources follow on their own."""
        try:
            records = self.enricher.finish_batch(batch, result, previous)
        except Exception as exc:
            # Leased and recorded pending before it was sent: the next run retries it.
            if isinstance(exc, StoreError):
                self._store_failed(exc, 0)
            else:
                logger.exception("saving a batch of %d address(es) failed", len(batch))
            with self._lock:
                self.errors += 1
            pending = self.enricher.pending_record
            records = [previous.get(ip) or pending(ip) for ip in batch]
            with self._lock:  # still pending in the store: the next run asks again
                self.uncounted_pending += sum(r.status is Status.PENDING for r in records)
        with self._lock:
            self._asking_now.difference_update(batch)
        if self.enricher.extras.names and not self._stopping.is_set():
            self._asking.submit(records)
        else:
            self._emit(records)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _emit(self, records: Iterable[EnrichmentRecord]) -> None:
        """Hand records on; an extra source's section that is missing is marked pending."""
        names = self.enricher.extras.names
        if names:
            records = [with_every_part(record, names) for record in records]
        completed = self.enricher.completed
        dicts = [completed(record).to_dict() for record in records]
        if not dicts:
            return
        self.enricher.count_kinds(dicts)
        repeats: tuple[str, ...] = ()
        if self._once.active and not self._store_paused():  # else a repeat, not a loss
            try:
                repeats = self._once.repeats(dicts)
            except StoreError as exc:
                self._store_failed(exc, 0)
        self._emit_dicts(dicts, repeats)

    def _wait_for_batches(self) -> None:
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending:
                return
            for future in pending:
                future.exception()
                with self._lock:
                    self._futures.discard(future)

    # -- addresses leased by another process -------------------------------------------

    def _poll_foreign(self) -> list[str]:
        """Emit foreign-leased addresses that got resolved; return those to claim again."""
        if not self._foreign or self._store_paused():
            return []
        try:
            view = self.enricher.look_in_cache(self._foreign.ips())
        except StoreError as exc:
            self._store_failed(exc, 0)
            return []
        self._emit(view.fresh.values())
        self._sections.remember(view)
        return self._foreign.settle(view)

    def _finish_foreign(self) -> None:
        """At the end, wait (bounded by the lease time) for other processes' leases."""
        deadline = time.monotonic() + self.enricher.lease_seconds
        while self._foreign and time.monotonic() < deadline and not self._stopping.is_set():
            time.sleep(_FOREIGN_POLL)
            retry = self._poll_foreign()
            if retry:
                self._send(retry)
            self._send_partial()
            self._wait_for_batches()
        if not self._foreign:
            return
        try:
            stored = self.enricher.store.get_records(self._foreign.ips())
        except StoreError:
            stored = {}
        leftovers = self._foreign.leftovers(stored, self.enricher.pending_record)
        self.uncounted_pending += sum(r.status is Status.PENDING for r in leftovers)
        self._emit(leftovers)

    def counters(self) -> RunCounters:
        """The run's counters as the engine knows them (steps, whois client, this loop)."""
        result = self.enricher.counters()
        with self._lock:
            result.skipped = self.skipped
            result.pending += self.uncounted_pending + self.unsaved
            result.in_flight_batches = len(self._futures)
            result.waiting_elsewhere = len(self._foreign)
            result.backlog = self._buffered + len(self._asking_now) + len(self._foreign)
            result.errors = self.errors
            result.unsaved = self.unsaved
        return result
