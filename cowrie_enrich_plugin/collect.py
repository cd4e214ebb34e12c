"""The host's side of a run: collect addresses cheaply, hand them on, deliver what comes back.

On the host's thread, :meth:`Collector.ingest` costs a dictionary lookup per event;
an address seen for the first time is validated here (so that a refused ``src_ip``
can be named by file and line) and handed to the engine through the transport it
was given (:mod:`.transport`). Records come back and are delivered from inside the
host's own calls, on its thread, each address once.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any, Final

from . import clock
from .addresses import InvalidAddress, Usable, classify, is_usable_ipv4
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
from .settings import EnrichConfig
from .counters import RunCounters
from .errors import ConfigError, WorkerError
from .record import delivery_signature, parse_time
from .transport import Transport

__all__ = ["Collector"]

logger = logging.getLogger(__name__)

_MISSING: Final = object()
#: ``dict.get`` unbound: raises TypeError for anything but a dict, so the fast path
#: of :meth:`Collector.ingest` falls back to the careful one.
_DICT_GET: Final[Callable[[Any, str, object], object]] = dict.get
_MAX_REMEMBERED_INVALID: Final = 100_000

Deliver = Callable[[list[dict[str, Any]]], None]


#: How long a long-lived run remembers that it has handed an address on: seen again
#: after that, it goes to the engine again (which serves it from the store, refreshes
#: it, or retries it). One whose delivered record expired is forgotten at its expiry.
_RECHECK_SECONDS: Final = 3600.0
#: New addresses go to the engine at once, then, while they keep coming, at most once
#: in this many seconds (at the host's next call): a burst (a log read at full speed)
#: is a few messages, not one per chunk, each a pipe write and a wake-up of the worker.
_SEND_EVERY: Final = 0.02
#: A long-lived run starts at most this many new workers in this many seconds.
_MAX_RESTARTS: Final = 5
_RESTART_WINDOW: Final = 600.0
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
    ) -> None:
        self.config = config
        self.transport = transport
        self._reopen = reopen
        #: when the last workers were started again (a few a window, then give up)
        self._restarts: list[float] = []
        #: what the engines of earlier workers of this run counted
        self._earlier = RunCounters()
        self._counting = threading.Lock()
        self._deliver_fn = deliver
        self._seen: dict[object, str | None] = {}
        self._canonical: set[str] = set()
        self._invalid_remembered = 0
        #: the remembered values that are refused (a chunk holding none needs no scan)
        self._refusing: set[object] = set()
        #: what was delivered per address: in a long-lived run a changed record
        #: (pending resolved, expired refreshed) is delivered again
        self._delivered: dict[str, str] = {}
        #: a long-lived run's delivered records by expiry (a heap of (expiry, ip))
        self._expiring: list[tuple[float, str]] = []
        #: addresses asked again because their record expired on its way here
        self._asked_again: set[str] = set()
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
            from .metrics import serve_metrics

            try:
                self._metrics = serve_metrics(config.metrics_listen, self.stats)
            except OSError as exc:
                raise ConfigError(
                    f"metrics_listen = {config.metrics_listen!r}: cannot listen there "
                    f"({exc.strerror or exc})"
                ) from exc

    # -- the host's thread ----------------------------------------------------------

    def ingest(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]] | None:
        """Collect the source addresses of ``events``; return the refused ones (index, why).

        The common case runs in C: every ``src_ip`` pulled with ``dict.get``, the
        distinct values of the chunk looked up in the run's memory at once. Events
        that are not dicts and values that cannot be hashed take the careful path.
        """
        if not isinstance(events, list | tuple):  # read twice when some are refused
            events = list(events)
        if self.config.long_lived:
            self._forget()
        try:
            distinct = dict.fromkeys(map(_DICT_GET, events, repeat("src_ip"), repeat(_MISSING)))
        except TypeError:
            return self._ingest_each(events)
        seen = self._seen
        usable: list[str] = []
        skipped: list[str] = []
        verdicts: dict[object, str] = {}
        for raw in distinct:
            if raw in seen:
                continue
            reason = self._first_sight(raw, usable, skipped)
            if reason is not None:
                verdicts[raw] = reason
        if not self._refusing.isdisjoint(distinct):
            for raw in self._refusing.intersection(distinct):
                verdicts[raw] = str(seen[raw])
        refused = None
        if verdicts:  # rare: only now is each event's value needed again, by index
            raws = map(_DICT_GET, events, repeat("src_ip"), repeat(_MISSING))
            refused = [(i, verdicts[raw]) for i, raw in enumerate(raws) if raw in verdicts]
        self._collected(len(events), refused, usable, skipped)
        return refused

    def _ingest_each(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]] | None:
        """:meth:`ingest`, one event at a time (for events that are not all plain dicts)."""
        seen = self._seen
        refused: list[tuple[int, str]] | None = None
        usable: list[str] = []
        skipped: list[str] = []
        for index, event in enumerate(events):
            try:
                raw = event.get("src_ip", _MISSING)
            except AttributeError:
                verdict: str | None = "event is not an object"
            else:
                try:
                    verdict = seen[raw]
                except (KeyError, TypeError):  # first sight, or an unhashable value
                    verdict = self._first_sight(raw, usable, skipped)
            if verdict is not None:
                if refused is None:
                    refused = []
                refused.append((index, verdict))
        self._collected(len(events), refused, usable, skipped)
        return refused

    def _collected(
        self,
        events: int,
        refused: list[tuple[int, str]] | None,
        usable: list[str],
        skipped: list[str],
    ) -> None:
        """Count a chunk, hand its new addresses on, and deliver what is ready."""
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
        full = len(self._seen) > self.config.working_set
        if full or clock.monotonic() - self._remembered_since > _RECHECK_SECONDS:
            self._seen = {}
            self._canonical = set()
            self._expiring = []
            self._asked_again = set()
            self._refusing = set()
            self._invalid_remembered = 0
            self._remembered_since = clock.monotonic()
        while len(self._delivered) > self.config.working_set:
            del self._delivered[next(iter(self._delivered))]

    def _forget_expired(self) -> None:
        """Forget the addresses whose delivered record expired: seen again, it is refreshed."""
        expiring = self._expiring
        now = clock.wall() if expiring else 0.0
        while expiring and expiring[0][0] <= now:
            _expiry, ip = heapq.heappop(expiring)
            self._seen.pop(ip, None)
            self._canonical.discard(ip)

    def _note_expiries(self, records: list[dict[str, Any]], *, repeated: bool) -> list[str]:
        """Note when the records of remembered addresses expire (those are forgotten then).

        A fresh record is forgotten at its expiry, however soon: a sighting after that
        refreshes it. One the engine repeats expired (its refresh failed, or waits out
        its backoff) is forgotten after ``retry_interval``, not at every sighting. One
        that is news and arrives expired expired on its way here, while a sighting
        meant to refresh it may have been taken for it: its address is returned, to be
        asked again at once.
        """
        expiring, remembered, asked_again = self._expiring, self._canonical, self._asked_again
        now = clock.wall()
        soonest = now + self.config.retry_interval
        again: list[str] = []
        for record in records:
            expires = parse_time(record["expires_at"])
            ip = record["ip"]
            if expires is None or ip not in remembered:
                continue
            at = expires.timestamp()
            if at > now:
                asked_again.discard(ip)
                heapq.heappush(expiring, (at, ip))
            elif repeated or ip in asked_again:
                # Asked again once already: a TTL shorter than the way here would
                # make every answer news and expired; it waits like a failed refresh.
                asked_again.discard(ip)
                heapq.heappush(expiring, (soonest, ip))
            else:
                asked_again.add(ip)
                again.append(ip)
        if len(expiring) > 4 * self.config.working_set:  # a bound, whatever comes
            self._expiring = heapq.nsmallest(2 * self.config.working_set, expiring)
        return again

    def _first_sight(self, raw: object, usable: list[str], skipped: list[str]) -> str | None:
        """Judge a value not seen before this run; remember it; queue a new address."""
        if is_usable_ipv4(raw):  # the common case, without building a verdict object
            self._seen[raw] = None
            if raw not in self._canonical:
                self._canonical.add(raw)
                usable.append(raw)
                self._awaited += raw not in self._delivered
            return None
        if raw is _MISSING:
            reason: str | None = "event has no src_ip"
        else:
            verdict = classify(raw)
            if isinstance(verdict, InvalidAddress):
                reason = verdict.reason
            else:
                reason = None
                if verdict.ip not in self._canonical:
                    self._canonical.add(verdict.ip)
                    (usable if isinstance(verdict, Usable) else skipped).append(verdict.ip)
                    self._awaited += verdict.ip not in self._delivered
        try:
            if reason is None or self._invalid_remembered < _MAX_REMEMBERED_INVALID:
                self._seen[raw] = reason
                if reason is not None:
                    self._refusing.add(raw)
                    self._invalid_remembered += 1
        except TypeError:
            pass  # an unhashable value (a list, an object) cannot be remembered
        return reason

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
        engine is never held up by a full pipe. Partly filled batches are flushed
        while nothing is in flight.
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
            last = state
            if not stats.in_flight_batches and now >= next_flush:
                self.transport.send(Flush())
                next_flush = now + 1.0
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
                self._metrics.shutdown()
                self._metrics.server_close()
                self._metrics = None
        return self.stats()

    def _handle(self, messages: list[FromEngine]) -> None:
        """Act on what the engine sent: deliver records, keep counters, raise its errors."""
        for message in messages:
            match message:
                case Records():
                    if message.counters is not None:
                        self._remote = message.counters
                    self._deliver(message.records, message.repeats)
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
        dead worker had leased is taken over: its process is gone). At most
        ``_MAX_RESTARTS`` in ``_RESTART_WINDOW`` seconds: a worker that cannot live
        ends the run after all.
        """
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < _RESTART_WINDOW]
        if self._reopen is None or not self.config.long_lived or self._ending:
            return False
        if len(self._restarts) >= _MAX_RESTARTS:
            return False
        self._restarts.append(now)
        logger.warning("the enrichment worker exited with status %s; starting a new one", code)
        with contextlib.suppress(Exception):
            self.transport.close(0.0)
        self.transport = self._reopen()
        self._done = False
        with self._counting:  # a scrape never sees the old worker's counts twice
            self._earlier = self._earlier + self._remote.counted()
            self._remote = RunCounters()
        self._stats.worker_restarts += 1
        unanswered = [ip for ip in self._canonical if ip not in self._delivered]
        usable = [ip for ip in unanswered if isinstance(classify(ip), Usable)]
        self._held = usable + self._held
        self._send_held()
        skipped = [ip for ip in unanswered if not isinstance(classify(ip), Usable)]
        if skipped:  # never sent anywhere: the new engine only records them
            self.transport.send(SkippedAddresses(skipped))
        return True

    def _deliver(self, records: list[dict[str, Any]], repeats: tuple[str, ...] = ()) -> None:
        """Each address once in a batch run; again in a long-lived one when it changed.

        ``repeats`` (the engine's word: this run delivered them as they are) are not
        delivered again; when they expire is noted all the same.
        """
        if repeats:
            again = set(repeats)
            self._note_expiries([r for r in records if r["ip"] in again], repeated=True)
            records = [r for r in records if r["ip"] not in again]
        delivered = self._delivered
        signed = [(r, delivery_signature(r)) for r in records]
        if self.config.long_lived:
            news = [(r, sign) for r, sign in signed if delivered.get(r["ip"]) != sign]
        else:
            news = [(r, sign) for r, sign in signed if r["ip"] not in delivered]
        if not news:
            return
        canonical = self._canonical
        for record, sign in news:
            ip = record["ip"]
            if delivered.pop(ip, None) is None and ip in canonical:
                self._awaited -= 1
            delivered[ip] = sign  # the newest last: the first to be forgotten
        ready = [record for record, _sign in news]
        if self.config.long_lived:
            self._held.extend(self._note_expiries(ready, repeated=False))
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
