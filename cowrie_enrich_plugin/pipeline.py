"""The host's side of a run: collect addresses cheaply, hand them on, deliver what comes back.

On the host's thread, :meth:`IngestPipeline.ingest` costs a dictionary lookup per
event; an address seen for the first time is validated here (so that a refused
``src_ip`` can be named by file and line) and handed to the flusher (see
:mod:`.flusher`), which runs in a worker process or thread (see :mod:`.worker`).
Records come back to this side and are delivered from inside the host's own calls,
on its thread, each address once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, Final

from .addresses import InvalidAddress, Usable, classify, is_usable_ipv4
from .config import EnrichConfig
from .errors import StoreError, WorkerError
from .geofile import Kind, check_file
from .worker import Message, ProcessTransport, ThreadTransport, Transport, raise_worker_error

__all__ = ["IngestPipeline", "RunStats", "check_files"]

logger = logging.getLogger(__name__)

_MISSING: Final = object()
#: ``dict.get`` unbound: raises TypeError for anything but a dict, so the fast path
#: of :meth:`IngestPipeline.ingest` falls back to the careful one.
_DICT_GET: Final[Callable[[Any, str, object], object]] = dict.get
_MAX_REMEMBERED_INVALID: Final = 100_000

Deliver = Callable[[list[dict[str, Any]]], None]


@dataclass
class RunStats:
    """The counters of one run, as ``cowrie_ingest_end`` returns them."""

    events: int = 0
    bad_src_ip: int = 0
    new_ips: int = 0
    skipped: int = 0
    cache_hits: int = 0
    stale_refreshed: int = 0
    batches_sent: int = 0
    whois_connections: int = 0
    ips_sent: int = 0
    retries: int = 0
    failed_batches: int = 0
    circuit_opened: int = 0
    resolved: int = 0
    pending: int = 0
    leased_elsewhere: int = 0
    delivered: int = 0
    in_flight_batches: int = 0
    errors: int = 0
    #: addresses the database could not record (collected again on the next run)
    unsaved: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counters as a plain mapping."""
        return asdict(self)


def check_files(config: EnrichConfig) -> None:
    """Refuse, before any work, GeoIP files of the wrong kind and a SQLite file that cannot be.

    :raises GeoDatabaseError: for a corrupt or wrong-type GeoIP file.
    :raises StoreError: for a SQLite path whose directory does not exist.
    """
    slots: tuple[tuple[str | None, Kind], ...] = (
        (config.geoip_city, "city"),
        (config.geoip_asn, "asn"),
    )
    for path, kind in slots:
        if path and os.path.exists(path):
            check_file(path, kind)
    prefix, _, rest = config.db.partition(":///")
    if prefix.split("+")[0] == "sqlite" and rest and not rest.startswith(":memory:"):
        folder = Path(rest.split("?")[0]).parent
        if not folder.is_dir():
            raise StoreError(
                f"cannot open the database {config.db!r}: the directory {folder} does not exist"
            )


