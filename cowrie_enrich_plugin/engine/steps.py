"""The enrichment steps for a set of addresses: cache, lease, whois, MaxMind merge, persist.

Each step is synchronous and thread-safe; :mod:`.flusher` is the one place that
orders them and decides when each runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..config import EnrichConfig
from ..counters import RunCounters
from ..errors import StoreError
from ..record import CymruAnswer, EnrichmentRecord, GeoAnswer, Status, utc_now
from ..sources.cymru.client import BatchResult, BulkWhoisClient
from ..sources.maxmind.lookup import GeoLookup
from ..store import Store, open_store

__all__ = ["CacheView", "Enricher"]

logger = logging.getLogger(__name__)


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
        self._counts = RunCounters()
        self._counts_lock = threading.Lock()
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

    def __enter__(self) -> Enricher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds: the longest a batch can take, with margin."""
        return self.config.longest_batch_seconds + 30.0

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
        with self._counts_lock:
            self._counts.cache_hits += len(view.fresh)
            self._counts.stale_refreshed += len(view.stale)
        return view

    def claim(self, ips: Sequence[str]) -> tuple[list[str], list[str]]:
        """Lease ``ips`` before asking the network: (won, held by another process)."""
        won = self.store.claim(ips, self.lease_seconds)
        mine = [ip for ip in ips if ip in won]
        theirs = [ip for ip in ips if ip not in won]
        with self._counts_lock:
            self._counts.leased_elsewhere += len(theirs)
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
        with self._counts_lock:
            self._counts.resolved += len(resolved)
            self._counts.pending += len(unresolved)
        return records

    def counters(self) -> RunCounters:
        """The steps' and the whois client's counters so far."""
        with self._counts_lock:
            result = dataclasses.replace(self._counts)
        result.add_whois(self.client.stats)
        return result
