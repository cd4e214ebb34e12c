"""The store gate: after the database failed every retry, the engine leaves it alone a while.

A database that is down costs each step its retries (:mod:`..store.retry`); the
first step to give up closes the gate for :data:`STORE_PAUSE` seconds on the
package's clock, during which no batch is leased or sent and the cache is not
looked at (addresses go out pending and are collected again by the next run).
The gate also counts the addresses that could not be recorded at all.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from .. import clock
from ..dburl import scrub

__all__ = ["STORE_PAUSE", "StoreGate"]

logger = logging.getLogger(__name__)

#: Seconds the gate stays closed after a failure.
STORE_PAUSE: Final = 30.0


class StoreGate:
    """Whether the engine may use the database now, and what it could not record.

    :param db: the database URL (scrubbed from the drivers' words in the log).
    """

    def __init__(self, db: str) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._closed_until = float("-inf")
        #: addresses that could not be recorded (pending only in what went out)
        self.unsaved = 0

    def paused(self) -> bool:
        """Whether the gate is closed."""
        return clock.monotonic() < self._closed_until

    def failed(self, exc: Exception, unsaved: int = 0) -> None:
        """The database failed a step (``unsaved`` addresses are not recorded); close the gate.

        The first failure of an outage is logged, once.
        """
        with self._lock:
            self.unsaved += unsaved
            first = not self.paused()
            self._closed_until = clock.monotonic() + STORE_PAUSE
        if first:
            logger.error(
                "the database failed (%s); for %.0fs no batch is sent, and addresses that "
                "cannot be recorded are collected again on the next run",
                scrub(str(exc), self._db),
                STORE_PAUSE,
            )

    def not_recorded(self, count: int) -> None:
        """``count`` more addresses went out without being recorded."""
        with self._lock:
            self.unsaved += count
