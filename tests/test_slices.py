"""Whois batches: full ones, then a last round of even sizes, answered together."""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cowrie_enrich_plugin.channel import End, NewAddresses, ToEngine
from cowrie_enrich_plugin.config import EnrichConfig
from cowrie_enrich_plugin.engine.flusher import Flusher
from cowrie_enrich_plugin.engine.inflight import Batches
from cowrie_enrich_plugin.engine.serve import enrich_now, open_engine
from cowrie_enrich_plugin.slices import balanced_slices, even_slices, slices
from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults

from .helpers import global_ips


@given(st.integers(min_value=0, max_value=3000), st.integers(min_value=1, max_value=600))
def test_even_slices_are_as_few_as_slices_and_differ_by_one_at_most(count: int, size: int) -> None:
    items = list(range(count))
    even = [list(part) for part in even_slices(items, size)]
    assert [item for part in even for item in part] == items
    assert len(even) == len(list(slices(items, size)))
    assert all(0 < len(part) <= size for part in even)
    if even:
        assert max(map(len, even)) - min(map(len, even)) <= 1


@given(
    st.integers(min_value=0, max_value=6000),
    st.integers(min_value=1, max_value=600),
    st.integers(min_value=1, max_value=8),
)
def test_balanced_slices_are_full_but_for_an_even_last_round(
    count: int, size: int, lanes: int
) -> None:
    items = list(range(count))
    parts = [list(part) for part in balanced_slices(items, size, lanes)]
    assert [item for part in parts for item in part] == items
    assert len(parts) == len(list(slices(items, size)))
    last_round = (len(parts) - 1) % lanes + 1 if parts else 0
    assert all(len(part) == size for part in parts[: len(parts) - last_round])
    tail = [len(part) for part in parts[len(parts) - last_round :]]
    assert all(0 < length <= size for length in tail)
    if tail:
        assert max(tail) - min(tail) <= 1


def test_balanced_slices_even_out_only_the_last_round() -> None:
    def sizes(count: int) -> list[int]:
        return [len(part) for part in balanced_slices(range(count), 500, 2)]

    assert sizes(583) == [292, 291]
    assert sizes(1_083) == [500, 500, 83]  # 361 x 3 would take two rounds of 361
    assert sizes(1_537) == [500, 500, 269, 268]
    assert sizes(1_000) == [500, 500]


def _sent_in_batches(
    server: BulkWhoisServer, db: Path, *steps: tuple[int, ToEngine | Callable[[], object]]
) -> tuple[list[dict[str, Any]], list[int]]:
    """The engine's loop over messages: the records, and the sizes of the batches asked.

    Each step is a message (or something to do), handed on once the server has had that
    many requests (the batches before it are on their connections); the loop runs on a
    thread of its own.
    """
    host, port = server.address
    config = EnrichConfig(db=f"sqlite:///{db}", cymru_host=host, cymru_port=port, retries=1)
    inbox: queue.Queue[ToEngine] = queue.Queue()
    records: list[dict[str, Any]] = []
    enricher = open_engine(config)
    flusher = Flusher(enricher, lambda found, *_: records.extend(found))
    loop = threading.Thread(target=flusher.run, args=(inbox,), daemon=True)
    loop.start()
    try:
        for asked, step in steps:
            deadline = time.monotonic() + 30
            while len(server.requests) < asked and time.monotonic() < deadline:
                time.sleep(0.005)
            assert len(server.requests) >= asked, server.requests
            if callable(step):
                step()
            else:
                inbox.put(step)
        loop.join(timeout=60)
        assert not loop.is_alive()
    finally:
        enricher.close()
    return records, sorted(len(request.ips) for request in server.requests)


