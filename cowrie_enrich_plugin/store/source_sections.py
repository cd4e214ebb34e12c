"""The network sources' answers in the store: one ``source_answer`` row per address and source.

An answer is kept as the source gave it (JSON) with its own fetch and expiry times.
A failed lookup leaves a ``pending`` row with its attempts and last error, unless an
older answer is stored: that one is served, stale, until a refresh succeeds.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..record import EnrichmentRecord, SectionStatus, SourceSection
from .rows import aware, naive
from .schema import source_answers
from .sql import insert, ip_set, ip_set_value

if TYPE_CHECKING:
    from .facade import Store

__all__ = [
    "count_sections",
    "due_pending_sections",
    "get_sections",
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
        rows = conn.execute(query, {"ips": ip_set_value(wanted, store.dialect)}).mappings()
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

    def work(conn: Connection) -> None:
        if answered:
            stmt = insert(source_answers, store.dialect)
            stmt = stmt.on_conflict_do_update(
                index_elements=[a.ip, a.source],
                set_={c: stmt.excluded[c] for c in answered[0] if c not in ("ip", "source")},
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
                },
            )
            conn.execute(stmt, failed)

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
