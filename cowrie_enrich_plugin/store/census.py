"""What ``cowrie-enrich cache stats`` shows: the store's records counted by status and age."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..record import Status
from .rows import aware
from .schema import SCHEMA_VERSION, pending_queue, records_table

__all__ = ["StoreStats", "census"]


@dataclass(frozen=True)
class StoreStats:
    """Counts by status and age, for ``cowrie-enrich cache stats``."""

    by_status: Mapping[str, int]
    fresh: int
    expired: int
    queued: int
    leased: int
    oldest_fetch: dt.datetime | None
    newest_fetch: dt.datetime | None
    schema_version: int


def census(conn: Connection, now: dt.datetime) -> StoreStats:
    """Count the store's records by status and age, in one transaction (``now``: naive UTC)."""
    moment = now
    r, q = records_table.c, pending_queue.c
    by_status: dict[str, int] = dict(
        conn.execute(sa.select(r.status, sa.func.count()).group_by(r.status)).all()
    )
    # Leased and not answered yet: known by the queue alone, and pending all the same.
    unanswered = conn.execute(
        sa.select(sa.func.count())
        .select_from(pending_queue)
        .where(~sa.exists().where(r.ip == q.ip))
    ).scalar_one()
    if unanswered:
        by_status[Status.PENDING.value] = by_status.get(Status.PENDING.value, 0) + unanswered
    fresh = conn.execute(sa.select(sa.func.count()).where(r.expires_at > moment)).scalar_one()
    expired = conn.execute(sa.select(sa.func.count()).where(r.expires_at <= moment)).scalar_one()
    queued = conn.execute(sa.select(sa.func.count()).select_from(pending_queue)).scalar_one()
    leased = conn.execute(
        sa.select(sa.func.count()).where(q.lease_expires_at > moment)
    ).scalar_one()
    oldest, newest = conn.execute(
        sa.select(sa.func.min(r.cymru_fetched_at), sa.func.max(r.cymru_fetched_at))
    ).one()
    return StoreStats(
        by_status={str(k): int(v) for k, v in by_status.items()},
        fresh=int(fresh),
        expired=int(expired),
        queued=int(queued),
        leased=int(leased),
        oldest_fetch=aware(oldest),
        newest_fetch=aware(newest),
        schema_version=SCHEMA_VERSION,
    )
