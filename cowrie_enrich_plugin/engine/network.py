"""The network sources of a run (GreyNoise, third-party ones): opened, asked in their own batches.

Each source is asked at most :attr:`~..sources.plugin.NetworkSource.concurrency` calls at
a time and :attr:`~..sources.plugin.NetworkSource.batch_size` addresses a call, whatever
thread of the engine asks; its answers become :class:`~..record.SourceSection` values
with the source's own TTLs. A source that raises is a bug, not the network: its
addresses stay pending and the others' answers are kept.

Each call first leases its addresses' sections in the store (when there is one): an
address another process is asking the source about is left to it, its section
:data:`ASKED_ELSEWHERE` here (never saved: the other process saves its answer).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from ..errors import ConfigError
from ..record import SectionStatus, SourceSection, utc_now
from ..settings import EnrichConfig
from ..slices import slices
from ..sources.plugin import Lookup, NetworkSource, load
from ..store.facade import Store
from ..store.quota import QuotaLedger
from ..store.source_sections import claim_sections

__all__ = ["ASKED_ELSEWHERE", "NetworkSources"]

logger = logging.getLogger(__name__)

#: The section of an address whose source another process is asking now.
ASKED_ELSEWHERE: Final = SourceSection(
    SectionStatus.PENDING, error="another process is asking this source"
)

#: Leases (source, addresses) for this process; returns the addresses won.
Claim = Callable[[str, Sequence[str]], set[str]]


class NetworkSources:
    """The run's enabled network sources, by name."""

    def __init__(self, sources: Mapping[str, NetworkSource], claim: Claim | None = None) -> None:
        self.sources = dict(sorted(sources.items()))
        self._claim = claim
        #: whether this run leased any section (then its leases are released at the end)
        self.leased = False
        self._slots = {
            name: threading.BoundedSemaphore(max(1, source.concurrency))
            for name, source in self.sources.items()
        }
        self._lock = threading.Lock()
        self.requests = 0
        self.pending = 0
        #: sources that said they need the operator (each counted once a run)
        self.refused: set[str] = set()
        #: sources whose last call said they ask no more today (their quota is spent)
        self.exhausted: set[str] = set()
        self._by_source: dict[str, tuple[int, int]] = {name: (0, 0) for name in self.sources}

    @classmethod
    def open(cls, config: EnrichConfig, store: Store | None = None) -> NetworkSources:
        """Open every source ``config`` enables; those that can count their quota in ``store``.

        :raises ConfigError: when a source cannot be opened with its settings.
        """
        opened: dict[str, NetworkSource] = {}
        try:
            for name, items in config.sources:
                try:
                    opened[name] = load(name).open(dict(items))
                except (ValueError, ImportError) as exc:
                    raise ConfigError(f"[plugins.enrich.{name}]: {exc}") from exc
                count_in = getattr(opened[name], "count_in", None)
                if store is not None and callable(count_in):
                    count_in(QuotaLedger(store, name))
        except BaseException:
            for source in opened.values():
                source.close()
            raise
        if store is None:
            return cls(opened)
        lease = config.lease_seconds
        return cls(opened, lambda name, ips: claim_sections(store, name, ips, lease))

    @property
    def names(self) -> tuple[str, ...]:
        """The enabled sources' names, in order."""
        return tuple(self.sources)

    def close(self) -> None:
        """Close every source."""
        for source in self.sources.values():
            source.close()

    def ask(self, needs: Mapping[str, Sequence[str]]) -> dict[str, dict[str, SourceSection]]:
        """Ask each source about its addresses: {ip: {source: section}}, pending ones included."""
        found: dict[str, dict[str, SourceSection]] = {}
        for name, ips in needs.items():
            source = self.sources[name]
            for batch in slices(list(dict.fromkeys(ips)), max(1, source.batch_size)):
                for ip, section in self._ask_one(name, source, batch).items():
                    found.setdefault(ip, {})[name] = section
        return found

    def _ask_one(
        self, name: str, source: NetworkSource, batch: Sequence[str]
    ) -> dict[str, SourceSection]:
        with self._slots[name]:  # leased once a slot is free: the lease times the call
            if self._claim is None:
                won = set(batch)
            else:
                self.leased = True  # before: a claim that fails may still have committed
                won = self._claim(name, batch)
            asking = [ip for ip in batch if ip in won]
            try:
                result = source.lookup(asking) if asking else Lookup()
            except Exception as exc:
                logger.exception("the %s source failed on %d address(es)", name, len(asking))
                result = Lookup(pending=dict.fromkeys(asking, f"internal error: {exc}"))
        now = utc_now()
        sections: dict[str, SourceSection] = {}
        for ip in batch:
            if ip not in won:
                sections[ip] = ASKED_ELSEWHERE
            elif ip in result.answers:
                sections[ip] = _answered(
                    result.answers[ip], SectionStatus.ANSWERED, now, source.ttl
                )
            elif ip in result.not_found:
                sections[ip] = _answered(
                    result.not_found[ip], SectionStatus.NOT_FOUND, now, source.negative_ttl
                )
            else:
                why = result.pending.get(ip, "not answered")
                sections[ip] = SourceSection(SectionStatus.PENDING, error=why)
        # another process's ask leaves the section pending here too (a batch run exits 75)
        left = sum(p.status is SectionStatus.PENDING for p in sections.values())
        with self._lock:
            if result.refusal is not None:
                self.refused.add(name)
            if result.exhausted is not None:
                self.exhausted.add(name)
            elif result.requests:
                self.exhausted.discard(name)
            self.requests += result.requests
            self.pending += left
            requests, pending = self._by_source[name]
            self._by_source[name] = (requests + result.requests, pending + left)
        return sections

    @property
    def errors(self) -> int:
        """How many sources refused to work until the operator mends something."""
        with self._lock:
            return len(self.refused)

    def spent(self) -> tuple[str, ...]:
        """The sources whose daily quota is spent.

        As each says (``quota_spent()``), else as of its last call (calls side by side
        may end in either order).
        """
        with self._lock:
            flagged = set(self.exhausted)
        found = []
        for name, source in self.sources.items():
            says = getattr(source, "quota_spent", None)
            spent = name in flagged
            if callable(says):
                try:
                    spent = bool(says())
                except Exception:  # a third-party source's bug: its last call says
                    logger.exception("the %s source failed to say whether its quota is spent", name)
            if spent:
                found.append(name)
        return tuple(found)

    def per_source(self) -> tuple[tuple[str, int, int], ...]:
        """(name, requests, sections left pending) for each source."""
        with self._lock:
            return tuple((name, r, p) for name, (r, p) in self._by_source.items())


def _answered(
    data: Mapping[str, object], status: SectionStatus, now: dt.datetime, ttl: dt.timedelta
) -> SourceSection:
    return SourceSection(status, dict(data), now, now + ttl)
