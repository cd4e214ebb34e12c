"""What a long-lived run has delivered: one ``delivered`` row per run and address.

A long-lived host keeps a bounded working set: it forgets the addresses it handled,
and one that comes back is looked up again. Whether its stored record is news to
the host (never delivered in this run, or changed since) only the store can tell
then, so that a Cowrie daemon emits one result event per address and not one an
hour. A run is named by its store's lease owner id; the rows of runs that are gone
are dropped when a long-lived run starts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .leases import owner_is_dead_here
from .rows import naive
from .schema import delivered_table
from .sql import insert, ip_set, ip_set_params

if TYPE_CHECKING:
    from .facade import Store

__all__ = ["drop_gone_runs", "news"]

#: A run on another host with no delivery for this long is taken to be gone.
_SILENT_RUN: Final = dt.timedelta(days=30)


def news(store: Store, signed: Sequence[tuple[str, str]]) -> set[str]:
    """The addresses of ``signed`` (ip, signature) not delivered so, by this run; noted now.

    :raises StoreError: when the database fails (the caller then delivers anyway).
    """
    if not signed:
        return set()
    wanted = dict(sorted(signed))
    d = delivered_table.c
    run = store.owner
    query = sa.select(d.ip, d.signature).where(d.run == run, ip_set(d.ip, store.dialect))
    moment = naive(store.now())

    def work(conn: Connection) -> set[str]:
        rows = conn.execute(query, ip_set_params(wanted, store.dialect))
        had = {row[0]: row[1] for row in rows}
        fresh = {ip: sign for ip, sign in wanted.items() if had.get(ip) != sign}
        if fresh:
            stmt = insert(delivered_table, store.dialect)
            stmt = stmt.on_conflict_do_update(
                index_elements=[d.run, d.ip],
                set_={"signature": stmt.excluded.signature, "at": stmt.excluded.at},
            )
            conn.execute(
                stmt,
                [{"run": run, "ip": ip, "signature": s, "at": moment} for ip, s in fresh.items()],
            )
        return set(fresh)

    return store.write(work)


def drop_gone_runs(store: Store) -> int:
    """Delete the rows of runs that no longer run; return how many runs.

    Gone: a process on this host that is dead, or a run elsewhere that delivered
    nothing for :data:`_SILENT_RUN`.
    """
    d = delivered_table.c
    silent_since = naive(store.now() - _SILENT_RUN)
    runs = sa.select(d.run, sa.func.max(d.at)).group_by(d.run)

    def work(conn: Connection) -> int:
        gone = sorted(
            row[0]
            for row in conn.execute(runs)
            if row[0] != store.owner and (owner_is_dead_here(row[0]) or row[1] < silent_since)
        )
        for run in gone:
            conn.execute(sa.delete(delivered_table).where(d.run == run))
        return len(gone)

    return store.write(work)
