"""The ingest pipeline: collect on the host's thread, enrich beside it, deliver on it.

Three kinds of thread take part:

- the **host's thread** calls :meth:`IngestPipeline.ingest`, ``checkpoint`` and
  ``end``. ``ingest`` costs a dictionary lookup per event; an address seen for the
  first time is validated and put on a bounded queue (a full queue blocks the host:
  backpressure). Ready records are delivered from inside these calls.
- the **flusher** takes addresses off the queue, looks them up in the cache in
  bulk, and sends what is unknown or stale in batches: when a batch is full, when
  ``flush_interval`` has passed since the oldest waiting address arrived, at a
  checkpoint, and at the end. Before a batch is sent its addresses are leased and
  recorded ``pending`` in the store, so a kill at any point loses nothing.
- up to ``concurrency`` **batch workers** ask the whois server, merge with
  MaxMind, persist, and put the records in the outbox.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Final

from .addresses import InvalidAddress, Usable, classify
from .enricher import Enricher
from .record import EnrichmentRecord, Status

__all__ = ["IngestPipeline", "RunStats"]

logger = logging.getLogger(__name__)

_FLUSH: Final = object()
_END: Final = object()
_MISSING: Final = object()
_MAX_REMEMBERED_INVALID: Final = 100_000
_FOREIGN_POLL: Final = 0.5

Deliver = Callable[[list[dict[str, Any]]], None]


@dataclass
class RunStats:
    """The counters of one run, as ``cowrie_ingest_end`` returns them."""

    events: int = 0
    bad_src_ip: int = 0
    new_ips: int = 0
    skipped: int = 0
    cache_hits: int = 0
    stale_refreshed: int = 0
    batches_sent: int = 0
    whois_connections: int = 0
    ips_sent: int = 0
    retries: int = 0
    failed_batches: int = 0
    circuit_opened: int = 0
    resolved: int = 0
    pending: int = 0
    leased_elsewhere: int = 0
    delivered: int = 0
    queued_now: int = 0
    in_flight_batches: int = 0
    errors: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counters as a plain mapping."""
        return asdict(self)


