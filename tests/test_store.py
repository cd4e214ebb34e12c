"""The store on SQLite and on the real PostgreSQL: bulk reads, upserts, TTLs, leases, migration."""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin.errors import ConfigError
from cowrie_enrich_plugin.record import CymruAnswer, EnrichmentRecord, GeoAnswer, Status, utc_now
from cowrie_enrich_plugin.store import Store, StoreError, open_store
from cowrie_enrich_plugin.store.leases import this_host
from cowrie_enrich_plugin.store.schema import (
    SCHEMA_VERSION,
    current_version,
    migrate,
    pending_queue,
    records_table,
)

from .helpers import global_ips

NOW = dt.datetime(2026, 11, 28, 20, 0, tzinfo=dt.timezone.utc)


def enriched(
    ip: str, fetched: dt.datetime = NOW, days: float = 30, asns: tuple[int, ...] = (64500, 64501)
) -> EnrichmentRecord:
    answer = CymruAnswer(asns, "EXAMPLE, US", "11.0.0.0/8", "US", "arin", "2001-05-01", fetched)
    geo = GeoAnswer("US", "United States", "Boston", 42.3, -71.1, 20, 64500, "Example", NOW, None)
    return EnrichmentRecord(
        ip,
        Status.ENRICHED if asns else Status.UNANNOUNCED,
        answer,
        geo,
        fetched + dt.timedelta(days=days),
    )


def test_round_trip_every_field(db_url: str) -> None:
    store = open_store(db_url)
    records = [
        enriched("11.0.0.1"),
        enriched("2a00::1", asns=()),
        EnrichmentRecord("10.0.0.1", Status.SKIPPED),
    ]
    store.put_records(records)
    found = store.get_records(["11.0.0.1", "2a00::1", "10.0.0.1", "11.9.9.9"])
    assert set(found) == {"11.0.0.1", "2a00::1", "10.0.0.1"}
    for record in records:
        assert found[record.ip] == record
        assert found[record.ip].to_dict() == record.to_dict()
    store.close()


def test_bulk_read_of_many_takes_a_handful_of_statements(db_url: str) -> None:
    store = open_store(db_url)
    ips = global_ips(33_000, seed=1)  # more than SQLite's 32,766 bound parameters
    store.put_records([enriched(ip) for ip in ips])
    before = store.statements
    found = store.get_records(ips)
    assert len(found) == len(ips)
    assert store.statements - before == 1  # the set travels as one value
    store.close()


def queued(store: Store, ip: str) -> tuple[int, str | None] | None:
    """(attempts, last error) of a queued address, read from the table itself."""
    q = pending_queue.c
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(q.attempts, q.last_error).where(q.ip == ip)).first()
    return (row[0], row[1]) if row is not None else None


def test_upsert_replaces_and_stale_is_served(db_url: str) -> None:
    store = open_store(db_url)
    old = enriched("11.0.0.2", fetched=NOW - dt.timedelta(days=40))
    store.put_records([old])
    record = store.get_records(["11.0.0.2"])["11.0.0.2"]
    assert not record.is_fresh(NOW) and record.status is Status.ENRICHED
    # a refresh that fails keeps the stale answer and queues the address
    assert store.claim(["11.0.0.2"], 60, now=NOW) == {"11.0.0.2"}
    store.save([], {"11.0.0.2": ("WhoisTimeout: slow", None)}, now=NOW)
    assert store.get_records(["11.0.0.2"])["11.0.0.2"] == old
    assert queued(store, "11.0.0.2") == (1, "WhoisTimeout: slow")
    # a refresh that succeeds replaces it in place and leaves the queue
    new = enriched("11.0.0.2")
    store.save([new], now=NOW)
    assert store.get_records(["11.0.0.2"])["11.0.0.2"] == new
    assert queued(store, "11.0.0.2") is None
    store.close()


def test_claim_queues_before_sending_and_leases_exclude(db_url: str) -> None:
    a = open_store(db_url)
    b = open_store(db_url)
    ips = ["11.0.0.3", "11.0.0.4", "11.0.0.5"]
    assert a.claim(ips[:2], 60, now=NOW) == set(ips[:2])
    # durably known before whois is asked: a kill now leaves them queued
    assert [queued(a, ip) for ip in ips] == [(0, None), (0, None), None]
    assert b.claim(ips, 60, now=NOW) == {"11.0.0.5"}  # a's leases hold
    # after the lease expires, b may take them
    later = NOW + dt.timedelta(seconds=61)
    assert b.claim(ips[:2], 60, now=later) == set(ips[:2])
    a.release()
    b.release()
    assert set(a.due_pending(now=later)) == set(ips)
    a.close()
    b.close()


