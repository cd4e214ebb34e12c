"""Addresses another process has leased: waited for, then taken from the store or claimed.

When a claim finds an address leased by another live process (another sensor on
the same database), that process is asking for it; this run waits for its answer
rather than asking again, and claims it only if the lease ends unanswered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..record import EnrichmentRecord
from .cache_view import CacheView

__all__ = ["ForeignLeases"]


class ForeignLeases:
    """The addresses this run waits on, with the stale record each had (if any)."""

    def __init__(self) -> None:
        self._waiting: dict[str, EnrichmentRecord | None] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, ip: object) -> bool:
        return ip in self._waiting

    def add(self, ip: str, previous: EnrichmentRecord | None) -> None:
        """Wait for ``ip``; ``previous`` is served if its lease ends unanswered."""
        self._waiting[ip] = previous

    def ips(self) -> list[str]:
        """The addresses waited on."""
        return list(self._waiting)

    def settle(self, view: CacheView) -> list[str]:
        """Forget what the store now answers, or what is free again; return the latter.

        Answered addresses (fresh, or fresh but owing a network source) are done here;
        those no longer leased go back to whois (a claim still held elsewhere will
        bring them back).
        """
        for ip in (*view.fresh, *view.partial, *view.to_fetch):
            self._waiting.pop(ip, None)
        return view.to_fetch

    def leftovers(
        self,
        stored: Mapping[str, EnrichmentRecord],
        pending: Callable[[str], EnrichmentRecord],
    ) -> list[EnrichmentRecord]:
        """At the end: the best record of each address still waited on; forgets them.

        ``pending`` makes the record of an address nobody answered.
        """
        records = [
            previous or stored.get(ip) or pending(ip) for ip, previous in self._waiting.items()
        ]
        self._waiting.clear()
        return records
