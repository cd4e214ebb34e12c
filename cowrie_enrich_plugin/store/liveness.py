"""Whether a lease holder on another host still runs, as PostgreSQL can tell: its session lock.

A process on one host cannot see another host's processes (:mod:`.leases` judges
only its own host's). PostgreSQL can: while a store is open, it holds a session-level
advisory lock, keyed by its owner id, on a connection of its own. The lock ends with
that session, when the process exits or is killed, or its host or network goes
away (once the server notices the connection is gone: at once for a closed socket,
after the server's TCP keepalive for a silent host). Another process that meets a
lease of that owner, unexpired, and finds no such lock in ``pg_locks``, takes the
lease over instead of waiting out its expiry.

Only owner ids marked with :data:`MARK` are judged so: the mark says the lock was
taken, and so that its absence means the session is gone. Behind a pooler in
transaction mode (``?prepare_threshold=none``) a session belongs to no one client,
so no lock is taken and no mark set: leases there only expire. A lock lost while
its holder runs (the server restarted) lets others take its leases: at worst an
address is asked twice; never an answer lost.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["MARK", "SessionLock", "gone_elsewhere", "marked_owner"]

logger = logging.getLogger(__name__)

#: The end of an owner id whose store holds its session lock.
MARK: Final = "+s"

_U64: Final = 0xFFFF_FFFF_FFFF_FFFF
_HELD: Final = sa.text(
    "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
    "WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _key(owner: str) -> int:
    """The advisory lock's key (a signed 64-bit number) for ``owner``."""
    return int.from_bytes(
        hashlib.blake2b(owner.encode(), digest_size=8).digest(), "big", signed=True
    )


class SessionLock:
    """A store's session lock, on a connection of its own (PostgreSQL only)."""

    def __init__(self, engine: Engine, owner: str) -> None:
        self._conn: Connection | None = engine.connect()
        try:
            self._conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _key(owner)})
            self._conn.commit()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the session: the lock with it."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.invalidate()  # the session is closed, not handed back to the pool
                conn.close()
            except sa.exc.DBAPIError as exc:  # gone already: so is the lock
                logger.debug("closing the session lock's connection: %s", exc)


def gone_elsewhere(conn: Connection, owners: Iterable[str]) -> set[str]:
    """Those of ``owners`` (marked ones only) whose session lock no longer exists."""
    marked = {owner for owner in owners if owner.endswith(MARK)}
    if not marked:
        return set()
    held = {int(row[0]) & _U64 for row in conn.execute(_HELD)}
    return {owner for owner in marked if _key(owner) & _U64 not in held}


def marked_owner(engine: Engine, owner: str, sessions: bool) -> tuple[str, SessionLock | None]:
    """``owner`` marked, with its session lock taken (if ``sessions`` and it can be taken)."""
    if not sessions:
        return owner, None
    marked = owner + MARK
    try:
        return marked, SessionLock(engine, marked)
    except sa.exc.DBAPIError as exc:  # leases then only expire, as without the lock
        logger.debug("no session lock: %s", exc)
        return owner, None
