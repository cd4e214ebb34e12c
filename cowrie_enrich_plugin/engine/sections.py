"""What the extra sources still owe each address in flight, and what they already said.

The flusher looks an address up in the store once; the extra sources' fresh stored
sections and the sources it lacks are kept here until its batch (or its
extra-sources-only batch) is asked, then taken. Thread-safe: batches are asked on
the engine's connection threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ..record import EnrichmentRecord, PartStatus, SourcePart, Status
from .steps import CacheView

__all__ = ["Sections", "with_every_part"]


class Sections:
    """The extra sources' state of the addresses between the cache and their answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, dict[str, SourcePart]] = {}
        self._needs: dict[str, tuple[str, ...]] = {}
        #: addresses whose Cymru answer is fresh but an extra source must be asked
        self.partial: dict[str, EnrichmentRecord] = {}

    def remember(self, view: CacheView) -> None:
        """Keep what a look in the cache found, for the addresses that go on to a batch.

        Cache hits are done with: nothing is kept for them, so that memory is bounded
        by what is in flight.
        """
        going = [*view.to_fetch, *view.partial]
        with self._lock:
            for ip in going:
                if ip in view.parts:
                    self._parts[ip] = view.parts[ip]
                if ip in view.needs:
                    self._needs[ip] = view.needs[ip]
        self.partial.update(view.partial)

    def take(
        self, ips: Iterable[str]
    ) -> tuple[dict[str, tuple[str, ...]], dict[str, dict[str, SourcePart]]]:
        """(what each address lacks, its fresh stored sections), taken for one batch."""
        with self._lock:
            needs = {ip: self._needs.pop(ip) for ip in ips if ip in self._needs}
            cached = {ip: self._parts.pop(ip) for ip in ips if ip in self._parts}
        return needs, cached

    def take_partial(self) -> dict[str, EnrichmentRecord]:
        """The addresses waiting for the extra sources alone, taken."""
        waiting, self.partial = self.partial, {}
        return waiting


def with_every_part(record: EnrichmentRecord, names: tuple[str, ...]) -> EnrichmentRecord:
    """``record`` with a section for each of ``names``: a missing one is marked pending."""
    have = dict(record.parts)
    if record.status is Status.SKIPPED or all(name in have for name in names):
        return record
    pending = SourcePart(PartStatus.PENDING, error="not asked")
    return record.with_parts({name: have.get(name, pending) for name in names})
