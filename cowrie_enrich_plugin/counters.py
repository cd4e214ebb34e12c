"""The counters of one run: one definition, carried as data between the engine and the host.

The engine fills the fields it knows (cache, leases, whois, persisting), the host
side the ones it knows (events, refusals, new addresses, delivery); the two are
added field by field. ``cowrie_ingest_end`` returns :meth:`RunCounters.to_dict`
(the hook contract speaks mappings); the reference host reads it back with
:meth:`RunCounters.from_mapping`, so a renamed counter is a type error, not a zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["RunCounters", "WhoisCounters"]


@dataclass
class WhoisCounters:
    """What one bulk whois client did."""

    connections: int = 0
    batches: int = 0
    ips_sent: int = 0
    retries: int = 0
    failed_batches: int = 0
    circuit_opened: int = 0


@dataclass
class RunCounters:
    """The counters of one run, as ``cowrie_ingest_end`` returns them."""

    #: events handed to the plugin
    events: int = 0
    #: events whose ``src_ip`` was refused (not an address, missing)
    bad_src_ip: int = 0
    #: distinct usable addresses first seen in this run
    new_ips: int = 0
    #: addresses that are not globally routable: recorded, never sent
    skipped: int = 0
    #: addresses answered from a fresh stored record
    cache_hits: int = 0
    #: stored records that were stale (expired or pending) and asked again
    stale_refreshed: int = 0
    batches_sent: int = 0
    whois_connections: int = 0
    ips_sent: int = 0
    retries: int = 0
    failed_batches: int = 0
    circuit_opened: int = 0
    #: addresses whois answered in this run
    resolved: int = 0
    #: addresses left pending (the network failed for them)
    pending: int = 0
    #: addresses another process had leased when this run wanted them
    leased_elsewhere: int = 0
    delivered: int = 0
    in_flight_batches: int = 0
    errors: int = 0
    #: addresses the database could not record (collected again on the next run)
    unsaved: int = 0
    #: requests the extra sources (GreyNoise, third-party) made
    source_requests: int = 0
    #: extra sources' sections left pending (asked again later)
    source_pending: int = 0

    def __add__(self, other: RunCounters) -> RunCounters:
        return RunCounters(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def add_whois(self, whois: WhoisCounters) -> None:
        """Add a whois client's counters under their run names."""
        self.batches_sent += whois.batches
        self.whois_connections += whois.connections
        self.ips_sent += whois.ips_sent
        self.retries += whois.retries
        self.failed_batches += whois.failed_batches
        self.circuit_opened += whois.circuit_opened

    def to_dict(self) -> dict[str, int]:
        """The counters as a plain mapping (the hook's return value)."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunCounters:
        """Counters from a mapping a hook returned; unknown keys are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in values.items() if k in names})