def _dead_owner() -> str:
    """A lease owner on this host whose process has exited."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{this_host()}/{int(dead.stdout)}/deadbeef"


def test_leases_of_a_dead_process_on_this_host_are_taken_over(db_url: str) -> None:
    gone = open_store(db_url)
    gone.owner = _dead_owner()
    assert gone.claim(["11.0.0.6"], 3600) == {"11.0.0.6"}
    alive = open_store(db_url)
    assert alive.claim(["11.0.0.6"], 60) == {"11.0.0.6"}
    gone.close()
    alive.close()


def test_pending_never_overwrites_an_answer(db_url: str) -> None:
    store = open_store(db_url)
    store.put_records([enriched("11.0.0.7")])
    store.claim(["11.0.0.7"], 60)
    store.save([], {"11.0.0.7": ("boom", None)})
    assert store.get_records(["11.0.0.7"])["11.0.0.7"].status is Status.ENRICHED
    store.close()


def test_a_dead_holders_lease_on_an_address_answered_since_is_not_taken(db_url: str) -> None:
    gone = open_store(db_url)
    gone.owner = _dead_owner()
    assert gone.claim(["11.0.0.10"], 3600) == {"11.0.0.10"}
    with open_store(db_url) as other:  # answered (here: skipped) while the lease stood
        other.put_records([EnrichmentRecord("11.0.0.10", Status.SKIPPED)])
    with open_store(db_url) as alive:
        assert alive.claim(["11.0.0.10"], 60) == set()
    gone.close()


def test_prune_and_stats(db_url: str) -> None:
    store = open_store(db_url)
    store.put_records(
        [enriched("11.0.0.8", fetched=NOW - dt.timedelta(days=31)), enriched("11.0.0.9")]
    )
    store.claim(["11.0.1.0"], 60)
    stats = store.stats(now=NOW)
    assert stats.by_status == {"enriched": 2, "pending": 1}
    assert (stats.fresh, stats.expired, stats.queued) == (1, 1, 1)
    assert store.prune(now=NOW) == 1
    assert set(store.get_records(["11.0.0.8", "11.0.0.9"])) == {"11.0.0.9"}
    store.close()


def test_migration_from_version_one(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    migrate(engine, target=1)
    with engine.begin() as conn:
        assert current_version(conn) == 1
        columns = {c["name"] for c in sa.inspect(conn).get_columns("enrichment_record")}
        assert "mm_city_db_built_at" not in columns
        assert {i["name"] for i in sa.inspect(conn).get_indexes("pending_queue")} == {
            "ix_pending_queue_next_attempt_at",
            "ix_pending_queue_lease_owner",
        }
        conn.execute(
            sa.text(
                "INSERT INTO enrichment_record (ip, status, cymru_asns, cymru_fetched_at, mm_present, expires_at, updated_at)"
                " VALUES ('11.0.2.1', 'enriched', '[64500]', :t, :f, :e, :t)"
            ),
            {
                "t": NOW.replace(tzinfo=None),
                "e": (NOW + dt.timedelta(days=30)).replace(tzinfo=None),
                "f": False,
            },
        )
    engine.dispose()
    store = open_store(db_url)  # migrates to the current version
    with store.engine.connect() as conn:
        assert current_version(conn) == SCHEMA_VERSION == 9
        assert sa.inspect(conn).has_table("owed")  # version 8
        assert sa.inspect(conn).has_table("source_answer")  # version 4
        columns = {c["name"] for c in sa.inspect(conn).get_columns("enrichment_record")}
        assert "classification" in columns  # version 6
        # version 3 writes without secondary indexes (only the primary keys)
        for table in ("enrichment_record", "pending_queue"):
            assert sa.inspect(conn).get_indexes(table) == []
    record = store.get_records(["11.0.2.1"])["11.0.2.1"]
    assert record.cymru is not None and record.cymru.asns == (64500,)
    assert record.classification is None  # built before any feed
    store.close()


@pytest.mark.parametrize("start", range(10))
def test_every_version_migrates_to_the_current_one(db_url: str, start: int) -> None:
    """Each step is self-contained: from any version (0: empty), the current schema builds."""
    engine = sa.create_engine(db_url)
    migrate(engine, target=start)
    engine.dispose()
    store = open_store(db_url)
    with store.engine.connect() as conn:
        assert current_version(conn) == SCHEMA_VERSION
        columns = [c["name"] for c in sa.inspect(conn).get_columns("enrichment_record")]
        assert sorted(columns) == sorted(c.name for c in records_table.columns)
    store.close()


_NEW_RECORD_COLUMN = """
import importlib, sys
import sqlalchemy as sa
from cowrie_enrich_plugin.store import rows, schema
declared, before = rows.record_columns, schema.SCHEMA_VERSION
rows.record_columns = lambda: (*declared(), sa.Column("trial", sa.Text, info={"since": before + 1}))
schema = importlib.reload(schema)
engine = sa.create_engine(sys.argv[1])
assert schema.migrate(engine) == before
with engine.connect() as conn:
    columns = [c["name"] for c in sa.inspect(conn).get_columns("enrichment_record")]
    same = schema.works_with(conn, before + 1) == before + 1  # older code refreshes records
    print(schema.SCHEMA_VERSION, same, columns[-1])
