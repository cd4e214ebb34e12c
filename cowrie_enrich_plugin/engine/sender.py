"""Sending whois batches: lease, ask on a connection slot, persist, hand the records on.

:class:`WhoisSender` does to one batch what :mod:`.flusher` decided to send: it
leases the addresses (those another process holds are waited for, see
:mod:`.foreign`), asks whois on one of :mod:`.inflight`'s connection slots and
persists the answer on the store thread, then hands the records to the network
sources or out. A batch the database cannot record is not sent; once the host is
going away, nothing more is sent (it is queued for the next run).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from ..errors import StoreError
from ..record import EnrichmentRecord, Status
from ..slices import balanced_slices, before_last_round, slices
from ..sources.cymru.client import BatchResult
from .emission import Emission
from .foreign import ForeignLeases
from .gate import StoreGate
from .inflight import Batches
from .sections import NetworkAsking
from .steps import Enricher, FinishedBatch

__all__ = ["WhoisSender"]

logger = logging.getLogger(__name__)

#: Failed batches in a row from which whois is taken to be down (its first answer
#: after that makes the whole queue due).
_FAILING: Final = 2
#: The most answered batches persisted in one go: four (2,000 addresses) cost a quarter
#: to a third less per address than one at a time; more would make the first batch's
#: records wait longer for the last one's.
_SAVED_TOGETHER: Final = 4


class WhoisSender:
    """Sends one engine's whois batches.

    :param stopping: once set, nothing more is sent (it is queued instead).
    """

    def __init__(
        self,
        enricher: Enricher,
        batches: Batches,
        gate: StoreGate,
        emit: Emission,
        asking: NetworkAsking,
        foreign: ForeignLeases,
        stopping: threading.Event,
    ) -> None:
        self._enricher = enricher
        self._batches = batches
        self._gate = gate
        self._emit = emit
        self._asking = asking
        self._foreign = foreign
        self._stopping = stopping
        #: the stored (stale) records of addresses to ask again: served if unanswered
        self.stale: dict[str, EnrichmentRecord] = {}
        #: the same, of the addresses in a batch out (kept for a batch taken back)
        self._out_previous: dict[str, EnrichmentRecord] = {}
        #: batches whois answered (or failed), in order, waiting for the store thread
        self._answered: deque[FinishedBatch] = deque()
        #: called now and then while every connection slot is taken
        self.on_idle: Callable[[], None] | None = None
        self._lock = threading.Lock()
        # Failed batches in a row; whois "fails" from _FAILING of them on (one batch
        # timing out now and then is not an outage). A long-lived run starts as if it
        # failed: its first answer also ends the backoffs an earlier run left.
        self._failed_in_a_row = _FAILING if enricher.config.long_lived else 0
        #: set when whois answered again after failing: the queue is due now
        self.recovered = threading.Event()
        self.errors = 0
        #: addresses delivered pending that the steps never saw fail (left to other
        #: processes, or answered but not saved)
        self.uncounted_pending = 0

    def counts(self) -> tuple[int, int]:
        """(errors, pending records the steps did not count), read together."""
        with self._lock:
            return self.errors, self.uncounted_pending

    def count(self, *, errors: int = 0, pending: int = 0) -> None:
        """Add to the run's errors and to the pending records the steps did not count."""
        with self._lock:
            self.errors += errors
            self.uncounted_pending += pending

    def send(self, ips: list[str]) -> None:
        """Send ``ips`` in batches of at most ``batch_size``, whatever their origin.

        Full batches go one by one, each leased just before it waits for a connection
        slot. The last round on the connections (one to ``concurrency`` batches) is
        leased together, joined (when it ends short of a full batch) by the batches
        no connection has started yet, and sent with its own last round of even
        sizes (:func:`.balanced_slices`): 500 waiting and 83 more go as 292 and 291,
        and end together. Addresses taken over from an exited process, or coming
        back from another process's lease, go out like any others.
        """
        config = self._enricher.config
        parts = list(slices(list(dict.fromkeys(ips)), config.batch_size))
        full = before_last_round(len(parts), config.concurrency)
        for part in parts[:full]:
            mine, previous = self._lease(list(part))
            if mine:
                self._ask(mine, previous)
        leased: list[str] = []
        previous = {}
        for part in parts[full:]:
            mine, before = self._lease(list(part))
            leased.extend(mine)
            previous.update(before)
        if not leased:
            return
        # Full batches alone would be sliced again as they are: nothing to even out.
        short = len(leased) % config.batch_size
        waiting = self._batches.take_back() if short and not self._stopping.is_set() else []
        with self._lock:
            for batch in waiting:
                previous.update(
                    (ip, self._out_previous[ip]) for ip in batch if ip in self._out_previous
                )
        together = [ip for batch in waiting for ip in batch] + leased
        for part in balanced_slices(together, config.batch_size, config.concurrency):
            batch = list(part)
            self._ask(batch, {ip: previous[ip] for ip in batch if ip in previous})

    def _lease(self, batch: list[str]) -> tuple[list[str], dict[str, EnrichmentRecord]]:
        """Lease a batch: the addresses this process won, and their stale records.

        When the database cannot record the batch as pending, nothing is won: its
        addresses are reported pending, unsaved, and are collected again next run.
        Once the host is going away, nothing more is sent (it stays queued).
        """
        if self._stopping.is_set():
            try:  # queued in the store: the next start asks for them
                self._enricher.queue(batch)
            except StoreError as exc:
                self._gate.failed(exc, len(batch))  # counted as unsaved
            else:
                self.count(pending=len(batch))
            pending = self._enricher.pending_record
            self._emit((self.stale.get(ip) or pending(ip) for ip in batch), stale=True)
            return [], {}
        if self._gate.paused():
            self._not_recorded(batch)
            return [], {}
        # One of this engine's batches holds some already: their answer is on the way
        # (the loop's thread alone adds to the batches: no one else can in between).
        out = self._batches.busy_among(batch)
        if out:
            batch = [ip for ip in batch if ip not in out]
            for ip in out:
                self.stale.pop(ip, None)
            if not batch:
                return [], {}
        try:
            mine, theirs = self._enricher.claim(batch)
        except StoreError as exc:
            self._gate.failed(exc)
            self._not_recorded(batch)
            return [], {}
        for ip in theirs:
            self._foreign.add(ip, self.stale.get(ip))
        return mine, {ip: self.stale.pop(ip) for ip in mine if ip in self.stale}

    def _ask(self, mine: list[str], previous: dict[str, EnrichmentRecord]) -> None:
        """Hand a leased batch to a connection slot (blocking while too many are out)."""
        with self._lock:
            self._out_previous.update(previous)
        self._batches.ask(
            mine,
            lambda: self._answered.append((mine, self._fetch(mine), previous)),
            lambda _none: self._store(),
            self.on_idle,  # the host hears how it goes while every slot is taken
        )

    def _not_recorded(self, batch: list[str]) -> None:
        self._gate.not_recorded(len(batch))
        stale, pending = self.stale, self._enricher.pending_record
        self._emit((stale.pop(ip) if ip in stale else pending(ip) for ip in batch), stale=True)

    def _fetch(self, batch: list[str]) -> BatchResult:
        """On a connection slot: ask whois (the store thread persists the result)."""
        try:
            return self._enricher.ask_whois(batch)  # network trouble is in the result
        except Exception as exc:  # a bug, not the network: the batch stays pending
            logger.exception("a whois batch of %d address(es) failed", len(batch))
            return BatchResult(unresolved=dict.fromkeys(batch, f"internal error: {exc}"))

    @property
    def failing(self) -> bool:
        """Whether whois fails: its last batches answered nothing."""
        with self._lock:
            return self._failed_in_a_row >= _FAILING

    def _note_whois(self, result: BatchResult) -> None:
        """Whois answered or failed; its first answer after failing ends every backoff.

        The per-address backoff spares whois while it keeps failing; once it answers
        again, the queue it left is due at once (asked in full batches, at the usual
        concurrency) rather than each address waiting out its own backoff.
        """
        with self._lock:
            recovered = self._failed_in_a_row >= _FAILING and bool(result.answers)
            if result.answers:
                self._failed_in_a_row = 0
            elif result.unresolved and not result.stopped:
                self._failed_in_a_row += 1
        if not recovered or not self._enricher.config.long_lived:
            return
        try:
            waited = self._enricher.end_whois_backoff()
        except StoreError as exc:
            self._gate.failed(exc)
            return
        if waited:
            logger.warning("whois answers again: %d queued address(es) are asked now", waited)
        self.recovered.set()

    def _store(self) -> None:
        """Persist whois's answers (their leases end here); the network sources follow.

        Runs on the store thread once per batch answered, and persists up to
        :data:`_SAVED_TOGETHER` of the batches answered by then, oldest first, in one
        transaction; a later run finds its own batch saved already, or saves it with
        those answered after it.
        """
        batches: list[FinishedBatch] = []
        with contextlib.suppress(IndexError):
            while len(batches) < _SAVED_TOGETHER:
                batches.append(self._answered.popleft())
        if not batches:
            return
        try:
            each, saved = self._persist(batches)
        finally:
            with self._lock:  # before answered: the loop may ask one of them again then
                for batch, _result, _previous in batches:
                    for ip in batch:
                        self._out_previous.pop(ip, None)
            for batch, _result, _previous in batches:
                self._batches.answered(batch)
        failure: Exception | None = None
        for _batch, result, _previous in batches:
            try:  # after the save: whois answering again ends its backoffs too
                self._note_whois(result)
            except Exception as exc:
                if failure is None:
                    failure = exc
        for records in each:  # each batch handed on, whatever became of the one before
            try:
                if saved and self._enricher.network.names and not self._stopping.is_set():
                    self._asking.submit(records)
                else:  # what whois did not answer, or the store did not keep, goes as it was
                    self._emit(records, stale=True)
            except Exception as exc:
                if failure is None:
                    failure = exc
        if failure is not None:
            raise failure

    def _persist(self, batches: list[FinishedBatch]) -> tuple[list[list[EnrichmentRecord]], bool]:
        """Save ``batches``: each one's records, and whether they were saved."""
        try:
            return self._enricher.finish_batches(batches), True
        except Exception as exc:
            # Leased and recorded pending before it was sent: the next run retries it.
            if isinstance(exc, StoreError):
                self._gate.failed(exc)
            else:
                size = sum(len(batch) for batch, _result, _previous in batches)
                logger.exception("saving %d address(es) failed", size)
        pending = self._enricher.pending_record
        each = [[old.get(ip) or pending(ip) for ip in batch] for batch, _result, old in batches]
        # Still pending in the store: the next run asks again.
        self.count(
            errors=len(batches),  # one a batch, as when each was saved alone
            pending=sum(r.status is Status.PENDING for records in each for r in records),
        )
        return each, False
