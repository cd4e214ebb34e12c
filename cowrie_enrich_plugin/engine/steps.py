"""The enrichment steps for a set of addresses: cache, lease, whois, offline merge, persist.

Each step is synchronous and thread-safe; :mod:`.flusher` is the one place that
orders them and decides when each runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..counters import RunCounters
from ..errors import StoreError
from ..record import CymruAnswer, EnrichmentRecord, SectionStatus, SourceSection, Status, utc_now
from ..settings import EnrichConfig
from ..sources.cymru.client import BatchResult, BulkWhoisClient
from ..sources.plugin import load, settings_of
from ..store import Store, open_store
from ..store.backlog import end_backoff
from ..store.deliveries import drop_gone_runs, news
from ..store.outcomes import BatchOutcome
from ..store.owed import OwedRows
from ..store.source_sections import (
    due_pending_sections,
    get_sections,
    release_sections,
    save_sections,
)
from .cache_view import CacheView
from .network import ASKED_ELSEWHERE, NetworkSources
from .offline import OfflineSources

__all__ = ["Enricher", "FinishedBatch"]

logger = logging.getLogger(__name__)

#: A whois batch answered: its addresses, whois's result, their stored (stale) records.
FinishedBatch = tuple[Sequence[str], BatchResult, Mapping[str, EnrichmentRecord]]


class Enricher:
    """Resolves addresses through the cache, the network sources and the offline ones.

    The one door to the store, the sources and the offline files: the engine's loop
    (:mod:`.flusher`) reaches them through these steps only.
    """

    def __init__(
        self,
        config: EnrichConfig,
        store: Store,
        offline: OfflineSources,
        client: BulkWhoisClient,
        network: NetworkSources | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.offline = offline
        self.client = client
        self.network = network or NetworkSources({})
        self._counts = RunCounters()
        #: addresses pending in the store, as of the last look (long-lived runs look)
        self.pending_now = 0
        self._counts_lock = threading.Lock()
        self._kinds: dict[str, int] = {}
        self._released = False

    @classmethod
    def open(cls, config: EnrichConfig, *, create: bool = True) -> Enricher:
        """Open the offline sources, the store and the network sources ``config`` names.

        Without ``create``, a database that holds no store is refused, not made (an
        older store is upgraded).

        :raises GeoDatabaseError: for an unusable GeoIP file.
        :raises StoreError: when the database cannot be opened.
        """
        client: BulkWhoisClient = load("cymru").open(settings_of(config, "cymru"))
        offline = OfflineSources.open(config)
        try:
            store = open_store(config.db, create=create, upgrade=True)
            try:
                network = NetworkSources.open(config, store)
            except BaseException:
                store.close()
                raise
        except BaseException:
            offline.close()
            raise
        return cls(config, store, offline, client, network)

    def release_leases(self) -> None:
        """Give up this process's leases (what they hold stays queued for the next run)."""
        if self._released:
            return
        self._released = True
        try:
            self.store.release()
            if self.network.leased:
                release_sections(self.store)
        except StoreError as exc:  # the leases expire on their own
            logger.warning("could not release leases: %s", exc)

    def close(self) -> None:
        """Stop the feeds' downloads, give up this process's leases, close everything."""
        try:
            self.offline.close()
            self.release_leases()
        finally:
            try:
                self.store.close()
            finally:
                self.network.close()

    def __enter__(self) -> Enricher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- steps ------------------------------------------------------------------------

    def refresh_offline(self) -> None:
        """Let the offline sources switch to files replaced since they were opened."""
        self.offline.refresh()

    def pending_record(self, ip: str) -> EnrichmentRecord:
        """The record of an address no network source has answered yet."""
        return self.offline.record(ip, Status.PENDING)

    def skipped_record(self, ip: str) -> EnrichmentRecord:
        """The record of an address that is never sent anywhere."""
        return self.offline.skipped(ip)

    def completed(self, record: EnrichmentRecord) -> EnrichmentRecord:
        """``record`` with the feeds' labels, for one built before any feed was installed."""
        return self.offline.completed(record)

    def _relabel(self, records: dict[str, EnrichmentRecord]) -> None:
        """Give the records whose feeds changed since they were built today's labels, stored.

        A record keeps the labels it was built with until its address is seen again;
        then it is relabelled here, from the feeds alone (no network source is asked).
        """
        changed = self.offline.relabel(records)
        if changed:
            self.store.relabel(changed)

    def look_in_cache(self, ips: Sequence[str], now: dt.datetime | None = None) -> CacheView:
        """Split ``ips`` into fresh records, stale ones (pending included) and unknown."""
        moment = now or utc_now()
        stored = self.store.get_records(ips)
        names = self.network.names
        answered = get_sections(self.store, ips, names) if names else {}
        view = CacheView()
        for ip in ips:
            if names:
                have = answered.get(ip, {})
                view.sections[ip] = fresh = {n: p for n, p in have.items() if p.is_fresh(moment)}
                view.needs[ip] = tuple(n for n in names if n not in fresh)
            record = stored.get(ip)
            if record is None:
                view.unknown.append(ip)
            elif not record.is_fresh(moment):
                view.stale[ip] = record
            elif record.status is not Status.SKIPPED and view.needs.get(ip):
                view.partial[ip] = record
            else:
                view.fresh[ip] = record.with_sections(view.sections.get(ip, {}))
        self._relabel(view.fresh)
        self._relabel(view.partial)
        with self._counts_lock:
            self._counts.cache_hits += len(view.fresh)
            self._counts.stale_refreshed += len(view.stale)
        return view

    def claim(self, ips: Sequence[str]) -> tuple[list[str], list[str]]:
        """Lease ``ips`` before asking the network: (won, held by another process)."""
        won = self.store.claim(ips, self.config.lease_seconds)
        mine = [ip for ip in ips if ip in won]
        theirs = [ip for ip in ips if ip not in won]
        with self._counts_lock:
            self._counts.leased_elsewhere += len(theirs)
        return mine, theirs

    def ask_whois(self, ips: Sequence[str]) -> BatchResult:
        """Ask whois about one leased batch (network trouble is in the result, not raised)."""
        return self.client.query_batch(ips)

    def queue(self, ips: Sequence[str]) -> None:
        """Record ``ips`` pending without asking anyone: the next run asks for them."""
        self.store.queue(ips)

    def save_skipped(self, records: Sequence[EnrichmentRecord]) -> None:
        """Persist the records of addresses that are never sent anywhere."""
        self.store.put_records(records)

    def stored(self, ips: Sequence[str]) -> dict[str, EnrichmentRecord]:
        """The stored records of ``ips``, fresh or not (absent ones left out)."""
        return self.store.get_records(ips)

    def backing_off(self, ips: Sequence[str]) -> set[str]:
        """Those of ``ips`` whose retry waits out its backoff."""
        return self.store.backing_off(ips)

    def stop_asking(self) -> None:
        """The run is stopping: whois's batches end now; what they asked stays pending."""
        self.client.stop()

    def whois_held_back(self) -> bool:
        """Whether whois's circuit breaker holds batches back now."""
        return self.client.circuit_is_open

    def end_whois_backoff(self, limit: int | None = None) -> int:
        """Make addresses queued for whois due now (all, or the ``limit`` due soonest)."""
        return end_backoff(self.store, limit)

    def due_pending(self, limit: int = 100_000) -> list[str]:
        """The pending addresses (whois or a network source) whose retry is due, distinct.

        A source whose daily quota is spent has none due: asked, it would only leave
        them pending again, rewriting each row, on every run until the day turns.
        """
        store, spent = self.store, set(self.network.spent())
        names = tuple(name for name in self.network.names if name not in spent)
        return list(
            dict.fromkeys(
                store.due_pending(limit=limit) + due_pending_sections(store, names, limit)
            )
        )

    def owed_rows(self) -> OwedRows:
        """What this sensor owes its output (:mod:`..store.owed`)."""
        return OwedRows(self.store, self.config.sensor_name)

    def forget_gone_runs(self) -> None:
        """Drop what runs that are gone delivered (:mod:`..store.deliveries`)."""
        drop_gone_runs(self.store)

    def not_delivered(self, signed: Sequence[tuple[str, str]]) -> set[str]:
        """The addresses of ``signed`` (ip, signature) this run has not delivered so; noted now."""
        return news(self.store, signed)

    def count_pending(self) -> int:
        """Addresses pending in the store now (kept as :attr:`pending_now`, a gauge)."""
        self.pending_now = self.store.pending_count()
        return self.pending_now

    def record_for(
        self, ip: str, answer: CymruAnswer, previous: EnrichmentRecord | None = None
    ) -> EnrichmentRecord:
        """The record of one Cymru answer, with its TTL and the offline sections.

        ``previous``: the address's stored record (see :meth:`OfflineSources.record`).
        """
        if answer.announced:
            ttl = dt.timedelta(days=self.config.ttl_days)
            status = Status.ENRICHED
        else:
            ttl = dt.timedelta(hours=self.config.negative_ttl_hours)
            status = Status.UNANNOUNCED
        return self.offline.record(ip, status, answer, answer.fetched_at + ttl, previous)

    def ask_network(
        self, ips: Sequence[str], needs: Mapping[str, Sequence[str]]
    ) -> dict[str, dict[str, SourceSection]]:
        """Ask the network sources what ``needs`` says each address lacks (all, if unsaid)."""
        names = self.network.names
        if not names:
            return {}
        by_source: dict[str, list[str]] = {name: [] for name in names}
        for ip in ips:
            for name in needs.get(ip, names):
                by_source[name].append(ip)
        return self.network.ask({n: found for n, found in by_source.items() if found})

    def save_sections(
        self,
        records: Sequence[EnrichmentRecord],
        asked: Mapping[str, Mapping[str, SourceSection]],
        cached: Mapping[str, Mapping[str, SourceSection]],
    ) -> list[EnrichmentRecord]:
        """Persist what the network sources said; the records with every section merged.

        A pending section does not hide an older stored answer: that one is served,
        stale, until a refresh succeeds.
        """
        if not self.network.names:
            return list(records)
        rows = [(ip, name, p) for ip, found in asked.items() for name, p in found.items()]
        save_sections(self.store, [row for row in rows if row[2] is not ASKED_ELSEWHERE])
        stale = self._stored_answers([r for r in rows if r[2].status is SectionStatus.PENDING])
        merged: list[EnrichmentRecord] = []
        for record in records:
            sections = {**cached.get(record.ip, {})}
            for name, section in asked.get(record.ip, {}).items():
                sections[name] = stale.get((record.ip, name), section)
            merged.append(record.with_sections(sections))
        return merged

    def _stored_answers(
        self, pending: Sequence[tuple[str, str, SourceSection]]
    ) -> dict[tuple[str, str], SourceSection]:
        if not pending:
            return {}
        stored = get_sections(self.store, {ip for ip, _n, _p in pending}, self.network.names)
        return {
            (ip, name): section
            for ip, found in stored.items()
            for name, section in found.items()
            if section.status is not SectionStatus.PENDING
        }

    def finish_batches(self, batches: Sequence[FinishedBatch]) -> list[list[EnrichmentRecord]]:
        """Build the records of whois's answers to ``batches``, persist them, return them.

        One list of records per batch, in the batches' order. An address that stayed
        unanswered gets its previous (stale) record back if it had one, else a
        ``pending`` record with its offline sections. The batches are persisted in
        one transaction (:mod:`..store.outcomes`), each with its own retry terms.
        The network sources' sections are merged by :meth:`save_sections`.
        """
        out: list[list[EnrichmentRecord]] = []
        outcomes: list[BatchOutcome] = []
        # A long-lived run retries in the background, backing off; a batch run leaves
        # them for the next run, as does a run that stopped asking (whois did not fail:
        # the next start asks at once).
        backoff = self.config.retry_interval if self.config.long_lived else 0.0
        for ips, result, previous in batches:
            records: list[EnrichmentRecord] = []
            resolved: list[EnrichmentRecord] = []
            unresolved: dict[str, tuple[str, EnrichmentRecord | None]] = {}
            for ip in ips:
                answer = result.answers.get(ip)
                old = previous.get(ip)
                if answer is not None:
                    record = self.record_for(ip, answer, old)
                    resolved.append(record)
                    records.append(record)
                    continue
                pending = self.offline.record(ip, Status.PENDING, previous=old)
                unresolved[ip] = (result.unresolved.get(ip, "not answered"), pending)
                if old is not None and old.status is not Status.PENDING:
                    records.append(old)
                else:
                    records.append(pending)
            out.append(records)
            if result.held_for:  # the breaker held them back: no attempt, due once it may close
                outcomes.append(
                    BatchOutcome(resolved, unresolved, result.held_for, attempted=False)
                )
            else:
                outcomes.append(
                    BatchOutcome(resolved, unresolved, backoff=0.0 if result.stopped else backoff)
                )
        self.store.save_outcomes(outcomes)
        with self._counts_lock:
            self._counts.resolved += sum(len(o.resolved) for o in outcomes)
            self._counts.pending += sum(len(o.unresolved) for o in outcomes)
        return out

    def count_kinds(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Count delivered records by their labels' kinds (when feeds are on)."""
        with self._counts_lock:
            self.offline.count_kinds(records, self._kinds)

    def counters(self) -> RunCounters:
        """The steps' and the whois client's counters so far."""
        with self._counts_lock:
            result = dataclasses.replace(self._counts)
            result.kinds = tuple(sorted(self._kinds.items()))
        result.add_whois(self.client.snapshot())
        result.circuit_open = int(self.client.circuit_is_open)
        result.source_requests = self.network.requests
        result.source_pending = self.network.pending
        result.sources = self.network.per_source()
        result.quota_spent = self.network.spent()
        result.errors += self.network.errors
        result.pending_now = self.pending_now
        return result
