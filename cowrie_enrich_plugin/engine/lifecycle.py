"""What a long-lived engine does besides batching: forget, and look for retries that are due.

A batch run handles each address once and remembers all of them; a long-lived one
(weeks, millions of addresses) forgets what it handled every hour or at
``working_set`` addresses, so that memory stays bounded and an expired record is
refreshed when its address is seen again; and now and then it asks the store for the
pending addresses whose background retry is due.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .. import clock
from ..config import EnrichConfig
from ..store.parts import due_pending_parts
from .steps import Enricher

__all__ = ["Handled", "due_retries"]

#: How often a long-lived run looks for pending addresses whose retry is due.
BACKGROUND_EVERY: Final = 30.0
#: How long a long-lived run remembers having handled an address (see collect.py).
RECHECK_SECONDS: Final = 3600.0


class Handled:
    """The addresses handled so far (in a long-lived run: lately, and not too many)."""

    def __init__(self, config: EnrichConfig) -> None:
        self.config = config
        self._seen: set[str] = set()
        self._since = clock.monotonic()

    def first_time(self, ips: Iterable[str]) -> list[str]:
        """The addresses of ``ips`` not handled yet; from now on they are."""
        if self.config.long_lived and (
            len(self._seen) > self.config.working_set
            or clock.monotonic() - self._since > RECHECK_SECONDS
        ):
            self._seen = set()
            self._since = clock.monotonic()
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
