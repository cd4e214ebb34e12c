"""Whether a lease holder on another host is gone: PostgreSQL's sessions, named after it.

A process on this host is judged by its process (:mod:`.leases`). One elsewhere is
known only to the database: on PostgreSQL, a store whose owner id is *announced*
names each of its sessions after the id's tag (``application_name``), and holds
pooled sessions for as long as it runs; when no session carries that name, its
process is gone, and its leases are taken over at once instead of when they run out.

A store is announced only when the server sees its connections as they are (the
client port it reports is the connection's own, :func:`.opening.open_store`): through
a pooler in transaction mode an idle client has no session of its own, and behind a
proxy a session is not one client's. Nor for a pooler's URL
(``prepare_threshold=none``) or an ``application_name`` of the operator's. Holders
are judged only when this process sees its own sessions' name too (a role that cannot
see others' sessions judges nobody). A live process whose every session dropped at
once (the server restarted) is taken for gone too; what it held is then asked again,
at most twice.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .leases import owner_is_dead_here

__all__ = ["dead_holders", "session_name"]

_SESSIONS = sa.text(
    "SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name = ANY(:names)"
)


def session_name(owner: str) -> str | None:
    """The name an announced owner's sessions carry (``None``: not announced)."""
    tag = owner.rpartition("/")[2]
    return f"cowrie-enrich {tag}" if tag.startswith("p") else None


def dead_holders(conn: Connection, holders: Iterable[str | None], me: str) -> set[str]:
    """Those of ``holders`` known to be gone: by their process here, by their sessions elsewhere."""
    others = {holder for holder in holders if holder and holder != me}
    dead = {holder for holder in others if owner_is_dead_here(holder)}
    named = {session_name(holder): holder for holder in others - dead}
    named.pop(None, None)
    mine = session_name(me)
    if named and mine is not None and conn.dialect.name == "postgresql":
        seen = {row[0] for row in conn.execute(_SESSIONS, {"names": [mine, *named]})}
        if mine in seen:  # this server shows sessions' names: what it does not show is gone
            dead.update(holder for name, holder in named.items() if name not in seen)
    return dead
