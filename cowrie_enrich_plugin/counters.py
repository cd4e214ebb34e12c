"""The counters of one run: one definition, carried as data between the engine and the host.

The engine fills the fields it knows (cache, leases, whois, persisting), the host
side the ones it knows (events, refusals, new addresses, delivery); the two are
added field by field. ``cowrie_ingest_end`` returns :meth:`RunCounters.to_dict`
(the hook contract speaks mappings); the reference host reads it back with
:meth:`RunCounters.from_mapping`, so a renamed counter is a type error, not a zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Final

__all__ = ["BATCH_SECONDS_BUCKETS", "GAUGES", "RunCounters", "WhoisCounters", "added_up"]


#: Upper bounds, in seconds, of the whois batch duration histogram's buckets (+Inf last).
BATCH_SECONDS_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: The fields of :class:`RunCounters` that are gauges (a value now), not counters.
GAUGES: Final = (
    "in_flight_batches",
    "circuit_open",
    "pending_now",
    "outstanding",
    "waiting_elsewhere",
    "backlog",
    "broker_in_hand",
)


@dataclass
class WhoisCounters:
    """What one bulk whois client did."""

    connections: int = 0
    batches: int = 0
    ips_sent: int = 0
    retries: int = 0
    failed_batches: int = 0
    circuit_opened: int = 0
    #: batches per duration bucket (:data:`BATCH_SECONDS_BUCKETS`, then +Inf)
    batch_seconds: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SECONDS_BUCKETS) + 1))
    batch_seconds_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one batch's duration."""
        index = next(
            (i for i, bound in enumerate(BATCH_SECONDS_BUCKETS) if seconds <= bound),
            len(BATCH_SECONDS_BUCKETS),
        )
        self.batch_seconds[index] += 1
        self.batch_seconds_sum += seconds


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
    #: times a long-lived run started a new worker after its worker died
    worker_restarts: int = 0
    #: addresses the database could not record (collected again on the next run)
    unsaved: int = 0
    #: requests the network sources (GreyNoise, third-party) made
    source_requests: int = 0
    #: network sources' sections left pending (asked again later)
    source_pending: int = 0
    #: per network source: (name, requests, sections left pending)
    sources: tuple[tuple[str, int, int], ...] = ()
    #: network sources whose daily quota is spent (they ask no more until it resets)
    quota_spent: tuple[str, ...] = ()
    #: records delivered per kind of the feeds' labels (``none``: no feed lists it)
    kinds: tuple[tuple[str, int], ...] = ()
    #: whois batches per duration bucket (``BATCH_SECONDS_BUCKETS``, then +Inf), and the sum
    whois_batch_seconds: tuple[int, ...] = ()
    whois_batch_seconds_sum: float = 0.0
    #: gauge: 1 while the whois circuit breaker is open
    circuit_open: int = 0
    #: gauge: addresses pending in the store now (as of the engine's last look)
    pending_now: int = 0
    #: gauge: addresses of a batch run handed on whose record has not come back yet
    outstanding: int = 0
    #: gauge: addresses whose answer another process (holding their lease) is getting
    waiting_elsewhere: int = 0
    #: gauge: addresses the engine has taken on and not settled (buffered, in a batch,
    #: or waited for), those of earlier runs it retries included
    backlog: int = 0
    #: ``consume``: messages taken from the broker, published enriched, and taken again
    #: after another consumer's (or connection's) end
    broker_consumed: int = 0
    broker_published: int = 0
    broker_redelivered: int = 0
    #: gauge: ``consume``'s messages taken and not acknowledged yet
    broker_in_hand: int = 0

    def counted(self) -> RunCounters:
        """These counters with the gauges at zero (what a gone worker still adds up to)."""
        zeros: dict[str, Any] = dict.fromkeys(GAUGES, 0)
        return replace(self, **zeros, quota_spent=())

    def __add__(self, other: RunCounters) -> RunCounters:
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "sources":
                merged: dict[str, tuple[int, int]] = {}
                for name, requests, pending in (*mine, *theirs):
                    before = merged.get(name, (0, 0))
                    merged[name] = (before[0] + requests, before[1] + pending)
                values[f.name] = tuple((n, r, p) for n, (r, p) in sorted(merged.items()))
            elif f.name == "quota_spent":
                values[f.name] = tuple(sorted({*mine, *theirs}))
            elif f.name == "kinds":
                total: dict[str, int] = {}
                for kind, count in (*mine, *theirs):
                    total[kind] = total.get(kind, 0) + count
                values[f.name] = tuple(sorted(total.items()))
            elif isinstance(mine, tuple):
                longest = max(len(mine), len(theirs))
                padded = zip(
                    (*mine, *[0] * (longest - len(mine))),
                    (*theirs, *[0] * (longest - len(theirs))),
                    strict=True,
                )
                values[f.name] = tuple(a + b for a, b in padded)
            else:
                values[f.name] = mine + theirs
        return RunCounters(**values)

    def add_whois(self, whois: WhoisCounters) -> None:
        """Add a whois client's counters under their run names."""
        self.batches_sent += whois.batches
        self.whois_connections += whois.connections
        self.ips_sent += whois.ips_sent
        self.retries += whois.retries
        self.failed_batches += whois.failed_batches
        self.circuit_opened += whois.circuit_opened
        self.whois_batch_seconds = tuple(whois.batch_seconds)
        self.whois_batch_seconds_sum += whois.batch_seconds_sum

    def to_dict(self) -> dict[str, Any]:
        """The counters as a plain, JSON-ready mapping (the hook's return value)."""
        data = asdict(self)
        data["sources"] = [list(item) for item in self.sources]
        data["kinds"] = [list(item) for item in self.kinds]
        data["quota_spent"] = list(self.quota_spent)
        data["whois_batch_seconds"] = list(self.whois_batch_seconds)
        return data

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunCounters:
        """Counters from a mapping a hook returned; unknown keys are left out."""
        template = cls()
        kinds = {f.name: type(getattr(template, f.name)) for f in fields(cls)}
        found: dict[str, Any] = {}
        for key, value in values.items():
            kind = kinds.get(key)
            if kind is None:
                continue
            if key == "sources":
                found[key] = tuple((str(n), int(r), int(p)) for n, r, p in value)
            elif key == "kinds":
                found[key] = tuple((str(k), int(c)) for k, c in value)
            elif key == "quota_spent":
                found[key] = tuple(str(name) for name in value)
            elif kind is tuple:
                found[key] = tuple(int(v) for v in value)
            else:
                found[key] = kind(value)
        return cls(**found)


def added_up(results: Iterable[object]) -> RunCounters:
    """The counters of several plugins' ``cowrie_ingest_progress`` or ``_end`` answers."""
    total = RunCounters()
    for counts in results:
        if isinstance(counts, Mapping):
            total = total + RunCounters.from_mapping(counts)
    return total
