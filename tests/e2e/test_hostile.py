"""Faults during real runs: every whois fault at once, PostgreSQL connections killed or cut,
SQLite locked by another writer. Afterwards the store holds one correct record per IP,
and nothing was delivered twice in a run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults

from ..helpers import (
    assert_complete,
    clean_env,
    cowrie_enrich,
    end_other_sessions,
    global_ips,
    host_config,
    run_ingest,
    write_config,
    write_log,
)
from ..test_cymru_client import assert_reasked_only_after_disturbance

pytestmark = pytest.mark.slow


def ingest(config: Path, log: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_ingest(log, config, "--output", str(out), timeout=300, env={**clean_env(), **env})


def delivered(out: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in out.read_text().splitlines()]
    counts = Counter(r["ip"] for r in records)
    assert not [ip for ip, n in counts.items() if n > 1], "delivered twice"
    return records


def test_every_whois_fault_at_once(tmp_path: Path) -> None:
    ips = global_ips(4000, seed=91, v6_share=0.15)
    log = write_log(tmp_path / "cowrie.json.gz", ips, events_per_ip=2)
    faults = Faults(
        reset_rate=0.15,
        truncate_rate=0.15,
        garbage_rate=0.01,
        error_rate=0.002,
        latency_per_batch=0.05,
        hang_rate=0.02,
    )
    with BulkWhoisServer(faults=faults, seed=5) as server:
        config = write_config(
            tmp_path / "h.toml", server, f"sqlite:///{tmp_path / 'f.db'}", timeout=1, retries=6
        )
        done = ingest(config, log, tmp_path / "out.jsonl")
        assert done.returncode in (0, 75), done.stdout + done.stderr
        records = delivered(tmp_path / "out.jsonl")
        assert {r["ip"] for r in records} == set(ips)
        pending = 0
        for record in records:
            if record["status"] == "pending":
                pending += 1
                assert record["cymru"] is None
                continue
            expected = server.expected(record["ip"])
            assert expected is not None
            for key, value in expected.items():
                assert record["cymru"][key] == value, (record["ip"], key)
        assert pending < len(ips) * 0.02
        assert (done.returncode == 75) == (pending > 0)
        assert_reasked_only_after_disturbance(server.requests)
        assert not any(r.not_addresses for r in server.requests)


class CuttableProxy:
    """A TCP proxy on loopback in front of PostgreSQL that can cut every connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.refusing = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.refusing:  # down() came while this one was connecting: cut it too
                    client.close()
                    upstream.close()
                    continue
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def down(self) -> None:
        """Drop every connection and refuse new ones until ``refusing`` is cleared."""
        self.refusing = True
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self.sockets.clear()

    def cut(self, seconds: float) -> None:
        """Drop every connection and refuse new ones for ``seconds`` (then accept again)."""
        self.down()
        time.sleep(seconds)
        self.refusing = False

    def close(self) -> None:
        self.listener.close()


def test_postgresql_connections_killed_mid_run(tmp_path: Path, pg_url: str) -> None:
    ips = global_ips(3000, seed=92)
    log = write_log(tmp_path / "cowrie.json", ips)
    engine = sa.create_engine(pg_url)
    stop = threading.Event()
    kills = Counter[str]()

    def saboteur() -> None:
        while not stop.wait(0.3):
            with engine.connect() as conn:
                killed = end_other_sessions(conn)
                conn.commit()
            kills["terminated"] += killed

    with BulkWhoisServer(faults=Faults(latency_per_batch=0.3)) as server:
        config = write_config(tmp_path / "pg.toml", server, pg_url, batch_size=200)
        thread = threading.Thread(target=saboteur, daemon=True)
        thread.start()
        try:
            done = ingest(config, log, tmp_path / "out.jsonl")
        finally:
            stop.set()
            thread.join()
        assert kills["terminated"] > 0
        assert done.returncode == 0, done.stdout + done.stderr
        records = delivered(tmp_path / "out.jsonl")
        assert {r["ip"] for r in records} == set(ips)
        assert_complete(pg_url, server, ips)
    engine.dispose()


def test_store_rides_out_a_database_that_is_briefly_unreachable(pg_url: str) -> None:
    from cowrie_enrich_plugin.record import EnrichmentRecord, Status
    from cowrie_enrich_plugin.store import open_store

    url = sa.engine.make_url(pg_url)
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        store = open_store(url.set(port=proxy.port).render_as_string(hide_password=False))
        store.put_records([EnrichmentRecord("11.1.0.1", Status.SKIPPED)])
        cutter = threading.Thread(target=proxy.cut, args=(2.0,))
        cutter.start()
        time.sleep(0.1)
        started = time.monotonic()
        store.put_records([EnrichmentRecord("11.1.0.2", Status.SKIPPED)])  # waits, retries
        assert time.monotonic() - started > 1.0
        cutter.join()
        assert set(store.get_records(["11.1.0.1", "11.1.0.2"])) == {"11.1.0.1", "11.1.0.2"}
        store.close()
    finally:
        proxy.close()


