"""What the store knows about a set of addresses, as the engine's first step sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..record import EnrichmentRecord, SourceSection

__all__ = ["CacheView"]


@dataclass
class CacheView:
    """What the store knows about a set of addresses.

    ``fresh`` records need nothing; ``partial`` ones have a fresh Cymru answer but
    a network source to ask (``needs``); ``stale`` and ``unknown`` addresses need
    whois (and the network sources in ``needs``). ``sections`` holds the network sources'
    fresh sections already stored.
    """

    fresh: dict[str, EnrichmentRecord] = field(default_factory=dict)
    partial: dict[str, EnrichmentRecord] = field(default_factory=dict)
    stale: dict[str, EnrichmentRecord] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    sections: dict[str, dict[str, SourceSection]] = field(default_factory=dict)
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def to_fetch(self) -> list[str]:
        """Addresses to ask the network for: unknown, pending or stale."""
        return self.unknown + list(self.stale)
