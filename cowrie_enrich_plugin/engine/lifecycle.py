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
from typing import Final

from ..config import EnrichConfig
from ..store.parts import due_pending_parts
from .steps import Enricher

__all__ = ["Handled", "due_retries"]

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


def due_retries(enricher: Enricher) -> list[str]:
    """The pending addresses (Cymru or an extra source) whose retry is due, distinct.

    Also refreshes the engine's gauge of addresses pending now.

    :raises StoreError: when the database fails.
    """
    limit = max(1, enricher.config.working_set // 10)
    store, names = enricher.store, enricher.extras.names
    due = store.due_pending(limit=limit) + due_pending_parts(store, names, limit)
    enricher.pending_now = store.pending_count()
    return list(dict.fromkeys(due))
