"""The flusher: the one order of the enrichment steps.

It reads the host's messages (:mod:`..channel`) from an inbox, looks new addresses
up in the cache in bulk, and sends what is unknown or stale to whois in batches,
when :mod:`.policy` says. Before a batch is sent its addresses are leased and
recorded ``pending`` in the store, so a kill at any point loses nothing. Batches out
are :mod:`.inflight`'s; a database that failed closes :mod:`.gate` for a while.
Records go out through ``emit`` as dicts, ready to deliver. Everything it does to
the store and the sources goes through :class:`.steps.Enricher`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Final

from .. import clock
from ..channel import End, Flush, Init, NewAddresses, SkippedAddresses, ToEngine, assert_never
from ..counters import RunCounters
from ..errors import StoreError
from ..record import Status
from .emission import Emission, Emit
from .foreign import ForeignLeases
from .gate import StoreGate
from .inflight import Batches
from .lifecycle import BackgroundRetries, Handled, due_retries
from .own_output import OwnOutput
from .policy import BatchPolicy
from .sections import NetworkAsking, Sections
from .sender import WhoisSender
from .steps import Enricher

__all__ = ["Flusher"]

logger = logging.getLogger(__name__)

#: How often the end looks again at addresses other processes hold, seconds.
_FOREIGN_POLL: Final = 0.5
#: The longest the loop waits for a message before it looks at the time again.
_TURN: Final = 0.5


class Flusher:
    """The flush loop over one run's messages.

    :param enricher: the enrichment steps.
    :param emit: called (from any of the flusher's threads) with ready records as dicts,
        which of them a long-lived run delivered as they are (:class:`OncePerRun`), and
        whether those that expired are served so on purpose (their refresh waits).
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
        self._stopping = stopping or threading.Event()
        self._resume_pending = resume_pending
        self._foreign = ForeignLeases()
        self._on_idle: Callable[[], None] | None = None
        #: addresses taken on and not in a batch yet (the loop's buffers)
        self._buffered = 0
        self._sections = Sections()
        self._handled = Handled(self.config)
        self._retries = BackgroundRetries(self.config)
        self._batches = Batches(self.config.concurrency)
        self._gate = StoreGate(self.config.db)
        self._own = OwnOutput(enricher, self._gate.failed, self._gate.paused, active=resume_pending)
        self._emit = Emission(enricher, emit, self._gate, self._own)
        self._asking = NetworkAsking(
            enricher,
            self._sections,
            self._batches.track,
            self._emit,
            self._gate.failed,
            early=self.config.long_lived,
        )
        self._sender = WhoisSender(
            enricher,
            self._batches,
            self._gate,
            self._emit,
            self._asking,
            self._foreign,
            self._stopping,
        )
        self._stale = self._sender.stale
        self._send = self._sender.send
        self.skipped = 0

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet persisted."""
        return len(self._batches)

    @property
    def unsaved(self) -> int:
        """Addresses that went out pending without being recorded."""
        return self._gate.unsaved

    # -- the loop -------------------------------------------------------------------------

    def run(self, inbox: queue.Queue[ToEngine], on_idle: Callable[[], None] | None = None) -> None:
        """Process messages until :class:`End`; then finish every batch and return.

        ``on_idle`` is called (throttled by the caller) at every turn of the loop, and
        while it waits for a connection slot.
        """
        self._on_idle = self._sender.on_idle = on_idle
        try:
            self._loop(inbox)
        except Exception:
            logger.exception("the enrichment flusher failed; unsent addresses stay pending")
            self._sender.count(errors=1)
        finally:
            self._batches.wait()
            # what the last batches gathered for the network sources
            self._asking.flush(self._stopping.is_set())
            self._batches.wait()
            self._batches.shutdown()
            self._asking.shutdown()

    def _loop(self, inbox: queue.Queue[ToEngine]) -> None:
        size = self.config.batch_size
        policy = BatchPolicy(size, self.config.flush_interval, prompt=self.config.long_lived)
        new: list[str] = []
        self._emit.start()
        if self._resume_pending:  # what earlier runs left pending is retried in this one
            try:
                new = self._unseen(self.enricher.due_pending() + self._own.finished_owed())
                self._buffered = len(new)  # the host's end waits for them too
            except StoreError as exc:
                self._gate.failed(exc)
        skipped: list[str] = []
        to_fetch: list[str] = []
        while True:
            message: ToEngine | None
            try:
                message = inbox.get(timeout=min(policy.wait(clock.monotonic()), _TURN))
            except queue.Empty:
                message = None
            # Throttled by the caller; called on every turn, so a busy inbox cannot starve it.
            if self._on_idle is not None:
                self._on_idle()
            if self._stopping.is_set():  # what the host sent is recorded, not dropped
                self.enricher.stop_asking()  # and the batches out end now, pending
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
            turn = policy.turn(
                clock.monotonic(),
                new=len(new),
                skipped=len(skipped),
                force=end or isinstance(message, Flush),
            )
            if turn.look:
                to_fetch.extend(self._handle_new(new, skipped))
                new, skipped = [], []
            # At a flush everything goes at once (below), its last round of batches even.
            whole = 0 if turn.flush else policy.whole(len(to_fetch))
            if whole:
                self._buffered = len(to_fetch)
                self._send(to_fetch[:whole])
                to_fetch = to_fetch[whole:]
            if policy.partial_due(turn, len(self._sections.partial)):
                self._send_partial()
            if turn.flush:
                to_fetch.extend(self._poll_foreign())
                if to_fetch:
                    self._buffered = len(new) + len(skipped) + len(to_fetch)
                    self._send(to_fetch)
                    to_fetch = []
            self._buffered = len(new) + len(skipped) + len(to_fetch)
            if self._network_due(turn.flush):
                self._asking.flush(self._stopping.is_set())
            # Addresses another process is answering wait too: each flush looks for their
            # answers, every flush_interval, whether or not new addresses arrive.
            waiting = bool(new or skipped or to_fetch or self._foreign)
            policy.settle(clock.monotonic(), turn, waiting=waiting)
            if end:
                self._finish_foreign()
                return

    # -- steps -------------------------------------------------------------------------------

    def _take(self, message: ToEngine | None, new: list[str], skipped: list[str]) -> None:
        """Add a message's addresses not handled yet to ``new`` or ``skipped``."""
        match message:
            case NewAddresses():
                new.extend(self._unseen(message.ips) + self._own.from_host(message.ips))
            case SkippedAddresses():
                skipped.extend(self._unseen(message.ips) + self._own.from_host(message.ips))
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
        timer = self._retries.due()
        recovered = self._sender.recovered.is_set()
        # While the breaker holds whois back, the queue waits: asked, it would only be
        # held back again (and rewritten), on every sensor, for the whole outage.
        if not (timer or recovered) or self._gate.paused() or self.enricher.whois_held_back():
            return []
        if recovered:  # cleared only when seen: one set meanwhile is not lost
            self._sender.recovered.clear()
        try:
            due, limit = due_retries(self.enricher)
            # While whois fails, one full batch probes it, topped up with the queue's
            # soonest when less is due, so that its return is noticed without new
            # addresses (then all of it is due) and the queue after it goes in full
            # batches; not while the breaker holds every batch back, which would only
            # fail it.
            short = self.config.batch_size - len(due)
            probe = short > 0 and timer and self._sender.failing
            probe = probe and not self.enricher.whois_held_back()
            if probe and self.enricher.end_whois_backoff(short):
                due, limit = due_retries(self.enricher)
        except StoreError as exc:
            self._gate.failed(exc)
            return []
        if recovered and len(due) >= limit:
            self._sender.recovered.set()  # more of the queue is due: the next turn takes it
        if timer:  # and what this sensor is owed that another one finished meanwhile
            due = list(dict.fromkeys(due + self._own.finished_owed()))
        busy = self._batches.busy_among(due)
        return [ip for ip in due if ip not in self._foreign and ip not in busy]

    def _unseen(self, ips: Iterable[str]) -> list[str]:
        return self._handled.first_time(ips)

    def _handle_new(self, new: list[str], skipped: list[str]) -> list[str]:
        """Cache first: emit fresh records; return what whois must answer."""
        if skipped:
            records = [self.enricher.skipped_record(ip) for ip in skipped]
            try:
                self.enricher.save_skipped(records)
            except StoreError as exc:
                self._gate.failed(exc, len(records))
            self._emit(records)
            self.skipped += len(records)
        if not new:
            return []
        self.enricher.refresh_offline()
        if self._gate.paused():
            return new
        try:
            view = self.enricher.look_in_cache(new)
        except StoreError as exc:
            self._gate.failed(exc)
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
        busy = self._batches.busy_among(stale)
        for ip in busy:
            del self._stale[ip]
        try:
            waiting = self.enricher.backing_off([ip for ip in stale if ip not in busy])
        except StoreError as exc:
            self._gate.failed(exc)
            waiting = set()
        self._emit((self._stale.pop(ip) for ip in sorted(waiting)), stale=True)
        self._sections.take(waiting)  # nothing is kept for what is not asked now
        return busy | waiting

    def _network_due(self, flush: bool) -> bool:
        """Whether what waits for the network sources is asked now, in less than full bulks.

        While whois batches are on their way, more records come to fill the network
        sources' larger requests; once whois is idle (a trickle, the end of a run),
        nothing would, and at a flush moment or after ``flush_interval`` nothing waits.
        """
        if not len(self._asking):
            return False
        # A flush while whois batches are out (the host's end begins so) does not send
        # them short: the batches' records follow; the end of the run sends what is left.
        idle = not self._buffered and not self._batches.asking
        flush = flush and not self._batches.asking
        return flush or idle or self._asking.due(clock.monotonic(), self.config.flush_interval)

    def _send_partial(self) -> None:
        self._asking.partial(self._stopping.is_set())

    # -- addresses leased by another process -------------------------------------------

    def _poll_foreign(self) -> list[str]:
        """Emit foreign-leased addresses that got resolved; return those to claim again."""
        if not self._foreign or self._gate.paused():
            return []
        try:
            view = self.enricher.look_in_cache(self._foreign.ips())
        except StoreError as exc:
            self._gate.failed(exc)
            return []
        self._emit(view.fresh.values())
        self._sections.remember(view)
        return self._foreign.settle(view)

    def _finish_foreign(self) -> None:
        """At the end, wait (bounded by the lease time) for other processes' leases."""
        deadline = clock.monotonic() + self.config.lease_seconds
        while self._foreign and clock.monotonic() < deadline and not self._stopping.is_set():
            clock.sleep(_FOREIGN_POLL)
            retry = self._poll_foreign()
            if retry:
                self._send(retry)
            self._send_partial()
            self._asking.flush(self._stopping.is_set())
            self._batches.wait()
        if not self._foreign:
            return
        try:
            stored = self.enricher.stored(self._foreign.ips())
        except StoreError:
            stored = {}
        leftovers = self._foreign.leftovers(stored, self.enricher.pending_record)
        self._sender.count(pending=sum(r.status is Status.PENDING for r in leftovers))
        self._emit(leftovers)

    def counters(self) -> RunCounters:
        """The run's counters as the engine knows them (steps, whois client, this loop)."""
        result = self.enricher.counters()
        # Each part reads its own counts under its own lock.
        unsaved = self.unsaved
        errors, uncounted = self._sender.counts()
        result.skipped = self.skipped
        result.pending += uncounted + unsaved
        result.in_flight_batches = len(self._batches)
        result.waiting_elsewhere = len(self._foreign)
        result.backlog = (
            self._buffered + self._batches.asking + len(self._foreign) + len(self._asking)
        )
        result.errors += errors  # the sources' refusals are the steps'
        result.unsaved = unsaved
        return result
