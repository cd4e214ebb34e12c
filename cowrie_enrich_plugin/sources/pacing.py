"""Pacing a network source: a request rate, a circuit breaker, a daily quota.

Tools any :class:`.plugin.NetworkSource` may use, all thread-safe and all on the
package's clock (:mod:`..clock`), so that a simulated day paces them as it paces the
rest. The whois client uses the breaker; the GreyNoise client all three. Retries
with backoff are tenacity's in both.
"""

from __future__ import annotations

import logging
import threading
from typing import Final, Protocol

from .. import clock
from ..errors import StoreError

__all__ = ["Breaker", "DailyQuota", "Ledger", "RateLimit"]

logger = logging.getLogger(__name__)

#: Seconds a quota spent in a shared ledger waits before it asks the ledger again.
_RECHECK: Final = 60.0


class RateLimit:
    """At most one request every ``1 / per_second`` seconds, across threads."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, longest: float) -> bool:
        """Sleep until this request may go; ``False`` (no sleep) when that is over ``longest``."""
        with self._lock:
            now = clock.monotonic()
            start = max(now, self._next)
            if start - now > longest:
                return False
            self._next = start + self.interval
        if start > now:
            clock.sleep(start - now)
        return True

    def hold_off(self, seconds: float) -> None:
        """No request for ``seconds`` (the server asked us to wait)."""
        with self._lock:
            self._next = max(self._next, clock.monotonic() + seconds)


class Breaker:
    """Stops asking a server that keeps failing, for a cooldown; then lets one request try.

    After ``threshold`` failures in a row the breaker opens: nothing is asked for
    ``cooldown`` seconds. Then it is half-open: one request, the trial, may go (the
    others still wait, and another trial may go a cooldown later if this one never
    reports); an answer closes the breaker, the trial's failure opens it again for
    twice as long, up to ``longest``. Failures of requests sent before it opened
    change nothing. On the package's clock.

    :param what: names the server in the log (``"GreyNoise"``, ``"whois at host:43"``).
    :param level: the log level of its opening.
    """

    def __init__(
        self,
        what: str,
        threshold: int,
        cooldown: float,
        longest: float | None = None,
        level: int = logging.WARNING,
    ) -> None:
        self.what = what
        self.threshold = threshold
        self._level = level
        self._first_cooldown = self._cooldown = cooldown
        self._longest = cooldown if longest is None else longest
        self._in_a_row = 0
        self._open = False
        self._open_until = 0.0
        #: the thread whose request is the half-open trial (``None``: no trial out)
        self._trial: int | None = None
        #: how many times it opened (a trial that failed keeps it open: not counted)
        self.opened = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a request may go now (when half-open, only the trial)."""
        with self._lock:
            if not self._open:
                return True
            now = clock.monotonic()
            if now < self._open_until:
                return False
            self._open_until = now + self._cooldown  # the others wait for the trial
            self._trial = threading.get_ident()
            return True

    def closed_in(self) -> float:
        """Seconds until a request may go again (0: now)."""
        with self._lock:
            return max(0.0, self._open_until - clock.monotonic()) if self._open else 0.0

    @property
    def is_open(self) -> bool:
        """Whether requests are stopped now (a gauge)."""
        with self._lock:
            return self._open and clock.monotonic() < self._open_until

    def failed(self) -> None:
        """Count a failed request (on the thread that sent it)."""
        with self._lock:
            if self._open:
                if self._trial != threading.get_ident():
                    return  # sent before it opened: already counted in
                self._trial = None
                self._cooldown = min(self._cooldown * 2, self._longest)
                self._open_until = clock.monotonic() + self._cooldown
                level, what = logging.INFO, "still fails"
            else:
                self._in_a_row += 1
                if self._in_a_row < self.threshold:
                    return
                self._open = True
                self._open_until = clock.monotonic() + self._cooldown
                self.opened += 1
                level, what = self._level, f"failed {self._in_a_row} time(s) in a row"
            cooldown = self._cooldown
        logger.log(
            level,
            "%s %s; not asked for %.0fs (what it owes stays pending)",
            self.what,
            what,
            cooldown,
        )

    def answered(self) -> None:
        """A request was answered (the server is alive): the breaker closes."""
        with self._lock:
            self._open = False
            self._trial = None
            self._in_a_row = 0
            self._cooldown = self._first_cooldown


