"""The database's time, as this process reads it: what leases are timed by.

Sensors sharing one PostgreSQL compare each other's leases. Timed by each sensor's
own clock, a lease taken by a sensor whose clock is behind looks expired to one
whose clock is ahead, and both ask whois (±300 s of skew asked 3,091 addresses of
12,000 twice). So every time the store writes or compares (leases and backoffs;
a record's own times are the answering sensor's) is the database server's: this process's clock
plus the offset measured with ``SELECT now()``, measured again every few minutes (an
NTP step on either side). SQLite is on this host: its offset is zero.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .. import clock

__all__ = ["DatabaseClock"]

logger = logging.getLogger(__name__)

#: How often the offset is measured again (seconds on the package's clock).
_REMEASURE: Final = 300.0
#: After a failed measurement (a full server, say), the next try (seconds).
_RETRY: Final = 10.0
#: An offset smaller than this is noise (the round trip's own uncertainty): zero.
_NOISE: Final = dt.timedelta(milliseconds=50)


class DatabaseClock:
    """``now()`` on the database server's clock (a UTC-aware datetime)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._remote = engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        self.offset = dt.timedelta(0)
        self._measured_at: float | None = None

    def now(self) -> dt.datetime:
        """The database's time now."""
        if self._remote:
            at = clock.monotonic()
            if self._measured_at is None or at - self._measured_at >= _REMEASURE:
                self._measure(at)
        return clock.utc_now() + self.offset

    def _measure(self, at: float) -> None:
        with self._lock:
            if self._measured_at is not None and at - self._measured_at < _REMEASURE:
                return  # another thread just did
            self._measured_at = at
            try:
                with self._engine.connect() as conn:
                    before = clock.utc_now()
                    theirs = conn.execute(sa.text("SELECT now()")).scalar_one()
                    after = clock.utc_now()
            except sa.exc.SQLAlchemyError:  # the next statement says what is wrong
                self._measured_at = at - _REMEASURE + _RETRY  # soon: skew matters now
                return
            offset = theirs - (before + (after - before) / 2)
            self.offset = offset if abs(offset) > _NOISE else dt.timedelta(0)
            if abs(offset) > dt.timedelta(seconds=5):
                logger.info(
                    "this host's clock is %.1f s %s the database's; leases use the database's",
                    abs(offset.total_seconds()),
                    "behind" if offset > dt.timedelta(0) else "ahead of",
                )
