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