class Ledger(Protocol):
    """Where a quota is counted beyond this process (the store's: ``store.quota``)."""

    def take(self, limit: int) -> bool:
        """Count one request unless ``limit`` (0: none) is reached or the day is spent."""

    def spend(self) -> None:
        """Mark today spent."""

    def today(self) -> Today:
        """Today's requests and whether the day is spent (counting nothing)."""


class Today(Protocol):
    """What a :class:`Ledger` says of today."""

    @property
    def requests(self) -> int:
        """Requests counted today."""

    @property
    def spent(self) -> bool:
        """Whether the source said today's allowance is spent."""


class DailyQuota:
    """Requests a UTC day: a client-side limit (0: none), and the server's word that it is spent.

    Counted in this process, or, once :meth:`share` gave it a ledger, by every process
    on that ledger (the store's: a fleet on one database shares one quota, across
    restarts). While the ledger cannot be reached, this process's own count holds.
    Once the day is spent, the ledger is asked again at most every
    :data:`_RECHECK` seconds (its day may begin before this process's does).
    """

    def __init__(self, limit: int, what: str = "the source") -> None:
        self.limit = limit
        self.what = what
        self._day = clock.utc_now().date()
        self._used = 0
        self._spent = False
        self._recheck_at = float("inf")
        self._ledger: Ledger | None = None
        self._ledger_down = False
        self._ledger_retry_at = float("-inf")
        self._server_spent = False
        self._lock = threading.Lock()

    def share(self, ledger: Ledger) -> None:
        """Count in ``ledger`` from now on, starting from what it says of today.

        A process that starts on a spent day knows it before it asks anything, so
        that a rerun leaves what is pending alone until the day turns.
        """
        self._ledger = ledger
        try:
            today = ledger.today()
        except StoreError:
            return  # the first request's take() tells
        if today.spent or (self.limit and today.requests >= self.limit):
            with self._lock:
                self._day = clock.utc_now().date()
                self._spent = True
                self._recheck_at = clock.monotonic() + _RECHECK

    @property
    def spent(self) -> bool:
        """Whether no request may go today (as of the last request tried)."""
        with self._lock:
            return self._spent and clock.utc_now().date() == self._day

    def take(self) -> bool:
        """Count one request; ``False`` when the day's allowance is gone (do not ask)."""
        with self._lock:
            today = clock.utc_now().date()
            if today != self._day:
                self._day, self._used, self._spent = today, 0, False
                self._server_spent = False
            if self._spent and clock.monotonic() < self._recheck_at:
                return False
            if not self._allowed():
                if not self._spent:
                    logger.warning(
                        "%s: the daily quota (%s) is spent; its sections stay pending until "
                        "the next UTC day",
                        self.what,
                        f"{self.limit} requests" if self.limit else "the server's",
                    )
                self._spent = True
                self._recheck_at = clock.monotonic() + _RECHECK if self._ledger else float("inf")
                return False
            self._spent = False
            self._used += 1
            return True

    def _allowed(self) -> bool:
        local = not self._server_spent and (not self.limit or self._used < self.limit)
        # A ledger that failed is left alone a while: each try may take seconds of retries.
        if self._ledger is None or clock.monotonic() < self._ledger_retry_at:
            return local
        try:
            allowed = self._ledger.take(self.limit)
        except StoreError as exc:
            self._ledger_retry_at = clock.monotonic() + _RECHECK
            if not self._ledger_down:
                logger.warning(
                    "%s: the requests of the day cannot be counted in the database (%s); "
                    "this process counts its own until it can",
                    self.what,
                    exc,
                )
            self._ledger_down = True
            return local
        self._ledger_down = False
        return allowed

    def spend(self) -> None:
        """The server said the day's allowance is spent: ask no more today."""
        with self._lock:
            if not self._spent:
                logger.warning(
                    "%s: the daily quota is spent; the rest stays pending until tomorrow",
                    self.what,
                )
            self._spent = self._server_spent = True
            self._recheck_at = clock.monotonic() + _RECHECK if self._ledger else float("inf")
            ledger = self._ledger
        if ledger is not None:
            try:
                ledger.spend()
            except StoreError as exc:
                logger.warning("%s: could not record the spent quota: %s", self.what, exc)
