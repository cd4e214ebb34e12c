"""Whois batches answered while the store thread is busy are persisted together.

Much of a SQLite transaction's cost is the index pages its rows touch, which four
batches share, so the store thread takes the batches answered by the time it is
free, up to four, in one transaction. Each batch still comes out once, whole, and leaves
the queue.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin.channel import End, NewAddresses, ToEngine
from cowrie_enrich_plugin.cli.options import settings
from cowrie_enrich_plugin.counters import RunCounters
from cowrie_enrich_plugin.engine.flusher import Flusher
from cowrie_enrich_plugin.engine.steps import Enricher, FinishedBatch
from cowrie_enrich_plugin.errors import StoreError
from cowrie_enrich_plugin.record import EnrichmentRecord, Status
from cowrie_enrich_plugin.store.schema import pending_queue, records_table
from cowrie_enrich_plugin.testing import BulkWhoisServer

from .helpers import global_ips

_BATCH = 50


def _config(tmp_path: Path, server: BulkWhoisServer, **extra: Any) -> Any:
    host, port = server.address
    section = {
        "db": f"sqlite:///{tmp_path / 'c.db'}",
        "cymru_host": host,
        "cymru_port": port,
        "batch_size": _BATCH,
        "concurrency": 2,
        **extra,
    }
    return settings({"plugins": {"enabled": ["enrich"], "enrich": section}})


def _enrich(
    flusher: Flusher,
    monkeypatch: pytest.MonkeyPatch,
    asking: Callable[[Sequence[str]], Any],
    finishing: Callable[[Sequence[FinishedBatch]], list[list[EnrichmentRecord]]],
    ips: list[str],
) -> None:
    """Run ``flusher`` over ``ips`` to its end, whois asked through ``asking`` and the
    answers saved through ``finishing`` (each wrapping the enricher's own)."""
    monkeypatch.setattr(flusher.enricher, "ask_whois", asking)
    monkeypatch.setattr(flusher.enricher, "finish_batches", finishing)
    inbox: queue.Queue[ToEngine] = queue.Queue()
    inbox.put(NewAddresses(ips))
    inbox.put(End())
    flusher.run(inbox)


def _read(tmp_path: Path, query: Any) -> list[Any]:
    """The rows of ``query`` on the test's SQLite store, read after the run."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.connect() as conn:
        rows = list(conn.execute(query).all())
    engine.dispose()
    return rows


def _run(
    tmp_path: Path,
    server: BulkWhoisServer,
    monkeypatch: pytest.MonkeyPatch,
    ips: list[str],
    fail: bool = False,
    refuse_first_emit: bool = False,
) -> tuple[list[list[int]], list[dict[str, Any]], RunCounters]:
    """Enrich ``ips`` with a store thread held on its first save until whois answered all.

    :returns: the batch sizes of each save, the records emitted, the run's counters.
    """
    saves: list[list[int]] = []
    emitted: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    answered = threading.Event()
    asked = [0]
    counting = threading.Lock()  # two network threads count
    batches = -(-len(ips) // _BATCH)

    def emit(records: list[dict[str, Any]], _repeats: tuple[str, ...], _stale: bool) -> None:
        if refuse_first_emit and not refused:
            refused.extend(records)
            raise OSError("the host went away")  # its records only: the others go on
        emitted.extend(records)

    with Enricher.open(_config(tmp_path, server)) as enricher:
        ask, finish = enricher.ask_whois, enricher.finish_batches

        def asking(batch: Sequence[str]) -> Any:
            result = ask(batch)
            with counting:
                asked[0] += 1
                if asked[0] == batches:
                    answered.set()
            return result

        def finishing(done: Sequence[FinishedBatch]) -> list[list[EnrichmentRecord]]:
            saves.append([len(ips) for ips, _result, _previous in done])
            if len(saves) == 1:  # a slow store while the other batches are answered
                assert answered.wait(60)
            if fail:
                raise StoreError("database error: disk I/O error")
            return finish(done)

        flusher = Flusher(enricher, emit, resume_pending=False)
        _enrich(flusher, monkeypatch, asking, finishing, ips)
        counters = flusher.counters()
    return saves, emitted, counters


def test_batches_answered_while_the_store_is_busy_are_saved_together(
    tmp_path: Path, server: BulkWhoisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ips = global_ips(8 * _BATCH, seed=81)
    saves, emitted, counters = _run(tmp_path, server, monkeypatch, ips)
    assert sum(len(save) for save in saves) == 8, saves
    assert all(len(save) <= 4 for save in saves), saves
    assert max(len(save) for save in saves) >= 2, saves  # some went together
    assert sorted(r["ip"] for r in emitted) == sorted(ips)  # each out once
    assert {r["status"] for r in emitted} <= {"enriched", "unannounced"}
    for record in emitted:
        cymru = {k: v for k, v in record["cymru"].items() if k != "fetched_at"}
        assert cymru == server.expected(record["ip"]), record["ip"]
    assert counters.resolved == len(ips) and counters.errors == 0
    stored = _read(tmp_path, sa.select(records_table.c.ip, records_table.c.status))
    queued = _read(tmp_path, sa.select(sa.func.count()).select_from(pending_queue))[0][0]
    assert sorted(ip for ip, _status in stored) == sorted(ips)
    assert "pending" not in {status for _ip, status in stored}
    assert queued == 0


def test_a_failed_save_of_several_batches_sends_each_address_pending_once(
    tmp_path: Path, server: BulkWhoisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refuses: every batch of the failed save goes out pending and stays queued."""
    ips = global_ips(6 * _BATCH, seed=82)
    saves, emitted, counters = _run(tmp_path, server, monkeypatch, ips, fail=True)
    assert max(len(save) for save in saves) >= 2, saves
    assert sorted(r["ip"] for r in emitted) == sorted(ips)
    assert {r["status"] for r in emitted} == {"pending"}
    queued = [ip for (ip,) in _read(tmp_path, sa.select(pending_queue.c.ip))]
    assert sorted(queued) == sorted(ips)  # leased before asking: the next run asks again
    assert counters.errors == 6  # one a batch, as when each was saved alone


def test_outcomes_with_their_own_retry_terms_are_one_transaction(db_url: str) -> None:
    """Four batches' outcomes saved together: one commit, each unanswered address with
    its own batch's terms, on both backends. Two differ only in whether they were
    asked; the one backing off comes last, on an address that failed twice before."""
    from cowrie_enrich_plugin.store import open_store
    from cowrie_enrich_plugin.store.outcomes import BatchOutcome

    from .test_store import NOW, enriched

    store = open_store(db_url)
    done, asked, held, again = "11.0.1.1", "11.0.1.2", "11.0.1.3", "11.0.1.4"
    assert store.claim([done, asked, held, again], 60, now=NOW) == {done, asked, held, again}
    for _ in range(2):
        store.save([], {again: ("WhoisTimeout: slow", None)}, now=NOW)
    commits: list[object] = []
    sa.event.listen(store.engine, "commit", commits.append)
    store.save_outcomes(
        [
            BatchOutcome([enriched(done)]),
            BatchOutcome((), {asked: ("circuit open", None)}, retry_delay=60.0),
            BatchOutcome((), {held: ("circuit open", None)}, retry_delay=60.0, attempted=False),
            BatchOutcome((), {again: ("WhoisTimeout: slow", None)}, backoff=100.0),
        ],
        now=NOW,
    )
    assert len(commits) == 1
    q = pending_queue.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(q.ip, q.attempts, q.last_error, q.next_attempt_at, q.lease_owner)
        ).all()
    moment = NOW.replace(tzinfo=None)
    assert sorted(rows) == [
        (asked, 1, "circuit open", moment + dt.timedelta(seconds=60), None),
        (held, 0, "circuit open", moment + dt.timedelta(seconds=60), None),
        (again, 3, "WhoisTimeout: slow", moment + dt.timedelta(seconds=400), None),
    ]
    stored = store.get_records([done, asked, held, again])
    assert stored[done] == enriched(done)
    assert {stored[ip].status for ip in (asked, held, again)} == {Status.PENDING}
    store.close()


