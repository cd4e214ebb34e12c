"""The network sources' answers in the store: one ``source_answer`` row per address and source.

An answer is kept as the source gave it (JSON) with its own fetch and expiry times.
A failed lookup leaves a ``pending`` row with its attempts and last error, unless an
older answer is stored: that one is served, stale, until a refresh succeeds.

Processes sharing the database ask a source about an address one at a time: each
leases the rows it is about to ask (:func:`claim_sections`), as whois's queue does,
and saving the answer ends the lease.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..record import EnrichmentRecord, SectionStatus, SourceSection
from .presence import dead_holders
from .rows import aware, naive
from .schema import source_answers
from .sql import bound_addresses, insert, ip_set, ip_set_params

if TYPE_CHECKING:
    from .facade import Store

__all__ = [
    "claim_sections",
    "count_sections",
    "due_pending_sections",
    "get_sections",
    "release_sections",
    "save_sections",
    "with_sections",
]


def _section(row: Mapping[Any, Any]) -> SourceSection:
    return SourceSection(
        status=SectionStatus(row["status"]),
        data=json.loads(row["data"]) if row["data"] else None,
        fetched_at=aware(row["fetched_at"]),
        expires_at=aware(row["expires_at"]),
        error=row["last_error"],
    )


def get_sections(
    store: Store, ips: Iterable[str], sources: Sequence[str]
) -> dict[str, dict[str, SourceSection]]:
    """The stored sections of ``sources`` for ``ips``: {ip: {source: section}}."""
    wanted = sorted(set(ips))
    if not wanted or not sources:
        return {}
    a = source_answers.c
    query = sa.select(source_answers).where(
        ip_set(a.ip, store.dialect), a.source.in_(sorted(sources))
    )

    def work(conn: Connection) -> dict[str, dict[str, SourceSection]]:
        found: dict[str, dict[str, SourceSection]] = {}
        rows = conn.execute(query, ip_set_params(wanted, store.dialect)).mappings()
        for row in rows:
            found.setdefault(row["ip"], {})[row["source"]] = _section(row)
        return found

    return store.run(work)


def save_sections(
    store: Store, rows: Sequence[tuple[str, str, SourceSection]], now: dt.datetime | None = None
) -> None:
    """Persist (ip, source, section) rows in one transaction, in (ip, source) order."""
    if not rows:
        return
    moment = naive(now or store.now())
    a = source_answers.c
    ordered = sorted(rows, key=lambda p: (p[0], p[1]))
    answered = [
        {
            "ip": ip,
            "source": name,
            "status": section.status.value,
            "data": json.dumps(section.data, sort_keys=True) if section.data is not None else None,
            "fetched_at": naive(section.fetched_at),
            "expires_at": naive(section.expires_at),
            "attempts": 0,
            "last_error": None,
            "updated_at": moment,
        }
        for ip, name, section in ordered
        if section.status is not SectionStatus.PENDING
    ]
    failed = [
        {
            "ip": ip,
            "source": name,
            "status": SectionStatus.PENDING.value,
            "data": None,
            "fetched_at": None,
            "expires_at": None,
            "attempts": 1,
            "last_error": (section.error or "not answered")[:500],
            "updated_at": moment,
        }
        for ip, name, section in ordered
        if section.status is SectionStatus.PENDING
    ]

    # This process's lease ends; another's (this one's ran out and was taken) goes on.
    mine = a.lease_owner == store.owner
    lease_ended = {
        "lease_owner": sa.case((mine, sa.null()), else_=a.lease_owner),
        "lease_expires_at": sa.case((mine, sa.null()), else_=a.lease_expires_at),
    }

    def work(conn: Connection) -> None:
        if answered:
            stmt = insert(source_answers, store.dialect)
            stmt = stmt.on_conflict_do_update(
                index_elements=[a.ip, a.source],
                set_={
                    **{c: stmt.excluded[c] for c in answered[0] if c not in ("ip", "source")},
                    **lease_ended,
                },
            )
            conn.execute(stmt, answered)
        if failed:
            stmt = insert(source_answers, store.dialect)
            # a stored answer is kept (served stale); a pending row counts one more try
            stmt = stmt.on_conflict_do_update(
                index_elements=[a.ip, a.source],
                set_={
                    "attempts": a.attempts + 1,
                    "last_error": stmt.excluded.last_error,
                    "updated_at": stmt.excluded.updated_at,
                    **lease_ended,
                },
            )
            conn.execute(stmt, failed)

    store.write(work)


def claim_sections(store: Store, source: str, ips: Sequence[str], lease_seconds: float) -> set[str]:
    """Lease ``source``'s section of ``ips`` for this process before asking it; those won.

    A section another live process holds is not won, nor one stored fresh since this
    process looked (another process answered it); one whose holder is gone (its
    process on this host, or its sessions: :func:`.presence.dead_holders`) is taken
    over. A section never stored gets a ``pending`` row, so that it
    counts as unfinished until it is answered.
    """
    wanted = sorted(set(ips))
    if not wanted:
        return set()
    moment = naive(store.now())
    assert moment is not None
    until = moment + dt.timedelta(seconds=lease_seconds)
    a, dialect = source_answers.c, store.dialect
    given = bound_addresses(dialect)
    at = sa.bindparam("at", type_=sa.DateTime())
    owner = sa.bindparam("owner", type_=sa.String())
    proposed = sa.select(
        given.c.value,
        sa.bindparam("source", type_=sa.String()),
        sa.literal(SectionStatus.PENDING.value),
        sa.literal(0),
        sa.literal("not asked yet"),
        at,
        owner,
        sa.bindparam("until", type_=sa.DateTime()),
    ).where(sa.true())  # SQLite: a WHERE tells the SELECT's end from ON CONFLICT
    if dialect == "postgresql":  # rows locked in address order: no cycle between sensors
        proposed = proposed.order_by(given.c.value.collate("C"))  # as Python sorts
    columns = ["ip", "source", "status", "attempts", "last_error", "updated_at"]
    unanswered = sa.or_(
        a.status == SectionStatus.PENDING.value, a.expires_at.is_(None), a.expires_at <= at
    )
    claim = insert(source_answers, dialect).from_select(
        [*columns, "lease_owner", "lease_expires_at"], proposed
    )
    claim = claim.on_conflict_do_update(
        index_elements=[a.ip, a.source],
        set_={
            "lease_owner": claim.excluded.lease_owner,
            "lease_expires_at": claim.excluded.lease_expires_at,
        },
        where=sa.and_(
            sa.or_(a.lease_expires_at.is_(None), a.lease_expires_at <= at, a.lease_owner == owner),
            unanswered,
        ),
    ).returning(a.ip)
    holders = sa.select(a.ip, a.lease_owner).where(ip_set(a.ip, dialect), a.source == source)
    values = {"source": source, "at": moment, "owner": store.owner, "until": until}

    def work(conn: Connection) -> set[str]:
        won = {row[0] for row in conn.execute(claim, {**values, **ip_set_params(wanted, dialect)})}
        rest = [ip for ip in wanted if ip not in won]
        if rest:  # held by a live process, or fresh by now: or held by one that is gone?
            held = conn.execute(holders, ip_set_params(rest, dialect)).all()
            dead = dead_holders(conn, [holder for _ip, holder in held], store.owner)
            if dead:
                take = (
                    sa.update(source_answers)
                    .where(
                        ip_set(a.ip, dialect),
                        a.source == source,
                        a.lease_owner.in_(sorted(dead)),
                        unanswered,
                    )
                    .values(lease_owner=store.owner, lease_expires_at=until)
                    .returning(a.ip)
                )
                taken = [ip for ip, h in held if h in dead]
                won.update(
                    row[0]
                    for row in conn.execute(take, {**ip_set_params(taken, dialect), "at": moment})
                )
        return won

    return store.write(work)


def release_sections(store: Store) -> None:
    """Give up this process's leases on sections (what they hold stays pending)."""
    a = source_answers.c
    stmt = (
        sa.update(source_answers)
        .where(a.lease_owner == store.owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
    # PostgreSQL: the rows locked first in the order claims and saves lock them
    order = (a.ip.collate("C"), a.source.collate("C"))
    lock = sa.select(a.ip).where(a.lease_owner == store.owner).order_by(*order).with_for_update()

    def work(conn: Connection) -> None:
        if store.dialect == "postgresql":
            conn.execute(lock).all()
        conn.execute(stmt)

    store.write(work)


def due_pending_sections(store: Store, sources: Sequence[str], limit: int = 100_000) -> list[str]:
    """Addresses whose section of one of ``sources`` is pending (asked again in this run)."""
    if not sources:
        return []
    a = source_answers.c
    query = (
        sa.select(a.ip)
        .where(a.status == SectionStatus.PENDING.value, a.source.in_(sorted(sources)))
        .group_by(a.ip)
        .order_by(a.ip)
        .limit(limit)
    )
    return store.run(lambda conn: [row[0] for row in conn.execute(query)])


def count_sections(store: Store, now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """Per source: rows by status, and how many answers are fresh."""
    moment = naive(now or store.now())
    a = source_answers.c

    def work(conn: Connection) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        by_status = sa.select(a.source, a.status, sa.func.count()).group_by(a.source, a.status)
        for name, status, count in conn.execute(by_status):
            counts.setdefault(name, {})[status] = int(count)
        fresh = sa.select(a.source, sa.func.count()).where(a.expires_at > moment).group_by(a.source)
        for name, count in conn.execute(fresh):
            counts.setdefault(name, {})["fresh"] = int(count)
        return counts

    return store.run(work)


def with_sections(
    store: Store, records: Iterable[EnrichmentRecord], sources: Sequence[str], page: int = 2000
) -> Iterator[EnrichmentRecord]:
    """``records`` with their stored sections of ``sources``, read a page at a time."""
    if not sources:
        yield from records
        return
    batch: list[EnrichmentRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= page:
            yield from _attach(store, batch, sources)
            batch = []
    yield from _attach(store, batch, sources)


def _attach(
    store: Store, records: list[EnrichmentRecord], sources: Sequence[str]
) -> list[EnrichmentRecord]:
    if not records:
        return []
    found = get_sections(store, [r.ip for r in records], sources)
    missing = SourceSection(SectionStatus.PENDING, error="not asked yet")
    return [
        r
        if r.status.value == "skipped"
        else r.with_sections({name: found.get(r.ip, {}).get(name, missing) for name in sources})
        for r in records
    ]
