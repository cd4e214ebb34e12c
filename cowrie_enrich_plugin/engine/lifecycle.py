"""What handling an address once means in each lifecycle, and the background retries.

A batch run handles each address once and remembers all of them. A long-lived one
(weeks, millions of addresses) remembers none on the engine's side: the host's
bounded working set decides when an address is looked at again (it forgot it, or its
record expired), and the store says whether that record was delivered before
(:mod:`..store.deliveries`). Now and then it asks the store for the pending
addresses whose background retry is due.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from .. import clock
from ..record import delivery_signature
from ..settings import EnrichConfig
from .steps import Enricher

__all__ = ["BackgroundRetries", "Handled", "OncePerRun", "due_retries"]

#: How often a long-lived run looks for pending addresses whose retry is due.
BACKGROUND_EVERY: Final = 30.0


class Handled:
    """The addresses a batch run has handled (each is handled once).

    A long-lived run remembers none: the host hands an address on again only when
    it has forgotten it (its working set) or its record expired, and then it is to
    be looked at again.
    """

    def __init__(self, config: EnrichConfig) -> None:
        self.config = config
        self._seen: set[str] = set()

    def first_time(self, ips: Iterable[str]) -> list[str]:
        """The addresses of ``ips`` not handled yet; from now on they are."""
        if self.config.long_lived:
            return list(dict.fromkeys(ips))
        fresh = [ip for ip in ips if ip not in self._seen]
        self._seen.update(fresh)
        return fresh


class BackgroundRetries:
    """When a long-lived engine looks for pending addresses whose retry is due."""

    def __init__(self, config: EnrichConfig) -> None:
        self.every = max(config.flush_interval, BACKGROUND_EVERY)
        self._next = clock.monotonic() + BACKGROUND_EVERY
        self.active = config.long_lived

    def due(self) -> bool:
        """Whether it is time to look (then the next look is ``every`` seconds away)."""
        if not self.active or clock.monotonic() < self._next:
            return False
        self._next = clock.monotonic() + self.every
        return True


class OncePerRun:
    """A long-lived run delivers each record once, and again only when it changed.

    Even after its address left the working set: what was delivered is asked of the
    store (:mod:`..store.deliveries`). Inactive in batch runs (the host remembers
    every address) and with ``redeliver``.
    """

    def __init__(self, enricher: Enricher) -> None:
        config = enricher.config
        self._enricher = enricher
        self.active = config.long_lived and not config.redeliver

    def start(self) -> None:
        """Drop what runs that are gone delivered.

        :raises StoreError: when the database fails.
        """
        if self.active:
            self._enricher.forget_gone_runs()

    def repeats(self, records: list[dict[str, Any]]) -> tuple[str, ...]:
        """The addresses of ``records`` this run has delivered as they are; noted now.

        :raises StoreError: when the database fails.
        """
        if not self.active or not records:
            return ()
        signed = [(r["ip"], delivery_signature(r)) for r in records]
        fresh = self._enricher.not_delivered(signed)
        return tuple(ip for ip, _sign in signed if ip not in fresh)


def due_retries(enricher: Enricher) -> tuple[list[str], int]:
    """The pending addresses whose retry is due (whois or a network source), and the limit.

    At most a tenth of the working set is taken in one look. Also refreshes the
    engine's gauge of addresses pending now.

    :raises StoreError: when the database fails.
    """
    limit = max(1, enricher.config.working_set // 10)
    due = enricher.due_pending(limit)
    enricher.count_pending()
    return due, limit