def test_sqlite_locked_by_another_writer_during_a_run(tmp_path: Path) -> None:
    ips = global_ips(1500, seed=93)
    log = write_log(tmp_path / "cowrie.json", ips)
    db = tmp_path / "locked.db"
    with BulkWhoisServer(faults=Faults(latency_per_batch=0.2)) as server:
        config = write_config(tmp_path / "l.toml", server, f"sqlite:///{db}", batch_size=250)
        first = ingest(config, write_log(tmp_path / "seed.json", ips[:10]), tmp_path / "seed.jsonl")
        assert first.returncode == 0
        holder = sqlite3.connect(db, timeout=30, check_same_thread=False, isolation_level=None)
        held = threading.Event()

        def hold() -> None:
            time.sleep(0.5)
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("CREATE TABLE IF NOT EXISTS other_writer (x)")
            held.set()
            time.sleep(3)
            holder.execute("COMMIT")

        thread = threading.Thread(target=hold)
        thread.start()
        started = time.monotonic()
        done = ingest(config, log, tmp_path / "out.jsonl")
        thread.join()
        holder.close()
        assert held.is_set()
        assert done.returncode == 0, done.stdout + done.stderr
        assert time.monotonic() - started > 1
        assert {r["ip"] for r in delivered(tmp_path / "out.jsonl")} == set(ips)
        assert_complete(f"sqlite:///{db}", server, ips)


