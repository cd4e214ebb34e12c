"""The bulk whois client against the loopback server, one fault mode at a time, then all at once."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cowrie_enrich_plugin.slices import slices
from cowrie_enrich_plugin.sources.cymru.client import BatchResult, BulkWhoisClient
from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults
from cowrie_enrich_plugin.testing.whois_server import WhoisRequest

from .helpers import global_ips, refused_whois_config


def query(client: BulkWhoisClient, ips: list[str], concurrency: int = 2) -> list[BatchResult]:
    """Many batches, ``concurrency`` at a time, as the engine's connection slots send them."""
    batches = list(slices(list(dict.fromkeys(ips)), client.batch_size))
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(client.query_batch, batches))


def client_for(server: BulkWhoisServer, **kwargs: object) -> BulkWhoisClient:
    host, port = server.address
    options: dict[str, object] = {
        "timeout": 3.0,
        "retries": 4,
        "wait_initial": 0.01,
        "wait_max": 0.05,
    }
    options.update(kwargs)
    return BulkWhoisClient(host, port, **options)  # type: ignore[arg-type]


def assert_exact(server: BulkWhoisServer, answers: dict[str, object]) -> None:
    for ip, answer in answers.items():
        expected = server.expected(ip)
        got = answer.to_dict()  # type: ignore[attr-defined]
        assert expected is not None
        for key, value in expected.items():
            assert got[key] == value, (ip, key)


def assert_reasked_only_after_disturbance(requests: list[WhoisRequest]) -> None:
    """An address is asked again only when its previous answer was disturbed."""
    last: dict[str, WhoisRequest] = {}
    for request in requests:
        for ip in request.ips:
            if ip in last:
                assert ip in last[ip].disturbed, f"{ip} asked again after an undisturbed answer"
            last[ip] = request


def test_ten_thousand_addresses_in_twenty_batches(server: BulkWhoisServer) -> None:
    ips = global_ips(10_000, seed=3, v6_share=0.1)
    client = client_for(server)
    results = query(client, ips)
    assert len(results) == 20 and len(server.requests) == 20
    assert all(len(r.ips) == 500 for r in server.requests)
    answers = {ip: a for result in results for ip, a in result.answers.items()}
    assert set(answers) == set(ips)
    assert all(not result.unresolved for result in results)
    assert_exact(server, answers)
    assert client.stats.connections == 20 and client.stats.retries == 0


@pytest.mark.parametrize(
    "faults",
    [
        Faults(reset_rate=0.5),
        Faults(truncate_rate=0.5),
        Faults(garbage_rate=0.05),
        Faults(error_rate=0.1),
        Faults(header=False),
        Faults(latency_per_batch=0.05, latency_per_ip=0.0005),
    ],
    ids=["reset", "truncate", "garbage", "error-lines", "no-header", "slow"],
)
def test_each_fault_mode_leaves_only_exact_answers(server: BulkWhoisServer, faults: Faults) -> None:
    server.faults = faults
    ips = global_ips(600, seed=5, v6_share=0.2)
    client = client_for(server, retries=6)
    results = query(client, ips)
    answers = {ip: a for r in results for ip, a in r.answers.items()}
    unresolved = {ip for r in results for ip in r.unresolved}
    assert set(answers) | unresolved == set(ips) and not set(answers) & unresolved
    assert_exact(server, answers)
    assert_reasked_only_after_disturbance(server.requests)
    assert not any(r.not_addresses for r in server.requests)
    # a retry asks only for what is still missing: no address in two requests of
    # one batch's attempts unless disturbed (checked above), and nothing beyond ips
    assert set(server.asked()) == set(ips)
    if faults.error_rate == 0:
        assert not unresolved  # six attempts suffice for these rates


def test_hang_times_out_and_retries(server: BulkWhoisServer) -> None:
    server.faults = Faults(hang_rate=1.0)
    client = client_for(server, timeout=0.3, retries=2)
    started = time.monotonic()
    result = client.query_batch(["8.8.8.8", "1.1.1.1"])
    assert time.monotonic() - started < 3
    assert result.answers == {} and set(result.unresolved) == {"8.8.8.8", "1.1.1.1"}
    assert "WhoisTimeout" in result.unresolved["8.8.8.8"]
    assert result.attempts == 2
    server.faults = Faults()
    assert client.query_batch(["8.8.8.8"]).answers


