"""The host's side of a run: collect addresses cheaply, hand them on, deliver what comes back.

On the host's thread, :meth:`Collector.ingest` costs a dictionary lookup per event
(:mod:`.sightings` judges and remembers each value); a new address is handed to the
engine through the transport it was given (:mod:`.transport`). Records come back
and are delivered from inside the host's own calls, on its thread, each address once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from . import clock
from .channel import (
    STOPPED_EXITS,
    Done,
    End,
    Exited,
    Failed,
    Flush,
    FromEngine,
    NewAddresses,
    Ready,
    Records,
    SkippedAddresses,
    assert_never,
)
from .classification import export_classifications
from .counters import RunCounters
from .errors import WorkerError
from .settings import EnrichConfig
from .sightings import REMEMBER_SECONDS, Expiries, Refused, Sightings, split_news
from .transport import Transport
from .worker_start import Restarts

__all__ = ["Collector"]

logger = logging.getLogger(__name__)

Deliver = Callable[[list[dict[str, Any]]], None]

#: New addresses go to the engine at once, then, while they keep coming, at most once
#: in this many seconds (at the host's next call): a burst (a log read at full speed)
#: is a few messages, not one per chunk, each a pipe write and a wake-up of the worker
#: that the kernel may run on the host's own core. Whois answers far slower than this.
_SEND_EVERY: Final = 0.05
#: How long a batch run's :meth:`Collector.finish` waits for work that shows no sign of moving.
_QUIET_SECONDS: Final = 10.0
#: The longest :meth:`Collector.finish` sleeps on the pipe before it looks at its counters
#: again: a record that arrives wakes it at once.
_FINISH_LOOK_EVERY: Final = 0.25


class Collector:
    """One run of the enrichment plugin beside a host's ingest.

    :param config: the validated settings.
    :param deliver: called on the host's thread with ready records (as dicts).
    :param transport: the host's end of the engine (:func:`.transport.open_transport`).
    :param reopen: how to start another engine; a long-lived run given it survives its
        worker: a worker that dies is replaced, and the addresses it had not answered
        are handed to the new one.
    """

    def __init__(
        self,
        config: EnrichConfig,
        deliver: Deliver,
        transport: Transport,
        reopen: Callable[[], Transport] | None = None,
        others: Callable[[], RunCounters] | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self._reopen = reopen
        self._restarts = Restarts()
        #: what the engines of earlier workers of this run counted
        self._earlier = RunCounters()
        self._counting = threading.Lock()
        self._deliver_fn = deliver
        self._sightings = Sightings()
        #: what was delivered per address: in a long-lived run a changed record
        #: (pending resolved, expired refreshed) is delivered again; a batch run
        #: delivers each address once and keeps no signature (``""``)
        self._delivered: dict[str, str] = {}
        self._expiries = Expiries(config.retry_interval, config.working_set)
        self._remembered_since = clock.monotonic()
        #: new addresses not handed on yet (a burst), and when the next message may go
        self._held: list[str] = []
        self._next_send = 0.0
        #: a batch run's collected addresses whose record has not been delivered
        self._awaited = 0
        self._stats = RunCounters()
        self._remote = RunCounters()
        self._done = False
        self._ending = False
        self._interrupted = False
        self._metrics: Any = None
        if config.metrics_listen and config.long_lived:
            from .metrics import serve_run_metrics  # prometheus_client: only when asked

            snapshot = self.stats if others is None else (lambda: self.stats() + others())
            self._metrics = serve_run_metrics(config.metrics_listen, snapshot)

    # -- the host's thread ----------------------------------------------------------

    def ingest(self, events: Sequence[Mapping[str, Any]]) -> Refused:
        """Collect the source addresses of ``events``; return the refused ones (index, why)."""
        if not isinstance(events, list | tuple):  # read twice when some are refused
            events = list(events)
        if self.config.long_lived:
            self._forget()
        refused, usable, skipped = self._sightings.take(events)
        self._collected(len(events), refused, usable, skipped)
        return refused

    def _collected(
        self,
        events: int,
        refused: Refused,
        usable: list[str],
        skipped: list[str],
    ) -> None:
        """Count a chunk, hand its new addresses on, and deliver what is ready."""
        if usable or skipped:
            delivered = self._delivered
            self._awaited += sum(ip not in delivered for ip in (*usable, *skipped))
        self._stats.events += events
        if refused:
            self._stats.bad_src_ip += len(refused)
        if usable:
            self._stats.new_ips += len(usable)
            self._held.extend(usable)
        if self._held and time.monotonic() >= self._next_send:
            self._send_held()
        if skipped:
            self.transport.send(SkippedAddresses(skipped))
        self._handle(self.transport.poll())

    def _send_held(self) -> None:
        """Hand the new addresses held back on to the engine (before any other message)."""
        if self._held:
            held, self._held = self._held, []
            self.transport.send(NewAddresses(held))
            self._next_send = time.monotonic() + _SEND_EVERY

    def _forget(self) -> None:
        """What a long-lived run forgets before it looks at a chunk."""
        self._forget_if_due()
        self._forget_expired()

    def _forget_if_due(self) -> None:
        """In a long-lived run, start remembering afresh every hour or at the working set.

        Memory stays bounded by configuration; an address seen again afterwards is
        handed on again, and the engine serves it from the store or refreshes it.
        """
        full = len(self._sightings) > self.config.working_set
        if full or clock.monotonic() - self._remembered_since > REMEMBER_SECONDS:
            self._sightings = Sightings()
            self._expiries = Expiries(self.config.retry_interval, self.config.working_set)
            self._remembered_since = clock.monotonic()
        while len(self._delivered) > self.config.working_set:
            del self._delivered[next(iter(self._delivered))]

    def _forget_expired(self) -> None:
        """Forget the addresses whose delivered record expired: seen again, it is refreshed."""
        for ip in self._expiries.expired():
            self._sightings.forget(ip)

    def checkpoint(self) -> None:
        """Ask for a flush of partly filled batches; deliver what is ready. Does not wait."""
        self._send_held()
        self.transport.send(Flush())
        self._handle(self.transport.poll())

    def finish(self) -> None:
        """A batch run's wait before its end: deliver while the run's work goes on.

        :meth:`end` returns within ``shutdown_timeout`` whatever the network does; a
        batch host that wants every answer the network gives calls this first. It
        returns once every collected address has its record, or when the work stops
        moving (no batch in flight, no other process answering, no count changing
        for a while), or when the host is interrupted. It sleeps on the engine's
        pipe, not on a timer: records are delivered as soon as they arrive, so the
        engine is never held up by a full pipe. What waits for a fuller batch is
        flushed at once, and again every second while nothing is in flight.
        """
        if self._done or self.config.long_lived:
            return
        self._send_held()
        quiet_since = time.monotonic()
        next_flush = 0.0
        last: tuple[int, ...] | None = None
        while not self._interrupted and not self._done:
            stats = self.stats()
            if stats.outstanding <= 0 and stats.backlog <= 0:
                return
            now = time.monotonic()
            state = (stats.outstanding, stats.backlog, stats.delivered, stats.resolved)
            if stats.in_flight_batches or stats.waiting_elsewhere or state != last:
                quiet_since = now
            elif now - quiet_since > _QUIET_SECONDS:
                return  # nothing moves: the end settles the rest
            # The first flush goes at once: the host has sent everything, so what waits in
            # the engine for a fuller batch waits for nothing. Later ones go while no batch
            # is out, for what other processes' leases gave back.
            if now >= next_flush and (last is None or not stats.in_flight_batches):
                self.transport.send(Flush())
                next_flush = now + 1.0
            last = state
            self._handle(self.transport.wait(_FINISH_LOOK_EVERY))

    def idle(self, seconds: float) -> bool:
        """Wait on the engine for ``seconds`` (the host has no input), delivering what comes.

        Returns whether it waited (not once the engine is done or the run interrupted).
        """
        if self._done or self._interrupted:
            return False
        deadline = time.monotonic() + seconds
        self._send_held()
        while not self._done and not self._interrupted:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._handle(self.transport.wait(left))
        return True

    def interrupt(self) -> None:
        """The host is stopping (a signal): the end waits at most ``shutdown_timeout``.

        Safe to call from a signal handler: it only sets a flag.
        """
        self._interrupted = True

    def end(self) -> RunCounters:
        """Finish every batch, deliver, and return the run's counters. Ending twice is harmless.

        Returns within ``shutdown_timeout`` whatever the network does: then the
        engine stops asking it, and what it leased stays pending in the store (at
        once once :meth:`interrupt` was called). What is not resolved by then is
        reported pending. A batch host that wants every answer it can get calls
        :meth:`finish` first.
        """
        if self._done:
            return self.stats()
        self._ending = True
        transport = self.transport
        started = time.monotonic()
        # The worker's last grace (abandon) is inside the bound, not after it.
        grace = min(1.0, self.config.shutdown_timeout / 4)
        deadline = started + self.config.shutdown_timeout - grace
        stopping_at: float | None = None
        try:
            self._send_held()
            transport.send(End())
            while not self._done:
                if self._interrupted and stopping_at is None:
                    stopping_at = time.monotonic()
                    deadline = min(deadline, stopping_at + self.config.shutdown_timeout)
                    self._handle(transport.abandon(max(0.0, deadline - time.monotonic())))
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning(
                        "enrichment did not finish within shutdown_timeout (%.0fs); "
                        "the rest stays pending for the next run",
                        time.monotonic() - started,
                    )
                    self._interrupted = True  # cut short, as if told to stop
                    self._handle(transport.abandon(grace))
                    break
                self._handle(transport.wait(min(left, 0.5)))
        finally:
            self._done = True
            transport.close()
            if self._metrics is not None:
                from .metrics import stop_serving

                stop_serving(self._metrics)
                self._metrics = None
        return self.stats()

    def _handle(self, messages: list[FromEngine]) -> None:
        """Act on what the engine sent: deliver records, keep counters, raise its errors."""
        for message in messages:
            match message:
                case Records():
                    if message.counters is not None:
                        self._remote = message.counters
                    self._deliver(message.records, message.repeats, message.stale)
                case Done():
                    self._remote = message.counters
                    self._done = True
                case Ready():
                    logger.debug("the enrichment engine is ready")
                case Failed():
                    self._done = True
                    raise message.error()
                case Exited():
                    if self._done:
                        continue
                    self._done = True
                    # A long-lived run's worker stopped by someone else (``kill``) while
                    # its host goes on is replaced like one that crashed.
                    alone = self.config.long_lived and not self._ending
                    if self._interrupted or (message.code in STOPPED_EXITS and not alone):
                        self._interrupted = True
                        continue
                    self._stats.errors += 1
                    if self._restart(message.code):
                        return  # what the old worker sent after its exit is gone with it
                    raise WorkerError(
                        f"the enrichment worker exited with status {message.code} before "
                        "the end; what it had not resolved stays pending in the store"
                    )
                case _:
                    assert_never(message)

    def _restart(self, code: int) -> bool:
        """Start a new worker after the last one died (long-lived runs); whether it did.

        The addresses handed on and not answered are handed to the new one (what the
        dead worker had leased is taken over: its process is gone); a few a window.
        """
        if self._reopen is None or not self.config.long_lived or self._ending:
            return False
        if not self._restarts.take():  # a worker that cannot live ends the run after all
            return False
        logger.warning("the enrichment worker exited with status %s; starting a new one", code)
        with contextlib.suppress(Exception):
            self.transport.close(0.0)
        self.transport = self._reopen()
        self._done = False
        with self._counting:  # a scrape never sees the old worker's counts twice
            self._earlier = self._earlier + self._remote.counted()
            self._remote = RunCounters()
        self._stats.worker_restarts += 1
        usable, skipped = self._sightings.unanswered(self._delivered)
        self._held = usable + self._held
        self._send_held()
        if skipped:  # never sent anywhere: the new engine only records them
            self.transport.send(SkippedAddresses(skipped))
        return True

    def _deliver(
        self, records: list[dict[str, Any]], repeats: tuple[str, ...], stale: bool
    ) -> None:
        """Each address once in a batch run; again in a long-lived one when it changed.

        ``repeats`` (the engine's word: this run delivered them as they are) are not
        delivered again, nor is a record this host delivered as it is; when they
        expire is noted all the same (:meth:`.Expiries.note`).
        """
        long_lived, delivered = self.config.long_lived, self._delivered
        news, known = split_news(records, repeats, delivered, long_lived=long_lived)
        canonical = self._sightings.addresses
        if known and long_lived:
            self._held += self._expiries.note(known, canonical, stale=stale)
        if not news:
            return
        for record, sign in news:
            ip = record["ip"]
            if delivered.pop(ip, None) is None and ip in canonical:
                self._awaited -= 1
            delivered[ip] = sign  # the newest last: the first to be forgotten
        ready = [record for record, _sign in news]
        export_classifications(ready)
        if long_lived:
            self._held += self._expiries.note(ready, canonical, stale=stale)
        self._stats.delivered += len(ready)
        self._deliver_fn(ready)

    @property
    def interrupted(self) -> bool:
        """Whether the run was cut short (the host stopping, or its end running out of time)."""
        return self._interrupted

    def stats(self) -> RunCounters:
        """A snapshot of the counters: the host side's, with the engine's added.

        After an interrupted end, every collected address without a delivered
        record counts as pending: it is pending in the store, or will be collected
        again from the logs on the next run. (A long-lived run's failures are retried:
        what is pending at its end is the gauge ``pending_now``.)
        """
        with self._counting:
            total = self._stats + self._earlier + self._remote
        if self.config.long_lived:
            return total
        total.outstanding = self._awaited
        if self._interrupted:
            total.pending += self._awaited
        return total
