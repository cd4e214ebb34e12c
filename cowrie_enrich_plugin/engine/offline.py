"""The offline sources, asked inline: every record the engine builds is built here.

MaxMind and the feeds (:class:`~..sources.plugin.OfflineSource`) answer from local
files, so their sections are part of the record from the moment it is made, whatever
made it: a whois answer, a skipped address, a pending one, a record another process
resolved. A record served from the cache is brought up to date by
:meth:`OfflineSources.relabel` when its sections were made from other data than the
sources hold now: other (or no) MaxMind files, other feeds. A source that is not
configured now erases nothing: a record rebuilt without a MaxMind file keeps what
that file gave an earlier run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..classification import section_kinds
from ..feeds.classifier import Classifier
from ..record import CymruAnswer, EnrichmentRecord, Status
from ..settings import EnrichConfig
from ..sources.maxmind.source import MaxMindSource
from ..sources.plugin import OfflineSource, load, settings_of

__all__ = ["OfflineSources"]

#: The record's fields that offline sources fill.
_FIELDS: Final = ("maxmind", "classification")


def _nothing(_ip: str) -> None:
    return None


class OfflineSources:
    """The open offline sources of one engine, in the order their sections are filled."""

    def __init__(self, sources: Sequence[OfflineSource]) -> None:
        self.sources = tuple(sources)
        by_field = {source.field: source.section for source in self.sources}
        unknown = set(by_field) - set(_FIELDS)
        if unknown:
            raise ValueError(f"no record field for offline section(s) {sorted(unknown)}")
        # Bound once: a record is built per address, and a lookup per field is the cost.
        self._maxmind = by_field.get("maxmind", _nothing)
        self._classification = by_field.get("classification", _nothing)
        self._geo: MaxMindSource | None = next(
            (s for s in self.sources if isinstance(s, MaxMindSource)), None
        )
        if self._geo is not None and not self._geo.geo.enabled:
            # Its files are those open now (a refresh only reopens them): it never answers.
            self._maxmind = _nothing
        #: the feeds, when enabled (their labels are relabelled and counted)
        self.feeds: Classifier | None = next(
            (s for s in self.sources if isinstance(s, Classifier)), None
        )

    @classmethod
    def open(cls, config: EnrichConfig) -> OfflineSources:
        """MaxMind's files and the enabled feeds, as ``config`` names them.

        :raises GeoDatabaseError: for an unusable GeoIP file.
        """
        sources: list[OfflineSource] = [load("maxmind").open(settings_of(config, "maxmind"))]
        if config.feeds.enabled:
            try:
                sources.append(Classifier(config.feeds, keep=config.long_lived))
            except BaseException:
                sources[0].close()
                raise
        return cls(sources)

    def record(
        self,
        ip: str,
        status: Status,
        cymru: CymruAnswer | None = None,
        expires_at: dt.datetime | None = None,
        previous: EnrichmentRecord | None = None,
    ) -> EnrichmentRecord:
        """The record of ``ip`` with every offline section: the one way records are made.

        ``previous``, the address's stored record: what its MaxMind section holds from
        a file not configured now is kept.
        """
        if previous is not None and previous.maxmind is not None and self._geo is not None:
            geo = self._geo.renewed(ip, previous.maxmind)
        else:
            geo = self._maxmind(ip)
        return EnrichmentRecord(ip, status, cymru, geo, expires_at, (), self._classification(ip))

    def skipped(self, ip: str) -> EnrichmentRecord:
        """The record of an address never sent anywhere: the feeds' labels, no MaxMind.

        The GeoIP files hold nothing for addresses that are not globally routable;
        an empty section would only carry the files' build times.
        """
        return EnrichmentRecord(ip, Status.SKIPPED, classification=self._classification(ip))

    def completed(self, record: EnrichmentRecord) -> EnrichmentRecord:
        """``record`` with the feeds' labels, for one built before any feed was installed."""
        if record.classification is not None or self.feeds is None:
            return record
        return record.with_classification(self.feeds.classify(record.ip))

    def relabel(self, records: dict[str, EnrichmentRecord]) -> list[EnrichmentRecord]:
        """Bring records made from other offline data than today's up to date.

        MaxMind's section is made again when the files open now are not those it was
        made from (or it has none: files added since); the feeds' labels when the feeds
        changed. Changes ``records`` in place; returns the changed records, to be stored.
        """
        changed: dict[str, EnrichmentRecord] = {}
        geo = self._geo
        if geo is not None and geo.geo.enabled:
            for ip, record in records.items():
                if record.status is not Status.SKIPPED and geo.outdated(record.maxmind):
                    records[ip] = changed[ip] = record.with_maxmind(geo.renewed(ip, record.maxmind))
        feeds = self.feeds
        if feeds is not None and feeds.index is not None:
            for ip, record in records.items():
                now = feeds.classify(ip)
                old = record.classification
                if now is None or now is old:
                    continue
                if old is None or not old.same_labels(now):
                    records[ip] = changed[ip] = record.with_classification(now)
                elif now.listed:  # the same text: the index's section knows its kinds
                    records[ip] = record.with_classification(now)
        return list(changed.values())

    def count_kinds(self, records: Sequence[Mapping[str, Any]], kinds: dict[str, int]) -> None:
        """Add delivered records to ``kinds``, by their labels' kinds (when feeds are on)."""
        if self.feeds is None:
            return
        for record in records:
            for kind in section_kinds(record.get("classification")) or ("none",):
                kinds[kind] = kinds.get(kind, 0) + 1

    def refresh(self) -> None:
        """Let every source switch to files replaced since they were opened."""
        for source in self.sources:
            source.refresh()

    def close(self) -> None:
        """Close every source."""
        for source in self.sources:
            source.close()
