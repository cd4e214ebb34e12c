"""The whois queue's backoff ended early: whois answers again, or is probed.

Each queued address waits out its own backoff while whois keeps failing; once it
answers again the whole queue is due at once (:func:`end_backoff`), and while it
fails with nothing due, a batch of the queue is made due to probe it.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from .facade import Store
from .rows import naive
from .schema import pending_queue

__all__ = ["end_backoff"]


def end_backoff(store: Store, limit: int | None = None, now: dt.datetime | None = None) -> int:
    """Make queued addresses due now (all, or the ``limit`` due soonest); how many.

    Addresses another process holds the lease of are left to it.
    """
    moment = naive(now or store.now())
    q = pending_queue.c
    free = sa.or_(q.lease_expires_at.is_(None), q.lease_expires_at <= moment)
    waiting = sa.and_(q.next_attempt_at > moment, free)
    if limit is not None:
        soonest = sa.select(q.ip).where(waiting).order_by(q.next_attempt_at).limit(limit)
        waiting = sa.and_(waiting, q.ip.in_(soonest.scalar_subquery()))
    update = sa.update(pending_queue).where(waiting).values(next_attempt_at=None)
    return store.write(lambda conn: int(conn.execute(update).rowcount or 0))
