"""A long-lived host after a whois outage: the backlog is asked as soon as whois answers.

``ingest --follow`` on a simulated clock: 2,000 addresses arrive while whois refuses
every connection and go out pending; whois stays down for 30 minutes, long enough for
each address's own backoff to reach tens of minutes; then whois answers again and no
new address arrives. The backlog must be resolved within the engine's background
look (plus the breaker's cooldown) and the time the batches take, in full batches,
without a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cowrie_enrich_plugin.engine.lifecycle import BACKGROUND_EVERY
from cowrie_enrich_plugin.testing import BulkWhoisServer, SimulatedClock

from ..helpers import cowrie_enrich, global_ips, write_config

pytestmark = pytest.mark.slow

START = 1_793_491_200.0  # 2026-11-01T00:00:00Z
BATCH = 500
#: The whois breaker's cooldown (the first probe after whois is back may wait it out).
BREAKER_COOLDOWN = 60.0


def _event(ip: str, n: int, at: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(at))
    return json.dumps(
        {"eventid": "cowrie.session.connect", "src_ip": ip, "session": f"s{n}", "timestamp": stamp}
    )


def test_the_backlog_drains_once_whois_answers_again(tmp_path: Path) -> None:
    ips = global_ips(2000, seed=61)
    live = tmp_path / "cowrie.json"
    live.write_text("")
    finals: dict[str, float] = {}
    pending: set[str] = set()
    with (
        BulkWhoisServer(seed=61) as server,
        SimulatedClock(tmp_path / "clock", START) as clock,
        open(tmp_path / "stderr", "w+b") as errors,
    ):
        config = write_config(
            tmp_path / "host.toml",
            server,
            f"sqlite:///{tmp_path / 'b.db'}",
            batch_size=BATCH,
            retries=1,
            retry_interval=300,
        )
        server.set_refusing(True)
        proc = subprocess.Popen(
            [
                *(cowrie_enrich(), "ingest", "--follow", str(live), "--config", str(config)),
                *("--output", "-", "--status-file", str(tmp_path / "status.json")),
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=clock.environment(),
            start_new_session=True,
        )
        assert proc.stdout is not None

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                record = json.loads(line)
                if record["status"] == "pending":
                    pending.add(record["ip"])
                else:
                    finals.setdefault(record["ip"], clock.now())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            with live.open("a") as log:
                log.write("".join(_event(ip, n, START) + "\n" for n, ip in enumerate(ips)))
            deadline = time.monotonic() + 120
            while len(pending) < len(ips) and time.monotonic() < deadline:
                clock.advance(5)
                time.sleep(0.02)
            assert len(pending) == len(ips) and not finals
            while clock.now() < START + 1800:  # down for half an hour
                clock.advance(10)
                time.sleep(0.01)
            server.reset_log()
            server.set_refusing(False)
            back = clock.now()
            deadline = time.monotonic() + 120
            while len(finals) < len(ips) and time.monotonic() < deadline:
                # Seconds while the engine waits out its timers; once whois is asked,
                # tenths, so that a loaded machine's slower batches cost little
                # simulated time (the bound is on the engine's waits, not on its speed).
                clock.advance(0.1 if server.requests else 1)
                time.sleep(0.01)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            while proc.poll() is None:  # time runs on while it stops
                clock.advance(0.1)
                time.sleep(0.01)
            proc.wait(60)
            reader.join(10)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    assert len(finals) == len(ips), stderr[-2000:]
    took = max(finals.values()) - back
    print(f"\nthe backlog of {len(ips)} resolved {took:.0f} simulated s after whois came back")
    assert took <= BACKGROUND_EVERY + BREAKER_COOLDOWN + 30, stderr[-2000:]
    sizes = [len(request.ips) for request in server.requests]
    assert sorted(sizes) == [BATCH] * (len(ips) // BATCH), sizes  # full batches, each once
    assert "whois answers again" in stderr
    # The summary at the stop (SIGTERM to the group, as systemd does) has the worker's
    # last counters: it said "0 resolved ... 2000 IP(s) pending in the store".
    counters = json.loads((tmp_path / "status.json").read_text())["counters"]
    assert counters["resolved"] == len(ips) and counters["pending_now"] == 0, counters
    assert "pending in the store" not in stderr, stderr[-500:]