class IngestPipeline:
    """One run of the enrichment plugin beside a host's ingest.

    :param enricher: the enrichment steps (store, MaxMind, whois client).
    :param deliver: called on the host's thread with ready records (as dicts).
    :param queue_size: addresses that may wait for the flusher before the host is slowed.
    :param resume_pending: also retry what earlier runs left pending.
    """

    def __init__(
        self,
        enricher: Enricher,
        deliver: Deliver,
        *,
        queue_size: int = 20_000,
        resume_pending: bool = True,
    ) -> None:
        self.enricher = enricher
        self.config = enricher.config
        self._deliver_fn = deliver
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._seen: dict[object, str | None] = {}
        self._canonical: set[str] = set()
        self._invalid_remembered = 0
        self._outbox: deque[dict[str, Any]] = deque()
        self._delivered: set[str] = set()
        self._stats = RunStats()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._foreign: dict[str, EnrichmentRecord | None] = {}
        self._in_flight = threading.BoundedSemaphore(max(2, 2 * enricher.client.concurrency))
        self._futures: set[Future[None]] = set()
        self._pool = ThreadPoolExecutor(enricher.client.concurrency, thread_name_prefix="cymru")
        self._resume_pending = resume_pending
        self._worker = threading.Thread(target=self._run, name="cowrie-enrich-flusher", daemon=True)
        self._ended = False

    # -- the host's thread ----------------------------------------------------------

    def start(self) -> None:
        """Start the flusher; queue what earlier runs left pending."""
        self._worker.start()
        if self._resume_pending:
            for ip in self.enricher.store.due_pending():
                if ip not in self._canonical:
                    self._canonical.add(ip)
                    self._queue.put(ip)

    def ingest(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]] | None:
        """Collect the source addresses of ``events``; return the refused ones (index, why)."""
        seen = self._seen
        refused: list[tuple[int, str]] | None = None
        for index, event in enumerate(events):
            try:
                raw = event.get("src_ip", _MISSING)
            except AttributeError:
                verdict: str | None = "event is not an object"
            else:
                try:
                    verdict = seen[raw]
                except (KeyError, TypeError):  # first sight, or an unhashable value
                    verdict = self._first_sight(raw)
            if verdict is not None:
                if refused is None:
                    refused = []
                refused.append((index, verdict))
        with self._lock:
            self._stats.events += len(events)
            if refused:
                self._stats.bad_src_ip += len(refused)
        if self._outbox:
            self._deliver_ready()
        return refused

    def _first_sight(self, raw: object) -> str | None:
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
                    if isinstance(verdict, Usable):
                        with self._lock:
                            self._stats.new_ips += 1
                        self._queue.put(verdict.ip)
                    else:
                        self._queue.put(self.enricher.skipped_record(verdict.ip))
        try:
            if reason is None or self._invalid_remembered < _MAX_REMEMBERED_INVALID:
                self._seen[raw] = reason
                self._invalid_remembered += reason is not None
        except TypeError:
            pass  # an unhashable value (a list, an object) cannot be remembered
        return reason

    def checkpoint(self) -> None:
        """Ask for a flush of partly filled batches; deliver what is ready. Does not wait."""
        self._queue.put(_FLUSH)
        self._deliver_ready()

    def end(self, timeout: float | None = None) -> RunStats:
        """Flush everything, wait for every batch, deliver, and return the run's counters.

        Returns within ``timeout`` seconds (default: a bound derived from the
        configuration and the amount of work); what is not resolved by then is
        recorded pending in the store.
        """
        if not self._ended:
            self._ended = True
            self._queue.put(_END)
            bound = timeout if timeout is not None else self._end_bound()
            deadline = time.monotonic() + bound
            while not self._done.wait(0.1):
                self._deliver_ready()
                if time.monotonic() > deadline:
                    logger.error(
                        "enrichment did not finish within %.0fs; the rest stays pending", bound
                    )
                    break
            self._pool.shutdown(wait=self._done.is_set(), cancel_futures=not self._done.is_set())
        self._deliver_ready()
        return self.stats()

    def _end_bound(self) -> float:
        cfg = self.config
        batches = 2 + self._queue.qsize() // cfg.batch_size + len(self._futures)
        per_batch = cfg.timeout * cfg.retries + 30.0 * cfg.retries
        return per_batch * (1 + batches / max(1, cfg.concurrency)) + self.enricher.lease_seconds

    def _deliver_ready(self) -> None:
        ready: list[dict[str, Any]] = []
        while self._outbox:
            record = self._outbox.popleft()
            if record["ip"] in self._delivered:
                continue
            self._delivered.add(record["ip"])
            ready.append(record)
        if ready:
            with self._lock:
                self._stats.delivered += len(ready)
            self._deliver_fn(ready)

    def stats(self) -> RunStats:
        """A snapshot of the counters, with the whois client's and the enricher's merged in."""
        client = self.enricher.client.stats
        enrich = self.enricher.stats
        with self._lock:
            stats = RunStats(**self._stats.to_dict())
        stats.cache_hits = enrich.cache_hits
        stats.stale_refreshed = enrich.stale
        stats.resolved = enrich.resolved
        stats.pending += enrich.pending
        stats.leased_elsewhere = enrich.leased_elsewhere
        stats.batches_sent = client.batches
        stats.whois_connections = client.connections
        stats.ips_sent = client.ips_sent
        stats.retries = client.retries
        stats.failed_batches = client.failed_batches
        stats.circuit_opened = client.circuit_opened
        stats.queued_now = self._queue.qsize()
        stats.in_flight_batches = len(self._futures)
        return stats

    # -- the flusher ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._flush_loop()
        except Exception:
            logger.exception("the enrichment flusher failed; unsent addresses stay pending")
            with self._lock:
                self._stats.errors += 1
        finally:
            self._wait_for_batches()
            self._done.set()

    def _flush_loop(self) -> None:
        interval = self.config.flush_interval
        size = self.config.batch_size
        new: list[str] = []
        skipped: list[EnrichmentRecord] = []
        to_fetch: list[str] = []
        stale: dict[str, EnrichmentRecord] = {}
        oldest: float | None = None
        while True:
            timeout = interval if oldest is None else max(0.0, oldest + interval - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            force = item is _FLUSH or item is _END
            if isinstance(item, str):
                new.append(item)
            elif isinstance(item, EnrichmentRecord):
                skipped.append(item)
            if oldest is None and (new or skipped):
                oldest = time.monotonic()
            due = oldest is not None and time.monotonic() - oldest >= interval
            if len(new) >= size or len(skipped) >= size or ((force or due) and (new or skipped)):
                self._handle_new(new, skipped, to_fetch, stale)
                new, skipped = [], []
            while len(to_fetch) >= size:
                batch, to_fetch = to_fetch[:size], to_fetch[size:]
                self._send(batch, stale)
            if (force or due) and to_fetch:
                self._send(to_fetch, stale)
                to_fetch = []
            if force or due:
                self._poll_foreign(to_fetch)
                if to_fetch:
                    self._send(to_fetch, stale)
                    to_fetch = []
            if not new and not skipped and not to_fetch:
                oldest = None
            elif due or force:
                oldest = time.monotonic()
            if item is _END:
                self._finish_foreign(stale)
                return

    def _handle_new(
        self,
        new: list[str],
        skipped: list[EnrichmentRecord],
        to_fetch: list[str],
        stale: dict[str, EnrichmentRecord],
    ) -> None:
        """Cache first: deliver fresh records, queue the rest for whois."""
        if skipped:
            self.enricher.store.put_records(skipped)
            self._emit(skipped)
            with self._lock:
                self._stats.skipped += len(skipped)
        if not new:
            return
        self.enricher.geo.refresh()
        view = self.enricher.look_in_cache(new)
        self._emit(view.fresh.values())
        stale.update(view.stale)
        to_fetch.extend(view.to_fetch)

    def _send(self, batch: list[str], stale: dict[str, EnrichmentRecord]) -> None:
        """Lease a batch, then hand it to a batch worker (blocking while too many are in flight)."""
        mine, theirs = self.enricher.claim(batch)
        for ip in theirs:
            self._foreign[ip] = stale.get(ip)
        if not mine:
            return
        previous = {ip: stale.pop(ip) for ip in mine if ip in stale}
        self._in_flight.acquire()
        future = self._pool.submit(self._fetch, mine, previous)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._batch_done)

    def _fetch(self, batch: list[str], previous: dict[str, EnrichmentRecord]) -> None:
        try:
            records = self.enricher.fetch_batch(batch, previous)
        except Exception:
            logger.exception(
                "a whois batch of %d address(es) failed; they stay pending", len(batch)
            )
            with self._lock:
                self._stats.errors += 1
            records = [previous.get(ip) or EnrichmentRecord(ip, Status.PENDING) for ip in batch]
        self._emit(records)

    def _batch_done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)
        self._in_flight.release()

    def _emit(self, records: Any) -> None:
        self._outbox.extend(record.to_dict() for record in records)

    def _wait_for_batches(self) -> None:
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending:
                return
            for future in pending:
                future.exception()

    # -- addresses leased by another process ----------------------------------------

    def _poll_foreign(self, to_fetch: list[str]) -> None:
        """Deliver foreign-leased addresses that got resolved; take over expired leases."""
        if not self._foreign:
            return
        ips = list(self._foreign)
        view = self.enricher.look_in_cache(ips)
        for ip, record in view.fresh.items():
            del self._foreign[ip]
            self._emit([record])
        for ip in view.to_fetch:
            to_fetch.append(ip)
        # Those that are claimable again go back to whois through ``to_fetch``; the
        # claim in ``_send`` returns them to ``_foreign`` if still held elsewhere.
        for ip in view.to_fetch:
            self._foreign.pop(ip, None)

    def _finish_foreign(self, stale: dict[str, EnrichmentRecord]) -> None:
        """At the end, wait (bounded by the lease time) for other processes' leases."""
        deadline = time.monotonic() + self.enricher.lease_seconds
        while self._foreign and time.monotonic() < deadline:
            time.sleep(_FOREIGN_POLL)
            to_fetch: list[str] = []
            self._poll_foreign(to_fetch)
            if to_fetch:
                self._send(to_fetch, stale)
            self._wait_for_batches()
        if not self._foreign:
            return
        stored = self.enricher.store.get_records(list(self._foreign))
        leftovers = [
            record or stored.get(ip) or EnrichmentRecord(ip, Status.PENDING)
            for ip, record in self._foreign.items()
        ]
        with self._lock:
            self._stats.pending += sum(r.status is Status.PENDING for r in leftovers)
        self._emit(leftovers)
        self._foreign.clear()
