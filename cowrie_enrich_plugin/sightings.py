"""What the host side remembers of the addresses it saw, and when it forgets them.

:class:`Sightings` judges each ``src_ip`` value the first time a run sees it (so that
a refused one can be named by file and line) and remembers the verdict: the common
case of an event is then one lookup in the set of addresses handed on, done in C for
a whole chunk.
:class:`Expiries` tells a long-lived run when the records it delivered expire: their
addresses are forgotten then, so that a sighting after that refreshes them.
:func:`split_news` tells the records the host delivers from those it has already.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Mapping, Sequence
from itertools import repeat
from typing import Any, Final

from . import clock
from .addresses import InvalidAddress, Usable, all_usable_ipv4, classify, is_usable_ipv4
from .record import delivery_signature, parse_time

__all__ = ["REMEMBER_SECONDS", "Expiries", "Refused", "Sightings", "Taken", "split_news"]

_MISSING: Final = object()
#: ``dict.get`` unbound: raises TypeError for anything but a dict, so the fast path
#: of :meth:`Sightings.take` falls back to the careful one.
_DICT_GET: Final[Callable[[Any, str, object], object]] = dict.get
#: How long a long-lived run remembers that it has handed an address on: seen again
#: after that, it goes to the engine again (which serves it from the store, refreshes
#: it, or retries it). One whose delivered record expired is forgotten at its expiry.
REMEMBER_SECONDS: Final = 3600.0
#: Refused values remembered at most (each is judged again once past this).
_MAX_REMEMBERED_INVALID: Final = 100_000

#: The events refused in a chunk: (index, why), or ``None`` when none is.
Refused = list[tuple[int, str]] | None
#: What a chunk held: the refused events, the new usable addresses, the new skipped ones.
Taken = tuple[Refused, list[str], list[str]]
#: Records that are news to the host, each with its delivery signature (a batch run: ``""``).
News = list[tuple[dict[str, Any], str]]


class Sightings:
    """The ``src_ip`` values one run has seen, their verdicts, and the addresses they name."""

    def __init__(self) -> None:
        #: the addresses (canonical text) handed on; a value that is one of these texts
        #: is itself canonical and handed on, so it is not remembered again below
        self.addresses: set[str] = set()
        #: the other values judged and remembered, with their verdicts (why one is
        #: refused; ``None`` for a spelling of an address that is not its canonical text)
        self._seen: dict[object, str | None] = {}
        self._invalid_remembered = 0
        #: the remembered values that are refused (a chunk holding none needs no scan)
        self._refusing: set[object] = set()

    def __len__(self) -> int:
        """How many values are remembered (what a long-lived run's ``working_set`` bounds)."""
        return len(self.addresses) + len(self._seen)

    def take(self, events: Sequence[Mapping[str, Any]]) -> Taken:
        """Look at a chunk: (refused events, new usable addresses, new skipped ones).

        The common case runs in C: every ``src_ip`` pulled with ``dict.get``, the
        distinct values of the chunk looked up in the run's memory at once (the set
        of addresses: a set's probe is cheaper than a dictionary's once the run's
        memory has left the core's cache). Events that are not dicts and values that
        cannot be hashed take the careful path.
        """
        try:
            distinct = dict.fromkeys(map(_DICT_GET, events, repeat("src_ip"), repeat(_MISSING)))
        except TypeError:
            return self._take_each(events)
        seen, addresses = self._seen, self.addresses
        usable: list[str] = []
        skipped: list[str] = []
        verdicts: dict[object, str] = {}
        if not distinct.keys() <= addresses:  # a chunk with nothing new needs no loop
            new = [raw for raw in distinct if raw not in addresses and raw not in seen]
            if all_usable_ipv4(new):  # the common first sight, judged in one pass
                usable = list(new)
                addresses.update(new)
            else:
                for raw in new:
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
        return refused, usable, skipped

    def _take_each(
        self, events: Sequence[Mapping[str, Any]]
    ) -> tuple[Refused, list[str], list[str]]:
        """:meth:`take`, one event at a time (for events that are not all plain dicts)."""
        seen, addresses = self._seen, self.addresses
        refused: Refused = None
        usable: list[str] = []
        skipped: list[str] = []
        for index, event in enumerate(events):
            try:
                raw = event.get("src_ip", _MISSING)
            except AttributeError:
                verdict: str | None = "event is not an object"
            else:
                try:
                    verdict = None if raw in addresses else seen[raw]
                except (KeyError, TypeError):  # first sight, or an unhashable value
                    verdict = self._first_sight(raw, usable, skipped)
            if verdict is not None:
                if refused is None:
                    refused = []
                refused.append((index, verdict))
        return refused, usable, skipped

    def _first_sight(self, raw: object, usable: list[str], skipped: list[str]) -> str | None:
        """Judge a value not seen before this run; remember it; note a new address."""
        if is_usable_ipv4(raw):  # the common case, without building a verdict object
            if raw not in self.addresses:
                self.addresses.add(raw)
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
                if verdict.ip not in self.addresses:
                    self.addresses.add(verdict.ip)
                    (usable if isinstance(verdict, Usable) else skipped).append(verdict.ip)
        try:
            if reason is None and raw in self.addresses:
                return None  # a canonical text: found among the addresses from now on
            if reason is None or self._invalid_remembered < _MAX_REMEMBERED_INVALID:
                self._seen[raw] = reason
                if reason is not None:
                    self._refusing.add(raw)
                    self._invalid_remembered += 1
        except TypeError:
            pass  # an unhashable value (a list, an object) cannot be remembered
        return reason

    def unanswered(self, delivered: Container[str]) -> tuple[list[str], list[str]]:
        """The addresses handed on whose record is not ``delivered``: (usable, skipped)."""
        usable: list[str] = []
        skipped: list[str] = []
        for ip in self.addresses:
            if ip not in delivered:
                (usable if isinstance(classify(ip), Usable) else skipped).append(ip)
        return usable, skipped

    def forget(self, ip: str) -> None:
        """Forget ``ip``: seen again, it is handed on again."""
        self._seen.pop(ip, None)
        self.addresses.discard(ip)


class Expiries:
    """When the records a long-lived run delivered expire (their addresses are forgotten then).

    :param retry_interval: how long a record that arrives expired waits, when its
        address is not to be asked again at once.
    :param bound: about how many expiries are kept, whatever comes.
    """

    def __init__(self, retry_interval: float, bound: int) -> None:
        self._retry_interval = retry_interval
        self._bound = bound
        #: (expiry, ip), a heap
        self._heap: list[tuple[float, str]] = []
        #: addresses asked again because their record expired on its way here
        self._asked_again: set[str] = set()

    def expired(self) -> list[str]:
        """The addresses whose time has come, removed."""
        heap = self._heap
        now = clock.wall() if heap else 0.0
        due: list[str] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[1])
        return due

    def note(
        self,
        records: list[dict[str, Any]],
        remembered: Container[str],
        *,
        stale: bool,
    ) -> list[str]:
        """Note when the records of ``remembered`` addresses expire.

        A fresh record is forgotten at its expiry, however soon: a sighting after that
        refreshes it. One the engine served ``stale`` (its refresh waits out its
        backoff) is forgotten after ``retry_interval``, not at every sighting. One that
        arrives expired otherwise expired on its way here (a busy engine, a slow
        host), and a sighting meant to refresh it may have been taken for it: its
        address is returned, to be asked again at once; arriving expired again, it
        waits as a stale one does.
        """
        heap, asked_again = self._heap, self._asked_again
        now = clock.wall()
        soonest = now + self._retry_interval
        again: list[str] = []
        for record in records:
            expires = parse_time(record["expires_at"])
            ip = record["ip"]
            if expires is None or ip not in remembered:
                continue
            at = expires.timestamp()
            if at > now:
                asked_again.discard(ip)
                heapq.heappush(heap, (at, ip))
            elif stale or ip in asked_again:
                # Asked again once already: a TTL shorter than the way here (or a
                # refresh that failed) would make every answer expired on arrival.
                asked_again.discard(ip)
                heapq.heappush(heap, (soonest, ip))
            else:
                asked_again.add(ip)
                again.append(ip)
        if len(heap) > 4 * self._bound:
            self._heap = heapq.nsmallest(2 * self._bound, heap)
        return again


def split_news(
    records: list[dict[str, Any]],
    repeats: tuple[str, ...],
    delivered: Mapping[str, str],
    *,
    long_lived: bool,
) -> tuple[News, list[dict[str, Any]]]:
    """Which ``records`` are news to the host (with their signatures), which it knows.

    A batch run delivers each address once (``delivered``: the addresses it did; it
    signs nothing, an empty signature). A long-lived one delivers a record again when
    it changed (``delivered``: the signature each got); ``repeats`` are the engine's
    word that this run delivered them as they are.
    """
    known: list[dict[str, Any]] = []
    if repeats:
        again = set(repeats)
        known = [r for r in records if r["ip"] in again]
        records = [r for r in records if r["ip"] not in again]
    if not long_lived:  # each address once: what it was delivered as is never asked
        return [(r, "") for r in records if r["ip"] not in delivered], known
    signed = [(r, delivery_signature(r)) for r in records]
    news = [(r, sign) for r, sign in signed if delivered.get(r["ip"]) != sign]
    if len(news) < len(signed):
        known += (r for r, sign in signed if delivered.get(r["ip"]) == sign)
    return news, known