"""


def test_a_new_record_column_is_declared_once_and_migrating_adds_it(tmp_path: Path) -> None:
    """A column :mod:`.rows` declares with the next version is that version, and older
    code stops there (it would refresh records without the column)."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    open_store(url).close()  # a database of this code's version, then the trial's
    result = subprocess.run(
        [sys.executable, "-c", _NEW_RECORD_COLUMN, url], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(SCHEMA_VERSION + 1), "True", "trial"]
    with pytest.raises(StoreError, match="upgrade cowrie-enrich"):
        open_store(url)  # this code, one version behind


def _open_at_barrier(url: str, barrier: Any) -> str:
    """Open the store once ``barrier`` lets every process go; what happened, as text."""
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    barrier.wait()
    try:
        open_store(url).close()
    except StoreError as exc:
        return str(exc)
    return "; ".join(warnings) or "ok"


def test_processes_creating_one_new_sqlite_store_at_once_all_open_it(tmp_path: Path) -> None:
    """The version is read under the write lock: nobody runs a step twice, nobody waits noisily."""
    context = multiprocessing.get_context("fork")
    outcomes: list[str] = []
    with context.Manager() as manager, context.Pool(4) as pool:
        for round_ in range(40):
            barrier = manager.Barrier(4)
            url = f"sqlite:///{tmp_path / f'store{round_}.db'}"
            outcomes += pool.starmap(_open_at_barrier, [(url, barrier)] * 4)
    assert set(outcomes) == {"ok"}


