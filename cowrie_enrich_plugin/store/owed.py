"""What each sensor owes its output: one ``owed`` row per sensor and unfinished address.

Sensors on one database resume the whole queue (a dead sensor's addresses still get
asked), but a sensor's output holds only its own input's addresses: a record it
delivered pending is owed to it finished, whichever sensor finishes it, in this run
or a later one. A sensor is named by ``sensor`` (its host name by default), which
outlives its processes; the rows go once the finished record went out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..record import SectionStatus
from .rows import naive
from .schema import owed_table, pending_queue, source_answers
from .sql import insert, ip_set, ip_set_params

if TYPE_CHECKING:
    from .facade import Store

__all__ = ["OwedRows", "drop_unclaimed"]

#: Owed records no run of their sensor looked at in this long: the sensor is gone.
UNCLAIMED: Final = dt.timedelta(days=30)


class OwedRows:
    """One sensor's ``owed`` rows. Every method may raise :class:`~..errors.StoreError`."""

    def __init__(self, store: Store, sensor: str) -> None:
        self._store = store
        self.sensor = sensor

    def all(self) -> set[str]:
        """Every address this sensor is owed a finished record of."""
        o = owed_table.c
        query = sa.select(o.ip).where(o.sensor == self.sensor)
        return self._store.run(lambda conn: {row[0] for row in conn.execute(query)})

    def finished(self) -> list[str]:
        """The owed addresses nothing waits on: finished, by this sensor or another.

        Marks this sensor's rows as claimed now (see :func:`drop_unclaimed`).
        Not queued for whois, no network source's section pending (those come back
        when their retry is due, and a spent quota leaves them alone).
        """
        o, q, a = owed_table.c, pending_queue.c, source_answers.c
        queued = sa.exists().where(q.ip == o.ip)
        waiting = sa.exists().where(a.ip == o.ip, a.status == SectionStatus.PENDING.value)
        query = sa.select(o.ip).where(o.sensor == self.sensor, ~queued, ~waiting).order_by(o.ip)
        # the sensor runs: what it is owed is not a gone sensor's (drop_unclaimed)
        touch = sa.update(owed_table).where(o.sensor == self.sensor)
        moment = naive(self._store.now())

        def work(conn: Connection) -> list[str]:
            conn.execute(touch.values(at=moment))
            return [row[0] for row in conn.execute(query)]

        return self._store.write(work)

    def owed_elsewhere(self, ips: Iterable[str]) -> set[str]:
        """The addresses of ``ips`` another sensor is owed."""
        o = owed_table.c
        query = sa.select(o.ip).where(o.sensor != self.sensor, ip_set(o.ip, self._store.dialect))
        value = ip_set_params(sorted(set(ips)), self._store.dialect)
        return self._store.run(lambda conn: {row[0] for row in conn.execute(query, value)})

    def owe(self, ips: Iterable[str]) -> None:
        """Note that this sensor delivered ``ips`` unfinished."""
        o = owed_table.c
        moment = naive(self._store.now())
        rows = [{"sensor": self.sensor, "ip": ip, "at": moment} for ip in sorted(set(ips))]
        if not rows:
            return
        stmt = insert(owed_table, self._store.dialect).on_conflict_do_nothing(
            index_elements=[o.sensor, o.ip]
        )
        self._store.write(lambda conn: conn.execute(stmt, rows))

    def settle(self, ips: Iterable[str]) -> None:
        """``ips`` went out finished: this sensor is owed them no more."""
        wanted = sorted(set(ips))
        if not wanted:
            return
        o = owed_table.c
        stmt = sa.delete(owed_table).where(
            o.sensor == self.sensor, ip_set(o.ip, self._store.dialect)
        )
        value = ip_set_params(wanted, self._store.dialect)

        def work(conn: Connection) -> None:
            conn.execute(stmt, value)

        self._store.write(work)


def drop_unclaimed(store: Store) -> int:
    """Delete what gone sensors are owed (rows older than :data:`UNCLAIMED`); how many."""
    o = owed_table.c
    stmt = sa.delete(owed_table).where(o.at < naive(store.now() - UNCLAIMED))
    return int(store.write(lambda conn: conn.execute(stmt).rowcount))
