"""PostgreSQL from the tests' side: ending the sessions others hold on a test database."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["end_other_sessions"]

_END_OTHERS = sa.text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def end_other_sessions(conn: Connection) -> int:
    """End every other session on ``conn``'s database (as their processes dying would).

    :returns: how many were ended.
    """
    return int(conn.execute(_END_OTHERS).scalar() or 0)