def test_database_newer_than_the_code_is_refused(db_url: str) -> None:
    store = open_store(db_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO cowrie_enrich_schema (version) VALUES (99)"))
    store.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(db_url)
    # nor does a command that only reads or prunes touch it (#23 item 12)
    with pytest.raises(StoreError, match="newer"):
        open_store(db_url, create=False)


def test_code_one_version_behind_works_on_after_a_step_that_only_adds(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade: the newer sensors migrated; this code, one behind, goes on
    while the new version says it works with this one, and refuses it otherwise."""
    ahead = SCHEMA_VERSION + 1
    store = open_store(db_url)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO cowrie_enrich_schema (version, works_with) VALUES (:v, :w)"),
            {"v": ahead, "w": SCHEMA_VERSION},
        )
    store.close()
    with caplog.at_level(logging.WARNING):
        store = open_store(db_url)
    assert f"schema version {ahead}, newer" in caplog.text and "upgrade it soon" in caplog.text
    record = EnrichmentRecord(ip="11.0.9.1", status=Status.PENDING)
    store.put_records([record])
    assert store.get_records(["11.0.9.1"])["11.0.9.1"].status is Status.PENDING
    with store.engine.begin() as conn:
        assert current_version(conn) == ahead  # nothing was migrated back or forth
        conn.execute(
            sa.text("UPDATE cowrie_enrich_schema SET works_with = :v WHERE version = :v"),
            {"v": ahead},
        )
    store.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(db_url)


def test_a_fresh_database_records_what_each_version_works_with(db_url: str) -> None:
    store = open_store(db_url)
    with store.engine.connect() as conn:
        rows: dict[int, int | None] = dict(
            conn.execute(sa.text("SELECT version, works_with FROM cowrie_enrich_schema")).all()
        )
    store.close()
    # step 7 only adds a table (and this column): code at version 6 would work with it
    assert rows[7] == 6 and rows[6] is None


def test_unreachable_database_is_advice_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        open_store(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(ConfigError, match="db = 'not a url' is not a database URL"):
        open_store("not a url")
    with pytest.raises(ConfigError, match="unknown database kind"):
        open_store("nosuchdb://x/y")


def test_sqlite_is_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.close()


def test_sqlite_transactions_in_turn_keep_to_the_connection_used_last(tmp_path: Path) -> None:
    """Its page cache is still good: another connection's write would have emptied it."""
    store = open_store(f"sqlite:///{tmp_path / 'turns.db'}")
    with store.engine.connect(), store.engine.connect():
        pass  # two pooled connections now, as when two threads overlapped once

    def which(conn: sa.Connection) -> int:
        return id(conn.connection.dbapi_connection)

    used = [store.write(which), store.run(which), store.write(which), store.run(which)]
    assert len(set(used)) == 1, used
    store.close()


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")
@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
def test_a_sqlite_url_in_memory_mode_keeps_its_own_pool(tmp_path: Path) -> None:
    """SQLAlchemy pools ``?mode=memory`` otherwise: no setting of a file's may reach it."""
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}?mode=memory")
    store.put_records([enriched("11.0.4.1")])
    assert "11.0.4.1" in store.get_records(["11.0.4.1"])
    store.close()


def test_sqlite_writer_and_reader_side_by_side(tmp_path: Path) -> None:
    """A second connection holding the write lock only delays the store; nothing fails."""
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    store: Store = open_store(url)
    import sqlite3
    import threading
    import time

    other = sqlite3.connect(tmp_path / "locked.db", check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE other_writer (x)")
    threading.Timer(1.0, other.commit).start()
    started = time.monotonic()
    store.put_records([enriched("11.0.3.1")])
    assert time.monotonic() - started >= 0.9
    assert "11.0.3.1" in store.get_records(["11.0.3.1"])
    assert utc_now().tzinfo is not None
    other.close()
    store.close()


def test_what_a_run_delivered_is_news_once_and_gone_runs_are_dropped(db_url: str) -> None:
    from cowrie_enrich_plugin.store.deliveries import drop_gone_runs, news
    from cowrie_enrich_plugin.store.schema import delivered_table

    signed = [("11.0.1.1", "enriched|2026-12-01T00:00:00Z|"), ("11.0.1.2", "pending|None|")]
    run, other, gone = open_store(db_url), open_store(db_url), open_store(db_url)
    assert news(run, signed) == {"11.0.1.1", "11.0.1.2"}
    assert news(run, signed) == set()  # delivered as they are
    assert news(run, [("11.0.1.2", "enriched|2026-12-02T00:00:00Z|")]) == {"11.0.1.2"}
    assert news(other, signed) == {"11.0.1.1", "11.0.1.2"}  # each run its own
    gone.owner = _dead_owner()
    assert news(gone, signed) == {"11.0.1.1", "11.0.1.2"}
    assert drop_gone_runs(run) == 1
    with run.engine.connect() as conn:
        runs = sa.select(delivered_table.c.run).distinct()
        assert {row[0] for row in conn.execute(runs)} == {run.owner, other.owner}
    for store in (run, other, gone):
        store.close()


def test_commands_that_write_to_an_existing_store_upgrade_an_older_one(tmp_path: Path) -> None:
    """cache retry and cache prune never create a store, but upgrade one of an older
    schema (cache retry failed on a version-5 store: no such column ...classification)."""
    from click.testing import CliRunner

    from cowrie_enrich_plugin.cli import main

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    migrate(engine, target=SCHEMA_VERSION - 1)
    engine.dispose()
    for command in (["cache", "retry"], ["cache", "prune"]):
        done = CliRunner().invoke(main, [*command, "--db", url, "--cymru", "127.0.0.1:9"])
        assert done.exit_code == 0, (command, done.output)
    with sa.create_engine(url).connect() as conn:
        assert current_version(conn) == SCHEMA_VERSION


def test_prepared_statements_can_be_turned_off_in_the_url(pg_url: str) -> None:
    """``?prepare_threshold=none`` (for pgbouncer) reaches psycopg as None; a bad value is refused."""
    store = open_store(pg_url + "?prepare_threshold=none")
    try:
        with store.engine.connect() as conn:
            for _ in range(10):  # psycopg would prepare after 5
                conn.execute(sa.text("SELECT 1")).all()
            assert conn.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
            prepared = conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements"))
            assert prepared.scalar_one() == 0
    finally:
        store.close()
    with pytest.raises(ConfigError, match="prepare_threshold='soon'") as refused:
        open_store("postgresql://u:secret@127.0.0.1:1/db?password=hunter2&prepare_threshold=soon")
    assert "secret" not in str(refused.value) and "hunter2" not in str(refused.value)
