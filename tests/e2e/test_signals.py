"""How a run ends when the whole process group is killed, interrupted or terminated.

Each test runs real ``cowrie-enrich ingest`` processes in their own session
(``setsid``, as a terminal or a service manager starts them) and signals the whole
group, or the host alone, as a power cut, a terminal's Ctrl-C, ``timeout`` or
systemd would. After each, one more run completes every address with no traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

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


def start(log: Path, config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [cowrie_enrich(), "ingest", str(log), "--config", str(config), *extra],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as setsid gives
    )


def wait_for_requests(server: BulkWhoisServer, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while len(server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.requests) >= count, proc.communicate(timeout=10)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_group_gone(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.05)
    return not group_alive(pgid)


def rerun_completes(
    log: Path, config: Path, server: BulkWhoisServer, db_url: str, ips: list[str], *extra: str
) -> None:
    server.faults = Faults()
    done = run_ingest(log, config, *extra, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Fatal Python error" not in done.stderr  # the worker leaves cleanly
    assert_complete(db_url, server, ips)


@pytest.mark.parametrize("batch_size", [500, 20])
def test_the_whole_group_killed_then_rerun_completes(tmp_path: Path, batch_size: int) -> None:
    """A power cut: host and worker die together; the next run takes their leases over."""
    ips = global_ips(3000 if batch_size == 500 else 600, seed=121)
    log = write_log(tmp_path / "cowrie.json", ips, events_per_ip=2)
    db_url = f"sqlite:///{tmp_path / 'kill.db'}"
    with BulkWhoisServer(faults=Faults(latency_per_batch=1.0)) as server:
        config = write_config(tmp_path / "host.toml", server, db_url)
        proc = start(log, config, "--batch-size", str(batch_size))
        wait_for_requests(server, 2, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_group_gone(proc.pid, 5)
        assert 0 < len(server.asked()) < len(ips)
        server.reset_log()
        rerun_completes(log, config, server, db_url, ips, "--batch-size", str(batch_size))
        assert max(len(r.ips) for r in server.requests) <= batch_size
        # nothing answered before the kill was asked again
        assert all(count == 1 for count in server.asked().values())


@pytest.mark.parametrize(
    "how", ["SIGINT to the group", "SIGTERM to the host", "SIGHUP to the group"]
)
def test_a_stopped_run_says_so_and_leaves_nothing_behind(tmp_path: Path, how: str) -> None:
    ips = global_ips(3000, seed=122)
    log = write_log(tmp_path / "cowrie.json", ips, events_per_ip=1)
    db_url = f"sqlite:///{tmp_path / 'stop.db'}"
    # every batch hangs: only the signal can end this run early
    with BulkWhoisServer(faults=Faults(hang_rate=1.0)) as server:
        config = write_config(
            tmp_path / "host.toml", server, db_url, timeout=60, shutdown_timeout=3
        )
        proc = start(log, config)
        wait_for_requests(server, 2, proc)
        started = time.monotonic()
        if how.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
        elif how.startswith("SIGHUP"):  # a closing terminal
            os.killpg(proc.pid, signal.SIGHUP)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
        assert proc.returncode == 130, out + err
        assert took < 3 + 2, took  # within shutdown_timeout
        assert "Traceback" not in out + err and "Aborted" not in out + err
        assert "interrupted:" in err and "run again to finish" in err
        assert "pending" in out  # the summary
        assert wait_group_gone(proc.pid, 5), "the worker outlived the host"
        server.reset_log()
        rerun_completes(log, config, server, db_url, ips)


def test_a_worker_whose_host_is_killed_stops_by_itself(tmp_path: Path) -> None:
    """SIGKILL to the host alone: the orphaned worker stops promptly, not after minutes."""
    ips = global_ips(2000, seed=123)
    log = write_log(tmp_path / "cowrie.json", ips, events_per_ip=1)
    db_url = f"sqlite:///{tmp_path / 'orphan.db'}"
    with BulkWhoisServer(faults=Faults(hang_rate=1.0)) as server:
        config = write_config(tmp_path / "host.toml", server, db_url, timeout=60)
        proc = start(log, config)
        wait_for_requests(server, 2, proc)
        proc.kill()  # the host only; its worker is reparented
        proc.wait(timeout=10)
        assert wait_group_gone(proc.pid, 5), "the orphaned worker went on"
        server.reset_log()
        rerun_completes(log, config, server, db_url, ips)


@pytest.mark.parametrize("command", ["lookup", "cache retry"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_lookup_and_cache_retry_stop_on_a_signal_while_whois_hangs(
    tmp_path: Path, command: str, sig: signal.Signals
) -> None:
    ips = global_ips(3, seed=95)
    db = f"sqlite:///{tmp_path / 's.db'}"
    with BulkWhoisServer(faults=Faults(hang_rate=1.0)) as server:
        # A hanging whois holds a batch 30 s per attempt, 4 attempts: not waited for.
        config = write_config(tmp_path / "h.toml", server, db, timeout=30, retries=4)
        if command == "cache retry":  # queue them: a run whois does not answer
            with BulkWhoisServer() as down:
                down.set_refusing(True)
                queued = write_config(tmp_path / "q.toml", down, db, retries=1)
                subprocess.run(
                    [
                        cowrie_enrich(),
                        "ingest",
                        str(write_log(tmp_path / "c.json", ips)),
                        "--config",
                        str(queued),
                    ],
                    env=clean_env(),
                    capture_output=True,
                    timeout=60,
                )
            args = ["cache", "retry"]
        else:
            args = ["lookup", *ips]
        proc = subprocess.Popen(
            [cowrie_enrich(), *args, "--config", str(config)],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        wait_for_requests(server, 1, proc)
        stopped = time.monotonic()
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - stopped
    assert proc.returncode == 130, (out, err)
    assert took < 10 + 2, took  # shutdown_timeout, and the interpreter's exit
    assert "interrupted: 3 address(es) pending, run again to finish" in err, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
