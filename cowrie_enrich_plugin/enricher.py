"""The enrichment steps for a set of addresses: cache, lease, MaxMind, whois, merge, persist.

Synchronous and thread-safe; :mod:`.flusher` runs it beside a host's ingest, and the
``lookup`` and ``cache retry`` commands call it directly.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .addresses import NonGlobal, Usable, classify
from .config import EnrichConfig
from .cymru_client import BatchResult, BulkWhoisClient, batched
from .errors import StoreError
from .maxmind import GeoLookup
from .record import CymruAnswer, EnrichmentRecord, GeoAnswer, Status, utc_now
from .store import Store, open_store

__all__ = ["CacheView", "EnrichStats", "Enricher"]

logger = logging.getLogger(__name__)


@dataclass
class EnrichStats:
    """Counters of one run, updated from several threads under ``lock``."""

    cache_hits: int = 0
    stale: int = 0
    leased_elsewhere: int = 0
    resolved: int = 0
    pending: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        """Add to counters by name."""
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass
class CacheView:
    """What the store knows about a set of addresses."""

    fresh: dict[str, EnrichmentRecord] = field(default_factory=dict)
    stale: dict[str, EnrichmentRecord] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    @property
    def to_fetch(self) -> list[str]:
        """Addresses to ask the network for: unknown, pending or stale."""
        return self.unknown + list(self.stale)


class Enricher:
    """Resolves addresses through the cache, MaxMind and Team Cymru, and stores the outcome."""

    def __init__(
        self,
        config: EnrichConfig,
        store: Store,
        geo: GeoLookup,
        client: BulkWhoisClient,
    ) -> None:
        self.config = config
        self.store = store
        self.geo = geo
        self.client = client
        self.stats = EnrichStats()
        self._released = False

    @classmethod
    def open(cls, config: EnrichConfig) -> Enricher:
        """Open the GeoIP files, the store and the whois client that ``config`` names.

        :raises GeoDatabaseError: for an unusable GeoIP file.
        :raises StoreError: when the database cannot be opened.
        """
        geo = GeoLookup(config.geoip_city, config.geoip_asn)
        store = open_store(config.db)
        client = BulkWhoisClient(
            config.cymru_host,
            config.cymru_port,
            timeout=config.timeout,
            retries=config.retries,
            concurrency=config.concurrency,
            batch_size=config.batch_size,
        )
        return cls(config, store, geo, client)

    def release_leases(self) -> None:
        """Give up this process's leases (what they hold stays queued for the next run)."""
        if self._released:
            return
        self._released = True
        try:
            self.store.release()
        except StoreError as exc:  # the leases expire on their own
            logger.warning("could not release leases: %s", exc)

    def close(self) -> None:
        """Give up this process's leases and close the store and the GeoIP files."""
        self.release_leases()
        self.store.close()
        self.geo.close()

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds: the longest a batch can take, with margin."""
        return self.config.timeout * self.config.retries + 30.0 * self.config.retries + 30.0

    # -- steps ------------------------------------------------------------------------

    def look_in_cache(self, ips: Sequence[str], now: dt.datetime | None = None) -> CacheView:
        """Split ``ips`` into fresh records, stale ones (pending included) and unknown."""
        moment = now or utc_now()
        stored = self.store.get_records(ips)
        view = CacheView()
        for ip in ips:
            record = stored.get(ip)
            if record is None:
                view.unknown.append(ip)
            elif record.is_fresh(moment):
                view.fresh[ip] = record
            else:
                view.stale[ip] = record
        self.stats.add(cache_hits=len(view.fresh), stale=len(view.stale))
        return view

    def claim(self, ips: Sequence[str]) -> tuple[list[str], list[str]]:
        """Lease ``ips`` before asking the network: (won, held by another process)."""
        won = self.store.claim(ips, self.lease_seconds)
        mine = [ip for ip in ips if ip in won]
        theirs = [ip for ip in ips if ip not in won]
        self.stats.add(leased_elsewhere=len(theirs))
        return mine, theirs

    def record_for(self, ip: str, answer: CymruAnswer, geo: GeoAnswer | None) -> EnrichmentRecord:
        """Merge one Cymru answer and MaxMind's into a record with its TTL."""
        if answer.announced:
            ttl = dt.timedelta(days=self.config.ttl_days)
            status = Status.ENRICHED
        else:
            ttl = dt.timedelta(hours=self.config.negative_ttl_hours)
            status = Status.UNANNOUNCED
        return EnrichmentRecord(ip, status, answer, geo, answer.fetched_at + ttl)

    @staticmethod
    def skipped_record(ip: str) -> EnrichmentRecord:
        """The record of an address that is never sent anywhere."""
        return EnrichmentRecord(ip, Status.SKIPPED)

    def fetch_batch(
        self, ips: Sequence[str], previous: Mapping[str, EnrichmentRecord] | None = None
    ) -> list[EnrichmentRecord]:
        """Ask Cymru for one leased batch, merge with MaxMind, persist, return the records."""
        return self.finish_batch(ips, self.client.query_batch(ips), previous)

    def finish_batch(
        self,
        ips: Sequence[str],
        result: BatchResult,
        previous: Mapping[str, EnrichmentRecord] | None = None,
    ) -> list[EnrichmentRecord]:
        """Merge one batch's whois result with MaxMind, persist it, return the records.

        An address that stayed unanswered gets its previous (stale) record back if it
        had one, else a ``pending`` record with its MaxMind data.
        """
        records: list[EnrichmentRecord] = []
        resolved: list[EnrichmentRecord] = []
        unresolved: dict[str, tuple[str, GeoAnswer | None]] = {}
        for ip in ips:
            geo = self.geo.lookup(ip)
            answer = result.answers.get(ip)
            if answer is not None:
                record = self.record_for(ip, answer, geo)
                resolved.append(record)
                records.append(record)
                continue
            unresolved[ip] = (result.unresolved.get(ip, "not answered"), geo)
            old = (previous or {}).get(ip)
            if old is not None and old.status is not Status.PENDING:
                records.append(old)
            else:
                records.append(EnrichmentRecord(ip, Status.PENDING, maxmind=geo))
        self.store.save(resolved, unresolved)
        self.stats.add(resolved=len(resolved), pending=len(unresolved))
        return records

    # -- all steps, synchronously -----------------------------------------------------

    def enrich(self, values: Iterable[str]) -> list[EnrichmentRecord]:
        """Enrich addresses now, cache first (``lookup``, ``cache retry``).

        Values must be valid addresses (see :func:`.addresses.classify`); non-global
        ones come back ``skipped``. One record per distinct address, in input order.
        """
        order: list[str] = []
        skipped: dict[str, EnrichmentRecord] = {}
        usable: list[str] = []
        for value in values:
            verdict = classify(value)
            if isinstance(verdict, Usable):
                usable.append(verdict.ip)
                order.append(verdict.ip)
            elif isinstance(verdict, NonGlobal):
                skipped[verdict.ip] = self.skipped_record(verdict.ip)
                order.append(verdict.ip)
            else:
                raise ValueError(verdict.reason)
        if skipped:
            self.store.put_records(list(skipped.values()))
        found: dict[str, EnrichmentRecord] = dict(skipped)
        self.geo.refresh()
        view = self.look_in_cache(list(dict.fromkeys(usable)))
        found.update(view.fresh)
        mine, theirs = self.claim(view.to_fetch)
        for ip in theirs:
            found[ip] = view.stale.get(ip) or EnrichmentRecord(
                ip, Status.PENDING, maxmind=self.geo.lookup(ip)
            )
        with ThreadPoolExecutor(self.client.concurrency, thread_name_prefix="cymru") as pool:
            for records in pool.map(
                lambda batch: self.fetch_batch(batch, view.stale),
                batched(mine, self.config.batch_size),
            ):
                found.update((record.ip, record) for record in records)
        return [found[ip] for ip in dict.fromkeys(order)]
