"""Multi-row bulk statements on SQLite and the real PostgreSQL (``store_bulk``)."""

from __future__ import annotations

import dataclasses

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
    ips = global_ips(6, seed=22)
    with engine.begin() as conn:
        conn.execute(sa.insert(pending_queue), [{"ip": ips[0], "attempts": 9, "last_error": "x"}])
        # last_error null in every row of the chunk; then null in some rows only
        bulk.run(conn, [(None, ip, 1) for ip in ips[:3]])
        bulk.run(conn, [(None if n % 2 else f"e{n}", ip, 2) for n, ip in enumerate(ips[3:])])
        stored = dict(
            (ip, (attempts, error))
            for ip, attempts, error in conn.execute(
                sa.select(pending_queue.c.ip, pending_queue.c.attempts, pending_queue.c.last_error)
            )
        )
    assert stored == {
        ips[0]: (1, None),  # the upsert wrote the NULL over "x"
        ips[1]: (1, None),
        ips[2]: (1, None),
        ips[3]: (2, "e0"),
        ips[4]: (2, None),
        ips[5]: (2, "e2"),
    }
    # the null column is in the statement, not among its parameters
    assert bulk.sql(3, (0,)).count(bulk.placeholder) == 3 * (len(bulk.columns) - 1)
    assert "NULL" in bulk.sql(3, (0,)) and "NULL" not in bulk.sql(3).partition(" VALUES ")[2]
    engine.dispose()
