"""The network sources' side of the engine: what each address in flight still lacks, and asking.

The flusher looks an address up in the store once; the network sources' fresh stored
sections and the sources it lacks are kept in :class:`Sections` until the address
is asked, then taken. :class:`NetworkAsking` asks on threads of its own, after whois's
answer is saved (whois's connection slots and leases never wait for it), persists
the sections and hands the merged records on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from .. import clock
from ..errors import StoreError
from ..record import EnrichmentRecord, SectionStatus, SourceSection, Status
from ..slices import slices
from .cache_view import CacheView
from .steps import Enricher

__all__ = ["NetworkAsking", "Sections", "with_every_section"]

logger = logging.getLogger(__name__)


class Sections:
    """The network sources' state of the addresses between the cache and their answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sections: dict[str, dict[str, SourceSection]] = {}
        self._needs: dict[str, tuple[str, ...]] = {}
        #: addresses whose Cymru answer is fresh but a network source must be asked
        self.partial: dict[str, EnrichmentRecord] = {}

    def remember(self, view: CacheView) -> None:
        """Keep what a look in the cache found, for the addresses that go on to a batch.

        Cache hits are done with: nothing is kept for them, so that memory is bounded
        by what is in flight.
        """
        going = [*view.to_fetch, *view.partial]
        with self._lock:
            for ip in going:
                if ip in view.sections:
                    self._sections[ip] = view.sections[ip]
                if ip in view.needs:
                    self._needs[ip] = view.needs[ip]
        self.partial.update(view.partial)

    def take(
        self, ips: Iterable[str]
    ) -> tuple[dict[str, tuple[str, ...]], dict[str, dict[str, SourceSection]]]:
        """(what each address lacks, its fresh stored sections), taken for one batch."""
        with self._lock:
            needs = {ip: self._needs.pop(ip) for ip in ips if ip in self._needs}
            cached = {ip: self._sections.pop(ip) for ip in ips if ip in self._sections}
        return needs, cached

    def take_partial(self) -> dict[str, EnrichmentRecord]:
        """The addresses waiting for the network sources alone, taken."""
        waiting, self.partial = self.partial, {}
        return waiting


def with_every_section(record: EnrichmentRecord, names: tuple[str, ...]) -> EnrichmentRecord:
    """``record`` with a section for each of ``names``: a missing one is marked pending."""
    have = dict(record.sections)
    if record.status is Status.SKIPPED or all(name in have for name in names):
        return record
    pending = SourceSection(SectionStatus.PENDING, error="not asked")
    return record.with_sections({name: have.get(name, pending) for name in names})


class NetworkAsking:
    """The network sources asked beside the flusher.

    Records gather until the largest batch a network source takes (GreyNoise's
    ``bulk_size`` may pass whois's 500), or until :meth:`flush`: the flusher's flush
    moments, ``flush_interval`` after the oldest arrived, and the end.

    :param track: called with each future, so that the flusher waits for it at the end.
    :param emit: called (on these threads) with the merged records.
    :param failed: called with a database error.
    :param early: hand each record on before the network sources are asked too (their
        sections pending), and again once they answered: a long-lived host then gets
        whois's and the offline sources' sections as fast as without them, and a slow or
        sick network source costs its own section only. A batch run (each address
        delivered once) waits for the whole record.
    """

    def __init__(
        self,
        enricher: Enricher,
        sections: Sections,
        track: Callable[[Future[None]], None],
        emit: Callable[[list[EnrichmentRecord]], None],
        failed: Callable[[StoreError], None],
        *,
        early: bool = False,
    ) -> None:
        self.enricher = enricher
        self.early = early
        self.sections = sections
        self._track, self._emit, self._failed = track, emit, failed
        sources = enricher.network.sources.values()
        #: how many records one ask takes: the largest batch of any network source
        self.gather = max((max(1, source.batch_size) for source in sources), default=1)
        concurrency = sum(source.concurrency for source in sources)
        self._pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="sources")
        self._lock = threading.Lock()
        #: handed on already when ``early``
        self._waiting: list[EnrichmentRecord] = []
        #: when the oldest waiting record arrived (``clock.monotonic``)
        self._since: float | None = None

    def __len__(self) -> int:
        """Records gathered and not asked yet."""
        with self._lock:
            return len(self._waiting)

    def partial(self, stopping: bool) -> None:
        """Gather the addresses whose Cymru answer is fresh (when stopping, emit them as is)."""
        waiting = list(self.sections.take_partial().values())
        if stopping:
            if waiting:
                self._emit(waiting)
            return
        self.submit(waiting)

    def submit(self, records: list[EnrichmentRecord]) -> None:
        """Gather ``records`` to ask for what they lack (handing them on first, when early)."""
        if self.early:  # whois's section now; the network sources' when they answer
            self._emit(records)
        self._gather(records)

    def due(self, now: float, interval: float) -> bool:
        """Whether the oldest gathered record has waited ``interval`` seconds."""
        with self._lock:
            return self._since is not None and now - self._since >= interval

    def flush(self, stopping: bool = False) -> None:
        """Ask for everything gathered now (when stopping, hand it on as it is)."""
        with self._lock:
            taken, self._waiting, self._since = self._waiting, [], None
        if stopping:
            if taken and not self.early:  # not handed on yet
                self._emit(taken)
            return
        for chunk in slices(taken, self.gather):
            self._track(self._pool.submit(self._ask, list(chunk)))

    def shutdown(self) -> None:
        """Wait for the pool's threads."""
        self._pool.shutdown(wait=True)

    def _gather(self, records: list[EnrichmentRecord]) -> None:
        full: list[list[EnrichmentRecord]] = []
        with self._lock:
            if self._since is None and records:
                self._since = clock.monotonic()
            self._waiting.extend(records)
            while len(self._waiting) >= self.gather:
                full.append(self._waiting[: self.gather])
                del self._waiting[: self.gather]
            if not self._waiting:
                self._since = None
        for records_ in full:
            self._track(self._pool.submit(self._ask, records_))

    def _ask(self, records: list[EnrichmentRecord]) -> None:
        try:
            ips = [record.ip for record in records]
            needs, cached = self.sections.take(ips)
            asked = self.enricher.ask_network(ips, needs)
            merged = self.enricher.save_sections(records, asked, cached)
        except Exception as exc:
            if isinstance(exc, StoreError):
                self._failed(exc)
            else:
                logger.exception("asking the network sources failed")
            merged = records
        self._emit(merged)
