"""Multi-row bulk statements on SQLite and the real PostgreSQL (``store_bulk``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin.store import open_store, sql
from cowrie_enrich_plugin.store.bulk import BulkInsert, parameter_limit
from cowrie_enrich_plugin.store.schema import pending_queue

from .helpers import global_ips

COLUMNS = ("ip", "attempts", "last_error")


def _statement(store_url: str) -> tuple[sa.Engine, BulkInsert]:
    store = open_store(store_url)
    engine = store.engine
    insert = sql.insert(pending_queue, store.dialect)
    upsert = insert.on_conflict_do_update(
        index_elements=[pending_queue.c.ip],
        set_={"attempts": insert.excluded.attempts, "last_error": insert.excluded.last_error},
    )
    # A column order unlike the table's: the bound order is mapped from the caller's.
    return engine, BulkInsert.compile(upsert, ("last_error", "ip", "attempts"), engine.dialect)


def test_rows_in_several_statements_and_duplicates_last_wins(db_url: str) -> None:
    engine, bulk = _statement(db_url)
    small = dataclasses.replace(bulk, max_rows=7)  # force many statements per call
    ips = global_ips(50, seed=21)
    rows = [(f"first {ip}", ip, 1) for ip in ips] + [(f"second {ip}", ip, 2) for ip in ips[:10]]
    with engine.begin() as conn:
        small.run(conn, rows)
    with engine.begin() as conn:
        small.run(conn, [("third", ips[-1], 3)])  # the upsert path
        stored = {
            ip: (attempts, error)
            for ip, attempts, error in conn.execute(
                sa.select(pending_queue.c.ip, pending_queue.c.attempts, pending_queue.c.last_error)
            )
        }
    assert len(stored) == 50
    assert all(stored[ip] == (2, f"second {ip}") for ip in ips[:10])
    assert all(stored[ip] == (1, f"first {ip}") for ip in ips[10:-1])
    assert stored[ips[-1]] == (3, "third")
    engine.dispose()


def test_a_chunk_stays_within_the_parameter_limit(db_url: str) -> None:
    engine, bulk = _statement(db_url)
    assert bulk.max_rows * len(bulk.columns) <= parameter_limit(engine.dialect.name)
    sql = bulk.sql(3)
    assert sql.count("(") - bulk.head.count("(") - bulk.tail.count("(") >= 3
    assert "%(" not in sql  # named parameters become positional ones
    engine.dispose()


def test_only_the_values_may_be_bound(db_url: str) -> None:
    engine, _ = _statement(db_url)
    insert = sa.insert(pending_queue).values(attempts=sa.bindparam("extra"))
    with pytest.raises(AssertionError):
        BulkInsert.compile(insert, COLUMNS, engine.dialect)
    engine.dispose()


def test_a_column_null_in_every_row_is_written_null_not_bound(db_url: str) -> None:
    engine, bulk = _statement(db_url)
    in_order = BulkInsert.compile(  # the caller's order is the statement's
        sql.insert(pending_queue, engine.dialect.name).on_conflict_do_nothing(),
        ("ip", "attempts", "last_error"),
        engine.dialect,
    )
    assert in_order.order is None and bulk.order is not None
    executed: list[tuple[str, int]] = []

    def seen(_conn: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
        executed.append((statement, len(parameters)))

    ips = global_ips(9, seed=22)
    sa.event.listen(engine, "before_cursor_execute", seen)
    with engine.begin() as conn:
        conn.execute(sa.insert(pending_queue), [{"ip": ips[0], "attempts": 9, "last_error": "x"}])
        executed.clear()
        bulk.run(conn, [(None, ip, 1) for ip in ips[:3]])  # last_error NULL in every row
        bulk.run(conn, [(None if n % 2 else f"e{n}", ip, 2) for n, ip in enumerate(ips[3:6])])
        in_order.run(conn, [(ip, 3, None) for ip in ips[6:8]])
        stored = {
            ip: (attempts, error)
            for ip, attempts, error in conn.execute(
                sa.select(pending_queue.c.ip, pending_queue.c.attempts, pending_queue.c.last_error)
            )
        }
    assert stored == {
        ips[0]: (1, None),  # the upsert wrote the NULL over "x"
        ips[1]: (1, None),
        ips[2]: (1, None),
        ips[3]: (2, "e0"),
        ips[4]: (2, None),
        ips[5]: (2, "e2"),
        ips[6]: (3, None),
        ips[7]: (3, None),
    }
    (first, _bound), (mixed, _), (ordered, _) = executed[:3]
    assert [count for _sql, count in executed[:3]] == [3 * 2, 3 * 3, 2 * 2]
    assert "NULL" in first and "NULL" in ordered
    assert "NULL" not in mixed.partition(" VALUES ")[2].partition(" ON CONFLICT")[0]
    # One value left (the key), or none: NULLs the table refuses, refused by the database
    # as when they were bound.
    for row in [(None, ips[8], None), (None, None, None)]:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            bulk.run(conn, [row])
    assert executed[-1][1] == 0 and executed[-2][1] == 1
    sa.event.remove(engine, "before_cursor_execute", seen)
    engine.dispose()