def test_what_a_flush_sends_goes_in_batches_of_even_sizes(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """599 addresses waiting at the end are two batches of 300 and 299, not 500 and 99.

    A whole batch goes as soon as it is whole; what is left of the 600 addresses of the
    first message waits, and at the end it joins the last 499. Sent on two connections
    at once, the last batch is answered when the first is.
    """
    ips = global_ips(1_099, seed=37)
    steps = ((0, NewAddresses(ips[:600])), (1, NewAddresses(ips[600:])), (1, End()))
    records, sizes = _sent_in_batches(server, tmp_path / "t.db", *steps)
    assert sorted(r["ip"] for r in records) == sorted(ips)
    assert sizes == [299, 300, 500]


def test_a_batch_waiting_for_a_connection_joins_the_last_round(tmp_path: Path) -> None:
    """1,583 addresses: two batches out, one waiting; the last 83 come, and the waiting
    500 and the 83 go as 292 and 291 on the two connections, not as 500 and 83."""
    ips = global_ips(1_583, seed=38)
    steps = ((0, NewAddresses(ips[:1500])), (2, NewAddresses(ips[1500:])), (2, End()))
    # A second a batch: the two first are still out when the last addresses come.
    with BulkWhoisServer(faults=Faults(latency_per_batch=1.0)) as server:
        records, sizes = _sent_in_batches(server, tmp_path / "t.db", *steps)
    assert sorted(r["ip"] for r in records) == sorted(ips)
    assert "pending" not in {r["status"] for r in records}  # every batch answered
    assert sizes == [291, 292, 500, 500]


def test_a_batch_taken_back_keeps_its_stale_records(tmp_path: Path) -> None:
    """Addresses asked again because their records expired, in the batch taken back: when
    whois then fails, each unanswered one is served its stored record, not a pending one."""
    ips = global_ips(1_583, seed=39)
    db = tmp_path / "t.db"
    with BulkWhoisServer() as server:
        host, port = server.address
        config = EnrichConfig(db=f"sqlite:///{db}", cymru_host=host, cymru_port=port)
        enricher = open_engine(config)
        try:
            stored = {r["ip"]: r for r in enrich_now(enricher, ips[1000:1500])}
        finally:
            enricher.close()
    with sqlite3.connect(db) as conn:  # expired: each is asked again
        conn.execute("UPDATE enrichment_record SET expires_at = '2000-01-01 00:00:00'")
    failing = Faults(latency_per_batch=1.0, reset_rate=1.0)
    with BulkWhoisServer(faults=Faults(latency_per_batch=1.0)) as server:
        records, sizes = _sent_in_batches(
            server,
            db,
            (0, NewAddresses(ips[:1500])),
            (2, lambda: setattr(server, "faults", failing)),  # whois fails from now on
            (2, NewAddresses(ips[1500:])),
            (2, End()),
        )
        again = {ip for request in server.requests[2:] for ip in request.ips}
    assert sizes[:2] == [291, 292]  # the batch waiting, taken back, and the last 83
    taken_back = again & set(stored)
    assert len(taken_back) >= 400, len(taken_back)
    served = {r["ip"]: r for r in records}
    # Answered before the reset, or unanswered and served as stored: never pending.
    assert [served[ip] for ip in taken_back if served[ip]["status"] == "pending"] == []


def test_a_batch_not_started_is_taken_back_and_its_slot_freed() -> None:
    """``Batches.take_back``: the batch waiting for the one connection is withdrawn."""
    batches = Batches(concurrency=1)
    started, release = threading.Event(), threading.Event()
    persisted: list[str] = []

    def first() -> str:
        started.set()
        release.wait(30)
        return "first"

    batches.ask(["192.0.2.1"], first, persisted.append)
    assert started.wait(30)
    batches.ask(["198.51.100.1", "198.51.100.2"], lambda: "second", persisted.append)
    assert batches.take_back() == [["198.51.100.1", "198.51.100.2"]]
    assert len(batches) == 1  # the first, on its connection
    assert batches.take_back() == []  # a batch started is not taken back
    assert batches.asking == 3  # the addresses stay asked until answered
    release.set()
    for number, name in enumerate(("third", "fourth", "fifth")):  # every slot is free again
        batches.ask([f"203.0.113.{number}"], lambda name=name: name, persisted.append)
    batches.wait()
    batches.shutdown()
    assert persisted == ["first", "third", "fourth", "fifth"]
