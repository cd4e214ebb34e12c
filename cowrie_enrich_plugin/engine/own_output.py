"""Which records go out to this sensor's host: its own input's, and those it is owed.

A run resumes the whole queue of the database (a dead sensor's addresses still get
asked), but the host's output holds what it sent in this run, and what this sensor
delivered unfinished before (pending, or a network source's section pending): that is
owed to it finished, whichever sensor finishes it (:mod:`..store.owed`). A resumed
address another sensor is owed is stored and withheld; one nobody is owed (queued by
``lookup``, or before sensors were told apart) goes out as before. If the host sends
a withheld address afterwards, it is looked at again.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import StoreError
from ..record import EnrichmentRecord
from .steps import Enricher

__all__ = ["OwnOutput"]

_T = TypeVar("_T")


class OwnOutput:
    """One run's view of what its host is owed. Thread-safe.

    :param failed: told of a database failure; the records still go out (at worst a
        finished record is delivered twice, or one owed is not marked as such).
    :param paused: whether the database is left alone now (the store gate).
    :param active: ``False`` for a run that resumes nothing (the ``enrich`` filter's
        per-event records): every record goes out and nothing is owed.
    """

    def __init__(
        self,
        enricher: Enricher,
        failed: Callable[[Exception], None],
        paused: Callable[[], bool],
        *,
        active: bool = True,
    ) -> None:
        self._active = active
        config = enricher.config
        # a long-lived run's memory stays bounded: the oldest addresses are forgotten
        # (a record it delivered pending is owed in the store, so it still comes out)
        self._most = config.working_set if config.long_lived else sys.maxsize
        self._rows = enricher.owed_rows()
        self._names = enricher.network.names
        self._failed = failed
        self._paused = paused
        self._lock = threading.Lock()
        #: what the host sent in this run (oldest first)
        self._hosts: dict[str, None] = {}
        #: resumed addresses whose record was withheld (oldest first)
        self._withheld: dict[str, None] = {}
        #: what this sensor is owed (read from the store once, kept up to date here)
        self._owed: set[str] | None = None

    def finished_owed(self) -> list[str]:
        """Owed addresses nothing waits on any more: finished here or by another sensor."""
        if not self._active:
            return []
        return self._store(self._rows.finished, [])

    def from_host(self, ips: Sequence[str]) -> list[str]:
        """The host sent ``ips``. Those whose record was withheld, to look at again."""
        if not self._active:
            return []
        with self._lock:
            hosts = self._hosts
            hosts.update(dict.fromkeys(ips))
            while len(hosts) > self._most:
                del hosts[next(iter(hosts))]
            if not self._withheld:
                return []
            again = [ip for ip in ips if ip in self._withheld]
            for ip in again:
                del self._withheld[ip]
        return again

    def sift(self, records: list[EnrichmentRecord]) -> list[EnrichmentRecord]:
        """The records that go out; the others' addresses are noted as withheld."""
        if not self._active:
            return records
        with self._lock:
            foreign = [r.ip for r in records if r.ip not in self._hosts]
        if not foreign:
            return records
        owed = self._owed_now()
        elsewhere = self._owed_elsewhere([ip for ip in foreign if ip not in owed])
        if not elsewhere:
            return records
        with self._lock:
            for ip in elsewhere:
                self._withheld[ip] = None
            while len(self._withheld) > self._most:
                del self._withheld[next(iter(self._withheld))]
        return [r for r in records if r.ip not in elsewhere]

    def owe(self, dicts: Sequence[Mapping[str, Any]]) -> None:
        """Before they go out: unfinished records are owed to this sensor finished."""
        if not self._active:
            return
        names = self._names
        unfinished = {d["ip"] for d in dicts if _unfinished(d, names)}
        if not unfinished:
            return
        owed = self._owed_now()
        self._change(unfinished - owed, self._rows.owe, owed.update)

    def settle(self, dicts: Sequence[Mapping[str, Any]]) -> None:
        """After they went out: finished records of owed addresses are owed no more."""
        if not self._active or (self._owed is not None and not self._owed):
            return
        owed = self._owed_now()
        names = self._names
        settled = {d["ip"] for d in dicts if d["ip"] in owed and not _unfinished(d, names)}
        self._change(settled, self._rows.settle, owed.difference_update)

    def _store(self, work: Callable[[], _T], otherwise: _T) -> _T:
        """``work`` on the owed rows; ``otherwise`` while the database is left alone or fails."""
        if self._paused():
            return otherwise
        try:
            return work()
        except StoreError as exc:
            self._failed(exc)
            return otherwise

    def _change(
        self, ips: set[str], write: Callable[[set[str]], None], note: Callable[[set[str]], None]
    ) -> None:
        """``write`` ``ips`` to the owed rows, then ``note`` them in this run's set."""

        def work() -> bool:
            write(ips)
            return True

        if not ips or not self._store(work, False):
            return
        with self._lock:
            note(ips)

    def _owed_now(self) -> set[str]:
        with self._lock:
            if self._owed is not None:
                return self._owed
        found = self._store(self._rows.all, None)
        if found is None:
            return set()  # read when the database is back
        with self._lock:
            if self._owed is None:
                self._owed = found
            return self._owed

    def _owed_elsewhere(self, ips: Iterable[str]) -> set[str]:
        wanted = list(ips)
        if not wanted:
            return set()
        return self._store(lambda: self._rows.owed_elsewhere(wanted), set())


def _unfinished(record: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    """Pending for whois, or for one of the network sources ``names``."""
    return record["status"] == "pending" or (
        bool(names) and any(_pending(record.get(name)) for name in names)
    )


def _pending(section: object) -> bool:
    return isinstance(section, dict) and bool(section.get("pending"))