def test_database_down_for_good_loses_nothing_collected(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database dies mid-run and stays down: batches it cannot record are not sent,
    every address is still delivered (pending), the run says how many went unrecorded,
    and the next run, with the database back, completes them from the logs."""
    from cowrie_enrich_plugin.hosts.reference import make_plugin_manager, run_ingest
    from cowrie_enrich_plugin.store import open_store, retry

    monkeypatch.setattr(retry, "TRANSIENT_ATTEMPTS", 2)  # give up in 0.2 s, not 25 s
    ips = global_ips(3000, seed=94)
    log = write_log(tmp_path / "cowrie.json", ips)
    url = sa.engine.make_url(pg_url)
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    with BulkWhoisServer(faults=Faults(latency_per_batch=0.3)) as server:
        config = host_config(server, proxied, worker="thread", batch_size=100)
        done = threading.Event()

        def cut_after_first_request() -> None:
            # at most 4 of the 30 batches can be leased before the first is answered
            while not server.requests and not done.is_set():
                time.sleep(0.01)
            proxy.down()  # and stays down

        cutter = threading.Thread(target=cut_after_first_request, daemon=True)
        cutter.start()
        try:
            summary = run_ingest([str(log)], config, pm=make_plugin_manager(config))
        finally:
            done.set()
            cutter.join()
        # The proxy stays down: the first run's engine thread, which cannot be stopped,
        # must not reach the database again. Let through, it can show the second run a
        # live holder of its leases (its session), or hold the queue rows' locks.
        stats = summary.plugin
        assert summary.delivered == len(ips)
        assert stats.unsaved > 0
        # Batches answered but not saved stay pending in the store; the summary says so.
        with open_store(pg_url, create=False) as store:
            stored_pending = store.stats().by_status.get("pending", 0)
        assert stored_pending > 0
        # Every address the summary calls pending is pending in the store or counted
        # unsaved. The two overlap by at most one batch: the lease whose COMMIT reached
        # the server while its acknowledgement was lost with the connection (leases are
        # taken one at a time, on the engine's loop), which the run cannot tell apart
        # from one that never arrived.
        overlap = stored_pending + stats.unsaved - stats.pending
        assert 0 <= overlap <= 100, (stored_pending, stats.unsaved, stats.pending)
        assert stats.pending + stats.resolved == len(ips)
        asked_first = set(server.asked())
        assert len(asked_first) < len(ips)  # batches that could not be recorded were not sent
        # The first run's process would be gone, its sessions with it: end what its
        # engine thread left (a session whose client was cut can outlive the cut).
        sessions = sa.create_engine(pg_url)
        with sessions.begin() as conn:
            end_other_sessions(conn)
        direct = host_config(server, pg_url, worker="thread")
        again = run_ingest([str(log)], direct, pm=make_plugin_manager(direct))
        if again.plugin.unsaved or again.pending:  # what held the second run up
            with sessions.begin() as conn:
                seen = conn.execute(
                    sa.text(
                        "SELECT application_name, state, wait_event_type, left(query, 120)"
                        " FROM pg_stat_activity WHERE datname = current_database()"
                    )
                ).all()
            pytest.fail(f"second run: {again.plugin}; sessions: {seen}")
        sessions.dispose()
        assert_complete(pg_url, server, ips)
    proxy.close()


def test_worker_killed_mid_run_is_reported_not_hung(tmp_path: Path) -> None:
    from cowrie_enrich_plugin.collect import Collector
    from cowrie_enrich_plugin.config import resolve_config
    from cowrie_enrich_plugin.errors import WorkerError
    from cowrie_enrich_plugin.transport import ProcessTransport

    got: list[dict[str, Any]] = []
    with BulkWhoisServer(faults=Faults(latency_per_batch=0.5)) as server:
        section = host_config(server, f"sqlite:///{tmp_path / 'w.db'}")["plugins"]["enrich"]
        settings = resolve_config(section, {})
        transport = ProcessTransport(settings)
        pipeline = Collector(settings, got.extend, transport)
        ips = global_ips(60_000, seed=95)
        pipeline.ingest([{"src_ip": ip} for ip in ips[:1000]])
        transport.proc.kill()
        started = time.monotonic()
        with pytest.raises(WorkerError, match="exited"):
            for start in range(1000, len(ips), 1000):  # more than the queue holds
                pipeline.ingest([{"src_ip": ip} for ip in ips[start : start + 1000]])
                time.sleep(0.01)
            pipeline.end()
        assert time.monotonic() - started < 30


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root")
def test_two_sensors_in_separate_pid_namespaces_ask_each_address_once(
    tmp_path: Path, db_url: str
) -> None:
    """#23 item 10: same host name, own pid spaces (containers): neither takes the other's lease."""
    ips = global_ips(1200, seed=96)
    log = write_log(tmp_path / "cowrie.json", ips)
    with BulkWhoisServer(faults=Faults(latency_per_batch=0.4)) as server:
        config = write_config(tmp_path / "h.toml", server, db_url, batch_size=100)
        command = ["unshare", "--pid", "--fork", "--mount-proc", cowrie_enrich(), "ingest"]
        runs = [
            subprocess.Popen(
                [*command, str(log), "--config", str(config)],
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for proc in runs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, out + err
        asked = server.asked()
    assert set(asked) == set(ips)
    assert max(asked.values()) == 1, sum(asked.values())


def test_a_locked_sqlite_store_is_not_blamed_on_whois(tmp_path: Path) -> None:
    """#23 item 11: another process holds the write lock for the whole run."""
    ips = global_ips(100, seed=97)
    log = write_log(tmp_path / "cowrie.json", ips)
    db_file = tmp_path / "locked.db"
    with BulkWhoisServer() as server:
        config = write_config(
            tmp_path / "h.toml", server, f"sqlite:///{db_file}", shutdown_timeout=3
        )
        first = ingest(
            config, write_log(tmp_path / "one.json", global_ips(1, seed=98)), tmp_path / "o1"
        )
        assert first.returncode == 0, first.stdout + first.stderr  # the store exists
        server.reset_log()
        holder = sqlite3.connect(db_file, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            done = ingest(config, log, tmp_path / "out.jsonl")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert not server.requests
    assert done.returncode == 75, done.stdout + done.stderr
    assert "whois server did not answer" not in done.stdout
    assert "the database was busy or slow" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_the_hostile_corpus_through_enrich_and_follow(tmp_path: Path) -> None:
    """Every kind of bad line (deep nesting included): enrich writes every line, in order;
    the follower reads on past them; neither stops."""
    from ..test_logreader import hostile_log
    from .test_follow import start_follower

    log = tmp_path / "cowrie.json"
    expected = hostile_log(log)
    lines = log.read_bytes().splitlines()
    with BulkWhoisServer() as server:
        db = f"sqlite:///{tmp_path / 'x.db'}"
        filtered = subprocess.run(
            [cowrie_enrich(), "enrich", "--db", db, "--cymru", server.hostport],
            input=log.read_bytes(),
            env=clean_env(),
            capture_output=True,
            timeout=120,
        )
        assert filtered.returncode == 0, filtered.stderr
        out = filtered.stdout.splitlines()
        assert len(out) == len(lines)
        for line, written in zip(lines, out, strict=True):
            assert written == line or written.startswith(line.rstrip(b"}").rstrip())
        config = write_config(tmp_path / "h.toml", server, db, flush_interval=1)
        live = tmp_path / "live.json"
        live.write_bytes(log.read_bytes())
        proc = start_follower(live, config)
        time.sleep(3)
        with live.open("a") as handle:  # it still reads what comes after them
            handle.write(json.dumps({"src_ip": "8.8.8.8"}) + "\n")
        time.sleep(2)
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stdout + stderr
    assert f"{len(lines) + 1} lines" in stdout
    assert f"{len(expected)} bad line(s)" in stdout, stdout
