"""Which records go out to this sensor's host: its own input's, and those it is owed.

A run resumes the whole queue of the database (a dead sensor's addresses still get
asked), but the host's output holds only what it sent or is owed: a record this
sensor delivered unfinished (pending, or a network source's section pending) is owed
to it finished, whichever sensor finishes it, in this run or a later one
(:mod:`..store.owed`). The records of the other resumed addresses are stored and
withheld; if the host sends such an address afterwards, it is looked at again.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import StoreError
from ..record import EnrichmentRecord
from .steps import Enricher

__all__ = ["OwnOutput"]


class OwnOutput:
    """One run's view of what its host is owed. Thread-safe.

    :param failed: told of a database failure (the records still go out; at worst a
        finished record a later run is owed is not marked, or is delivered twice).
    :param active: ``False`` for a run that resumes nothing (the ``enrich`` filter's
        per-event records): every record goes out and nothing is owed.
    """

    def __init__(
        self, enricher: Enricher, failed: Callable[[Exception], None], *, active: bool = True
    ) -> None:
        self._active = active
        # a long-lived run's memory stays bounded: the oldest withheld are forgotten
        config = enricher.config
        self._most = config.working_set if config.long_lived else sys.maxsize
        self._rows = enricher.owed_rows()
        self._names = enricher.network.names
        self._failed = failed
        self._lock = threading.Lock()
        #: taken from the queue (or the owed list), not sent by the host, not out yet
        self._resumed: set[str] = set()
        #: of those, the ones whose record was withheld (oldest first)
        self._withheld: dict[str, None] = {}
        #: what this sensor is owed (read from the store once, kept up to date here)
        self._owed: set[str] | None = None

    def finished_owed(self) -> list[str]:
        """Owed addresses that are no longer queued: finished here or by another sensor."""
        try:
            return self._rows.finished()
        except StoreError as exc:
            self._failed(exc)
            return []

    def resumed(self, ips: Iterable[str]) -> None:
        """``ips`` were taken from the queue, not from the host."""
        with self._lock:
            self._resumed.update(ips)
            if len(self._resumed) > self._most:  # taken, then leased elsewhere: never out
                self._resumed.clear()

    def from_host(self, ips: Sequence[str]) -> list[str]:
        """The host sent ``ips``: theirs now. Those whose record was withheld, to look at again."""
        if not self._resumed and not self._withheld:  # the usual case: nothing resumed
            return []
        with self._lock:
            again = [ip for ip in ips if ip in self._withheld]
            self._resumed.difference_update(ips)
            for ip in again:
                del self._withheld[ip]
        return again

    def sift(self, records: list[EnrichmentRecord]) -> list[EnrichmentRecord]:
        """The records that go out; the others' addresses are noted as withheld."""
        if not self._resumed:
            return records
        owed = self._owed_now()
        kept = []
        with self._lock:
            for record in records:
                ip = record.ip
                if ip in self._resumed:
                    self._resumed.discard(ip)
                    if ip not in owed:
                        self._withheld[ip] = None
                        if len(self._withheld) > self._most:
                            del self._withheld[next(iter(self._withheld))]
                        continue
                kept.append(record)
        return kept

    def delivered(self, dicts: Sequence[Mapping[str, Any]]) -> None:
        """Note what went out: unfinished records are owed, finished owed ones settled."""
        if not self._active:
            return
        names = self._names
        unfinished = [
            d["ip"]
            for d in dicts
            if d["status"] == "pending" or any(_pending(d.get(name)) for name in names)
        ]
        if not unfinished and self._owed is not None and not self._owed:
            return
        owed = self._owed_now()
        with self._lock:  # emission runs on several threads
            due = set(unfinished) - owed
            settled = {d["ip"] for d in dicts if d["ip"] in owed} - set(unfinished)
            try:
                if due:
                    self._rows.owe(due)
                    owed |= due
                if settled:
                    self._rows.settle(settled)
                    owed -= settled
            except StoreError as exc:
                self._failed(exc)

    def _owed_now(self) -> set[str]:
        if self._owed is None:
            try:
                self._owed = self._rows.all()
            except StoreError as exc:
                self._failed(exc)
                return set()
        return self._owed


def _pending(section: object) -> bool:
    return isinstance(section, dict) and bool(section.get("pending"))
