"""A network source's daily allowance, counted in the store: one count for every process on it.

Eight sensors sharing one GreyNoise key and one database share one ``daily_quota``
and one "spent" from the server, across restarts. The day is the UTC day of the
database's clock (:mod:`.dbclock`), so sensors whose clocks disagree still agree on it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .rows import naive
from .schema import source_quota
from .sql import insert

if TYPE_CHECKING:
    from .facade import Store

__all__ = ["QuotaLedger", "QuotaToday"]


@dataclass(frozen=True)
class QuotaToday:
    """A source's use of today's allowance, fleet-wide."""

    day: str
    requests: int
    spent: bool


class QuotaLedger:
    """The requests of one network source a UTC day, in ``source_quota``. Thread-safe.

    Every method may raise :class:`~..errors.StoreError` (the caller decides what a
    request may do while the store is away).
    """

    def __init__(self, store: Store, source: str) -> None:
        self._store = store
        self.source = source

    def _today(self) -> tuple[str, dt.datetime]:
        now = self._store.now()
        return now.astimezone(dt.timezone.utc).date().isoformat(), naive(now) or now

    def take(self, limit: int) -> bool:
        """Count one request, unless ``limit`` (0: none) is reached or the day is spent."""
        day, moment = self._today()
        q = source_quota.c
        stmt = insert(source_quota, self._store.dialect).values(
            source=self.source, day=day, requests=1, spent=False, updated_at=moment
        )
        allowed = sa.not_(q.spent)
        if limit:
            allowed = sa.and_(allowed, q.requests < limit)
        stmt = stmt.on_conflict_do_update(
            index_elements=[q.source, q.day],
            set_={"requests": q.requests + 1, "updated_at": moment},
            where=allowed,
        ).returning(q.requests)

        def work(conn: Connection) -> bool:
            return conn.execute(stmt).first() is not None

        return self._store.write(work)

    def spend(self) -> None:
        """The source said today's allowance is spent: no process asks it again today."""
        day, moment = self._today()
        q = source_quota.c
        stmt = insert(source_quota, self._store.dialect).values(
            source=self.source, day=day, requests=0, spent=True, updated_at=moment
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[q.source, q.day], set_={"spent": True, "updated_at": moment}
        )
        self._store.write(lambda conn: conn.execute(stmt))

    def today(self) -> QuotaToday:
        """Today's requests and whether the day is spent."""
        day, _moment = self._today()
        q = source_quota.c
        query = sa.select(q.requests, q.spent).where(q.source == self.source, q.day == day)
        row = self._store.run(lambda conn: conn.execute(query).first())
        return QuotaToday(day, int(row[0]), bool(row[1])) if row else QuotaToday(day, 0, False)
