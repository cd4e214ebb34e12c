"""Which database errors pass, and running a transaction again after one of them.

The drivers give no portable code for "the server dropped this transaction", so the
errors are told apart by their message: a database that answered and then dropped or
refused one transaction (locked, connection lost, deadlock, serialization failure) or
is full for now (too many connections) is *interrupted*; one that does not answer at
all (yet) is *unreachable*. Both are *transient*: worth the same transaction again
after a pause.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, TypeVar

import sqlalchemy as sa
import tenacity

__all__ = ["TRANSIENT_ATTEMPTS", "first_line", "is_interrupted", "is_transient", "with_retries"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
TRANSIENT_ATTEMPTS = 9  # 0.2 s doubling to 5 s: rides out about 25 s of outage

_INTERRUPTED: Final = (
    "database is locked",
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "consuming input failed",
    "deadlock detected",
    "could not serialize",
    "the connection is lost",
)
_UNREACHABLE: Final = ("could not connect", "connection refused")
#: The server answered: full or starting for now (PostgreSQL's max_connections, a
#: role's CONNECTION LIMIT, a pooler's own limit, a restart). A fleet's busy minute is
#: waited out like an interrupted transaction, at open too.
_BUSY: Final = (
    "too many clients",
    "too many connections",
    "remaining connection slots are reserved",
    "no more connections allowed",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
)


def first_line(exc: BaseException) -> str:
    """The driver's message, first line only (PostgreSQL adds DETAIL and HINT lines)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0].strip() if lines else type(orig).__name__


def is_interrupted(exc: sa.exc.DBAPIError) -> bool:
    """Whether the database answered, then dropped or refused this transaction."""
    text = str(exc.orig).lower()
    return exc.connection_invalidated or any(word in text for word in (*_INTERRUPTED, *_BUSY))


def is_transient(exc: sa.exc.DBAPIError) -> bool:
    """Whether the same transaction may pass if tried again."""
    text = str(exc.orig).lower()
    return is_interrupted(exc) or any(word in text for word in _UNREACHABLE)


def with_retries(
    step: Callable[[], _T], transient: Callable[[sa.exc.DBAPIError], bool] = is_transient
) -> _T:
    """Run ``step``, again after each ``transient`` database error, backing off (about 25 s).

    The pauses are real time, not the package's clock: the database is across a
    socket, and a simulated day must not outrun its outage.

    :raises sqlalchemy.exc.DBAPIError: a lasting or not transient error.
    """

    def hiccup(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        why = first_line(exc) if exc is not None else "?"
        logger.warning("database hiccup (%s); retrying in %.1fs", why, state.upcoming_sleep)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(TRANSIENT_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=0.2, max=5.0),
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, sa.exc.DBAPIError) and transient(exc)
        ),
        before_sleep=hiccup,
        sleep=time.sleep,
        reraise=True,
    )
    return retrying(step)