def test_whois_answering_again_ends_the_backoff_of_a_failed_batch_saved_with_it(
    tmp_path: Path, server: BulkWhoisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long-lived: batches 0 and A fail (whois refuses), B is answered; A and B are saved
    together while the store thread is busy with 0.

    B's answer ends every backoff, A's included: A is asked again at once (or left due
    now), not after ``retry_interval``. Noting B's answer before A was saved found A
    still leased, and A kept its backoff.
    """
    ips = global_ips(3 * _BATCH, seed=83)
    failed = ips[_BATCH : 2 * _BATCH]
    all_asked = threading.Event()
    calls: list[int] = []
    saves: list[int] = []
    section = {"concurrency": 1, "retries": 1, "timeout": 1.0, "retry_interval": 300.0}
    config = dataclasses.replace(_config(tmp_path, server, **section), lifecycle="long-lived")
    with Enricher.open(config) as enricher:
        ask, finish = enricher.ask_whois, enricher.finish_batches

        def asking(batch: Sequence[str]) -> Any:
            calls.append(len(batch))
            server.set_refusing(len(calls) <= 2)
            try:
                return ask(batch)
            finally:
                server.set_refusing(False)
                if len(calls) == 3:
                    all_asked.set()

        flusher = Flusher(enricher, lambda *_args: None, resume_pending=False)

        def finishing(done: Sequence[FinishedBatch]) -> list[list[EnrichmentRecord]]:
            saves.append(len(done))
            if len(saves) == 1:  # busy with batch 0 until A and B wait to be saved
                assert all_asked.wait(60)
                deadline = time.monotonic() + 60
                while len(flusher._sender._answered) < 2:  # appended just after asking
                    assert time.monotonic() < deadline
                    time.sleep(0.005)
            return finish(done)

        _enrich(flusher, monkeypatch, asking, finishing, ips)
    assert saves[:2] == [1, 2], saves
    q = pending_queue.c
    waiting = dict(_read(tmp_path, sa.select(q.ip, q.next_attempt_at)))
    asked = server.asked()
    for ip in failed:  # asked again after B's answer, or due now
        assert asked[ip] >= 1 or waiting.get(ip, "gone") is None, (ip, waiting.get(ip))


def test_a_batch_that_cannot_be_handed_on_does_not_hold_back_those_saved_with_it(
    tmp_path: Path, server: BulkWhoisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handing on the first batch of a save raises: the others still go out, and the run
    ends (none of them is left counted as asked)."""
    ips = global_ips(6 * _BATCH, seed=84)
    saves, emitted, counters = _run(tmp_path, server, monkeypatch, ips, refuse_first_emit=True)
    assert max(len(save) for save in saves) >= 2, saves
    out = [r["ip"] for r in emitted]
    assert len(out) == len(set(out)) == len(ips) - _BATCH  # all but the refused batch
    assert counters.resolved == len(ips) and counters.backlog == 0
