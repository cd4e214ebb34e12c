"""Real ``cowrie-enrich`` processes: killed mid-run, and two at once on one PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults

from ..helpers import (
    assert_complete,
    clean_env,
    cowrie_enrich,
    global_ips,
    run_ingest,
    write_config,
    write_log,
)

pytestmark = pytest.mark.slow


def test_sigkill_mid_run_then_rerun_completes(tmp_path: Path) -> None:
    ips = global_ips(3000, seed=21)
    log = write_log(tmp_path / "cowrie.json.gz", ips, events_per_ip=2)
    db_url = f"sqlite:///{tmp_path / 'kill.db'}"
    with BulkWhoisServer(faults=Faults(latency_per_batch=0.6)) as server:
        config = write_config(tmp_path / "host.toml", server, db_url, batch_size=250)
        proc = subprocess.Popen(
            [cowrie_enrich(), "ingest", str(log), "--config", str(config)],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while len(server.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.requests) >= 3, proc.communicate(timeout=10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        first_run = set(server.asked())
        assert 0 < len(first_run) < len(ips)  # killed mid-run

        server.faults = Faults()
        server.reset_log()
        done = run_ingest(log, config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_complete(db_url, server, ips)
        # the rerun took over the dead run's leases at once (same host, pid gone)
        assert "6000 events" in done.stdout


def test_two_processes_share_one_postgresql(tmp_path: Path, pg_url: str) -> None:
    ips = global_ips(5000, seed=33)
    log = write_log(tmp_path / "cowrie.json", ips, events_per_ip=1)
    with BulkWhoisServer(faults=Faults(latency_per_batch=0.15, latency_per_ip=0.0005)) as server:
        config = write_config(tmp_path / "host.toml", server, pg_url)
        procs = [
            subprocess.Popen(
                [
                    cowrie_enrich(),
                    "ingest",
                    str(log),
                    "--config",
                    str(config),
                    "--output",
                    str(tmp_path / f"out{n}.jsonl"),
                ],
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(2)
        ]
        outputs = [p.communicate(timeout=300) for p in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, out + err
        asked = server.asked()
        total = sum(asked.values())
        assert set(asked) == set(ips)
        assert total <= 1.05 * len(ips), total
        assert_complete(pg_url, server, ips)
        # each host received one complete record for every address
        import json

        for n in range(2):
            lines = (tmp_path / f"out{n}.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines]
            assert len(records) == len({r["ip"] for r in records}) == len(ips)
            assert all(r["status"] in ("enriched", "unannounced") for r in records)
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT ip) FROM enrichment_record")
        ).one()
        queued = conn.execute(sa.text("SELECT count(*) FROM pending_queue")).scalar()
    engine.dispose()
    assert tuple(rows) == (len(ips), len(ips)) and queued == 0


@pytest.mark.parametrize(
    ("processes", "rounds", "offsets"),
    [(2, 3, ()), (8, 1, ()), (8, 1, (-600, 600, -400, 400, -200, 200, 0, 550))],
    ids=["2x3", "8x1", "8-skewed-600s"],
)
def test_concurrent_sensors_on_postgresql_never_deadlock(
    tmp_path: Path, pg_url: str, processes: int, rounds: int, offsets: tuple[float, ...]
) -> None:
    """A few rounds of ``benchmarks/concurrent_ingest.py`` (which runs 20 by default).

    Skewed: sensors whose clocks are up to 600 s off each other's, and the leases
    (timed by the database's clock) still keep every address asked once.
    """
    module = _concurrent_ingest()
    ips = global_ips(1500, seed=34)
    with BulkWhoisServer(faults=Faults(latency_per_batch=0.15, latency_per_ip=0.0005)) as server:
        for _ in range(rounds):
            result = module.run_round(pg_url, server, tmp_path, ips, processes, offsets)
            assert (result.deadlocks, result.hiccups, result.asked_twice) == (0, 0, 0), result
            assert (result.failed_runs, result.incomplete, result.wrong) == (0, 0, 0), result


def test_sixteen_sensors_through_pgbouncer_in_transaction_mode(tmp_path: Path, pg_url: str) -> None:
    """``?prepare_threshold=none``, as docs/fleet.rst says, and every sensor gets through.

    Sixteen sensors share eight server connections; a statement psycopg prepared on
    one of them would be missing (or already there) on the next.
    """
    from ..helpers.pgbouncer import pgbouncer

    module = _concurrent_ingest()
    ips = global_ips(1500, seed=36)
    with (
        pgbouncer(pg_url, tmp_path / "pgbouncer") as pooled,
        BulkWhoisServer(faults=Faults(latency_per_batch=0.15, latency_per_ip=0.0005)) as server,
    ):
        sensor_url = pooled + "?prepare_threshold=none"
        result = module.run_round(pg_url, server, tmp_path, ips, 16, sensor_url=sensor_url)
    assert (result.deadlocks, result.hiccups, result.asked_twice) == (0, 0, 0), result
    assert (result.failed_runs, result.incomplete, result.wrong) == (0, 0, 0), result


def _concurrent_ingest() -> Any:
    """``benchmarks/concurrent_ingest.py``, imported (skips where the tree has no benchmarks)."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "concurrent_ingest.py"
    if not bench.exists():
        pytest.skip("benchmarks/ is not in this tree")
    import importlib.util

    spec = importlib.util.spec_from_file_location("concurrent_ingest", bench)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_full_server_is_waited_for_not_failed(tmp_path: Path, pg_url: str) -> None:
    """ "too many connections" (every slot taken for a moment) is retried, not fatal."""
    import threading
    import uuid

    import psycopg

    admin = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    role = f"ce_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 4")
        conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    user_url = admin.replace("://postgres@", f"://{role}@", 1)
    assert user_url != admin, "the admin URL names another user"
    held = [psycopg.connect(user_url) for _ in range(4)]  # every slot the role has
    release = threading.Timer(3.0, lambda: [c.close() for c in held])
    ips = global_ips(300, seed=35)
    try:
        with BulkWhoisServer() as server:
            config = write_config(tmp_path / "host.toml", server, user_url)
            release.start()
            log = write_log(tmp_path / "a.json", ips)
            done = run_ingest(log, config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "too many connections" in done.stderr  # said as a hiccup, then waited out
        assert "Traceback" not in done.stderr
    finally:
        release.cancel()
        for conn in held:
            conn.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_batch_run_whose_worker_dies_ends_at_once_though_others_hold_leases(
    tmp_path: Path, pg_url: str
) -> None:
    """Another sensor, alive, holds leases on half the addresses for 10 minutes; this
    run's worker is killed: the run ends within seconds, exit 1, one line of advice."""
    import os

    from cowrie_enrich_plugin.store import open_store

    ips = global_ips(3000, seed=37)
    log = write_log(tmp_path / "a.json", ips)
    with BulkWhoisServer(faults=Faults(latency_per_batch=1.0)) as server:
        config = write_config(tmp_path / "host.toml", server, pg_url)
        other = open_store(pg_url)
        try:
            other.claim(ips[:1500], 600)
            proc = subprocess.Popen(
                [cowrie_enrich(), "ingest", str(log), "--config", str(config)],
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            deadline = time.monotonic() + 30
            while not server.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            workers = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
            ).stdout.split()
            assert workers, "no worker process"
            killed = time.monotonic()
            for pid in workers:
                os.kill(int(pid), signal.SIGKILL)
            try:
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            took = time.monotonic() - killed
        finally:
            other.close()
    assert proc.returncode == 1, out + err
    assert took < 20, took  # not the other sensor's lease time
    assert "worker exited" in err and "Traceback" not in err