def test_refused_connections_and_circuit_breaker(server: BulkWhoisServer) -> None:
    server.set_refusing(True)
    client = client_for(server, retries=2, breaker_threshold=3, breaker_cooldown=60)
    results = query(client, global_ips(2500, seed=9), concurrency=1)
    assert all(not r.answers for r in results)
    assert sum(len(r.unresolved) for r in results) == 2500
    assert "WhoisConnectError" in next(iter(results[0].unresolved.values()))
    assert client.stats.circuit_opened == 1
    assert client.stats.failed_batches == 3  # the last two batches never touched the network
    server.set_refusing(False)
    asked = len(server.requests)
    still_open = client.query_batch(["8.8.8.8"])  # open: fails without a connection
    assert "circuit open" in still_open.unresolved["8.8.8.8"] and len(server.requests) == asked


def test_error_lines_leave_addresses_unresolved_never_guessed(server: BulkWhoisServer) -> None:
    server.set_rows("8.8.4.4", [])  # the server answers Error for it, always
    client = client_for(server, retries=3)
    result = client.query_batch(["8.8.8.8", "8.8.4.4", "1.1.1.1"])
    assert set(result.answers) == {"8.8.8.8", "1.1.1.1"}
    assert set(result.unresolved) == {"8.8.4.4"}
    asked = server.asked()
    assert asked["8.8.4.4"] == 3
    assert_reasked_only_after_disturbance(server.requests)


def test_concurrency_is_bounded(server: BulkWhoisServer) -> None:
    server.faults = Faults(latency_per_batch=0.2)
    client = client_for(server, batch_size=100)
    query(client, global_ips(800, seed=2))
    assert server.peak_connections == 2


class _RawServer:
    """A whois server on loopback that sends ``answer`` as ``pieces`` say, then maybe closes."""

    def __init__(self, answer: bytes, piece: int, pause: float, close: bool) -> None:
        self.answer, self.piece, self.pause, self.close = answer, piece, pause, close
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.recv(65536)
                for start in range(0, len(self.answer), self.piece):
                    conn.sendall(self.answer[start : start + self.piece])
                    time.sleep(self.pause)
                if not self.close:
                    time.sleep(30)


def _answer_of(ips: list[str]) -> bytes:
    from cowrie_enrich_plugin.testing.whois_server import Row, render_row

    rows = [Row(64500, ip, f"{ip.rsplit('.', 1)[0]}.0/24", "US", "arin", None, "X") for ip in ips]
    return b"Bulk mode; test\n" + b"".join(render_row(row) + b"\n" for row in rows)


def test_a_server_that_drips_its_answer_is_read_whole_and_one_that_stops_is_cut() -> None:
    ips = global_ips(40, seed=61)
    answer = _answer_of(ips)
    # Dripping (a row's worth every 30 ms, far below a read's wake size): slow, not silent.
    drip = _RawServer(answer, piece=60, pause=0.03, close=True)
    client = BulkWhoisClient("127.0.0.1", drip.port, timeout=20, idle_timeout=0.5, retries=1)
    result = client.query_batch(ips)
    assert set(result.answers) == set(ips) and result.attempts == 1
    # Half the answer, then nothing, the connection left open: cut after the idle time.
    stops = _RawServer(answer[: len(answer) // 2], piece=60, pause=0.0, close=False)
    client = BulkWhoisClient("127.0.0.1", stops.port, timeout=20, idle_timeout=0.5, retries=1)
    started = time.monotonic()
    result = client.query_batch(ips)
    assert time.monotonic() - started < 3
    assert "WhoisTimeout" in result.unresolved[ips[-1]]
    assert 0 < len(result.answers) < len(ips) // 2  # the rows proven whole are kept


def test_a_batch_the_open_breaker_held_back_is_not_an_attempt(tmp_path: Path) -> None:
    """Whois refuses; three failed batches open the breaker; the batches it then holds
    back count no attempt and wait no backoff, only until the breaker may close."""
    import sqlalchemy as sa

    from cowrie_enrich_plugin.engine.steps import Enricher
    from cowrie_enrich_plugin.store.schema import pending_queue

    config = refused_whois_config(tmp_path)
    ips = global_ips(10, seed=61)
    with Enricher.open(config) as enricher:
        for round_ in range(8):
            mine, _theirs = enricher.claim(ips)
            assert mine == ips, round_
            result = enricher.ask_whois(ips)
            assert (result.held_for > 0) == (round_ >= 3), (round_, result)
            enricher.finish_batches([(ips, result, {})])
        with enricher.store.engine.connect() as conn:
            q = pending_queue.c
            rows = conn.execute(sa.select(q.attempts, q.next_attempt_at, q.last_error)).all()
        now = enricher.store.now().replace(tzinfo=None)
    assert len(rows) == 10
    for attempts, next_attempt, error in rows:
        assert attempts == 3 and "circuit open" in error
        # due once the breaker lets a trial through (60 s), not after 300 s x 2**attempts
        assert next_attempt - now <= dt.timedelta(seconds=61)