class IngestPipeline:
    """One run of the enrichment plugin beside a host's ingest.

    :param config: the validated settings.
    :param deliver: called on the host's thread with ready records (as dicts).
    """

    def __init__(self, config: EnrichConfig, deliver: Deliver) -> None:
        self.config = config
        self._deliver_fn = deliver
        self._seen: dict[object, str | None] = {}
        self._canonical: set[str] = set()
        self._invalid_remembered = 0
        #: the remembered values that are refused (a chunk holding none needs no scan)
        self._refusing: set[object] = set()
        self._delivered: set[str] = set()
        self._stats = RunStats()
        self._remote: dict[str, int] = {}
        self._transport: Transport | None = None
        self._done = False

    # -- the host's thread ----------------------------------------------------------

    def start(self) -> None:
        """Start the flusher (in a worker process unless ``worker = "thread"``).

        A worker process opens the store and the GeoIP files itself; what can be
        checked cheaply here is checked first, so bad settings are refused at start.
        """
        if self.config.worker == "thread":
            self._transport = ThreadTransport(self.config)
            return
        check_files(self.config)
        self._transport = ProcessTransport(self.config)

    @property
    def transport(self) -> Transport:
        """The running flusher's transport."""
        if self._transport is None:
            raise RuntimeError("the pipeline was not started")
        return self._transport

    def ingest(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]] | None:
        """Collect the source addresses of ``events``; return the refused ones (index, why).

        The common case runs in C: every ``src_ip`` pulled with ``dict.get``, the
        distinct values of the chunk looked up in the run's memory at once. Events
        that are not dicts and values that cannot be hashed take the careful path.
        """
        if not isinstance(events, list | tuple):  # read twice when some are refused
            events = list(events)
        try:
            distinct = dict.fromkeys(map(_DICT_GET, events, repeat("src_ip"), repeat(_MISSING)))
        except TypeError:
            return self._ingest_each(events)
        seen = self._seen
        usable: list[str] = []
        skipped: list[str] = []
        verdicts: dict[object, str] = {}
        for raw in distinct:
            if raw in seen:
                continue
            reason = self._first_sight(raw, usable, skipped)
            if reason is not None:
                verdicts[raw] = reason
        if not self._refusing.isdisjoint(distinct):
            for raw in self._refusing.intersection(distinct):
                verdicts[raw] = str(seen[raw])
        refused = None
        if verdicts:  # rare: only now is each event's value needed again, by index
            raws = map(_DICT_GET, events, repeat("src_ip"), repeat(_MISSING))
            refused = [(i, verdicts[raw]) for i, raw in enumerate(raws) if raw in verdicts]
        self._collected(len(events), refused, usable, skipped)
        return refused

    def _ingest_each(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]] | None:
        """:meth:`ingest`, one event at a time (for events that are not all plain dicts)."""
        seen = self._seen
        refused: list[tuple[int, str]] | None = None
        usable: list[str] = []
        skipped: list[str] = []
        for index, event in enumerate(events):
            try:
                raw = event.get("src_ip", _MISSING)
            except AttributeError:
                verdict: str | None = "event is not an object"
            else:
                try:
                    verdict = seen[raw]
                except (KeyError, TypeError):  # first sight, or an unhashable value
                    verdict = self._first_sight(raw, usable, skipped)
            if verdict is not None:
                if refused is None:
                    refused = []
                refused.append((index, verdict))
        self._collected(len(events), refused, usable, skipped)
        return refused

    def _collected(
        self,
        events: int,
        refused: list[tuple[int, str]] | None,
        usable: list[str],
        skipped: list[str],
    ) -> None:
        """Count a chunk, hand its new addresses on, and deliver what is ready."""
        self._stats.events += events
        if refused:
            self._stats.bad_src_ip += len(refused)
        if usable:
            self._stats.new_ips += len(usable)
            self.transport.send(("ips", usable))
        if skipped:
            self.transport.send(("skip", skipped))
        self._handle(self.transport.poll())

    def _first_sight(self, raw: object, usable: list[str], skipped: list[str]) -> str | None:
        """Judge a value not seen before this run; remember it; queue a new address."""
        if is_usable_ipv4(raw):  # the common case, without building a verdict object
            self._seen[raw] = None
            if raw not in self._canonical:
                self._canonical.add(raw)
                usable.append(raw)
            return None
        if raw is _MISSING:
            reason: str | None = "event has no src_ip"
        else:
            verdict = classify(raw)
            if isinstance(verdict, InvalidAddress):
                reason = verdict.reason
            else:
                reason = None
                if verdict.ip not in self._canonical:
                    self._canonical.add(verdict.ip)
                    (usable if isinstance(verdict, Usable) else skipped).append(verdict.ip)
        try:
            if reason is None or self._invalid_remembered < _MAX_REMEMBERED_INVALID:
                self._seen[raw] = reason
                if reason is not None:
                    self._refusing.add(raw)
                    self._invalid_remembered += 1
        except TypeError:
            pass  # an unhashable value (a list, an object) cannot be remembered
        return reason

    def checkpoint(self) -> None:
        """Ask for a flush of partly filled batches; deliver what is ready. Does not wait."""
        self.transport.send(("flush",))
        self._handle(self.transport.poll())

    def end(self, timeout: float | None = None) -> RunStats:
        """Flush everything, wait for every batch, deliver, and return the run's counters.

        Returns within ``timeout`` seconds (default: a bound derived from the
        configuration); what is not resolved by then is recorded pending in the
        store (it was leased and marked pending before its batch was sent).
        """
        if self._done:
            return self.stats()
        transport = self.transport
        transport.send(("end",))
        bound = timeout if timeout is not None else self._end_bound()
        deadline = time.monotonic() + bound
        try:
            while not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.error(
                        "enrichment did not finish within %.0fs; the rest stays pending", bound
                    )
                    break
                self._handle(transport.wait(min(left, 0.5)))
        finally:
            transport.close()
        return self.stats()

    def _end_bound(self) -> float:
        """The longest ``end`` waits, in seconds.

        Batches that fail every attempt (the circuit breaker opens after three, so a
        backlog then drains at once), another process's leases, and slack. What is
        still out after that stays pending in the store.
        """
        cfg = self.config
        per_batch = cfg.timeout * cfg.retries + 30.0 * cfg.retries  # attempts + backoff
        return 3 * per_batch + 120.0

    def _handle(self, messages: list[Message]) -> None:
        """Act on what the flusher sent: deliver records, keep counters, raise its errors."""
        for message in messages:
            kind = message[0]
            if kind == "records":
                if message[2] is not None:
                    self._remote = message[2]
                self._deliver(message[1])
            elif kind == "ready":
                logger.debug("the enrichment worker is ready")
            elif kind == "done":
                self._remote = message[1]
                self._done = True
            elif kind == "error":
                self._done = True
                raise_worker_error(message[1], message[2])
            elif kind == "exit" and not self._done:
                self._done = True
                self._stats.errors += 1
                raise WorkerError(
                    f"the enrichment worker exited with status {message[1]} before the end; "
                    "what it had not resolved stays pending in the store"
                )

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        ready = [r for r in records if r["ip"] not in self._delivered]
        if not ready:
            return
        self._delivered.update(r["ip"] for r in ready)
        self._stats.delivered += len(ready)
        self._deliver_fn(ready)

    def stats(self) -> RunStats:
        """A snapshot of the counters: the host side's, with the flusher's merged in."""
        stats = RunStats(**self._stats.to_dict())
        for key, value in self._remote.items():
            if hasattr(stats, key):
                setattr(stats, key, getattr(stats, key) + value)
        return stats
