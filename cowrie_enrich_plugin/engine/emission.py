"""How the engine hands records on: every section accounted for, kinds counted, repeats named.

Each record leaves as a dict, with a ``pending`` mark for a network source's section
it lacks and the feeds' labels of a record built before any feed was installed. A
long-lived run that delivers each record once also learns, from the store, which of
them it delivered before as they are (:class:`.lifecycle.OncePerRun`); when the
database is down that question is skipped, so a record may be delivered twice, never
lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import StoreError
from ..record import EnrichmentRecord
from .gate import StoreGate
from .lifecycle import OncePerRun
from .own_output import OwnOutput
from .sections import with_every_section
from .steps import Enricher

__all__ = ["Emission", "Emit"]

#: records ready, which of them this long-lived run delivered as they are, and whether
#: they are served knowing they expired
Emit = Callable[[list[dict[str, Any]], tuple[str, ...], bool], None]


class Emission:
    """The engine's one way out for records.

    :param emit: called (from any of the engine's threads) with the dicts.
    """

    def __init__(self, enricher: Enricher, emit: Emit, gate: StoreGate, own: OwnOutput) -> None:
        self._enricher = enricher
        self._own = own
        self._emit = emit
        self._gate = gate
        self._once = OncePerRun(enricher)

    def start(self) -> None:
        """Forget what runs that are gone delivered (a long-lived run's first step)."""
        try:
            self._once.start()
        except StoreError as exc:
            self._gate.failed(exc)

    def __call__(self, records: Iterable[EnrichmentRecord], *, stale: bool = False) -> None:
        """Hand ``records`` on; a network source's section that is missing is marked pending.

        ``stale``: they expired, and are served so while their refresh waits.
        """
        names = self._enricher.network.names
        if names:
            records = [with_every_section(record, names) for record in records]
        completed = self._enricher.completed
        dicts = [
            completed(record).to_dict(classification_as_is=True)
            for record in self._own.sift(list(records))
        ]
        if not dicts:
            return
        self._own.owe(dicts)  # before they go out: a kill between leaves them owed
        self._enricher.count_kinds(dicts)
        repeats: tuple[str, ...] = ()
        if self._once.active and not self._gate.paused():  # else a repeat, not a loss
            try:
                repeats = self._once.repeats(dicts)
            except StoreError as exc:
                self._gate.failed(exc)
        self._emit(dicts, repeats, stale)
        self._own.settle(dicts)
