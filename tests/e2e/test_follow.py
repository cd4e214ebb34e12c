"""``cowrie-enrich ingest --follow``: a growing log, its rotation mid-burst, and the stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cowrie_enrich_plugin.hosts.tail import FollowedFile
from cowrie_enrich_plugin.testing import BulkWhoisServer

from ..helpers import clean_env, cowrie_enrich, global_ips, run_ingest, write_config

pytestmark = pytest.mark.slow


def event(ip: str, n: int) -> str:
    return json.dumps({"eventid": "cowrie.session.connect", "src_ip": ip, "session": f"{n:08x}"})


def delivered(path: Path) -> dict[str, dict[str, object]]:
    """The latest record per address (a delivery is an upsert by ip)."""
    found: dict[str, dict[str, object]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                found[str(record["ip"])] = record
    return found


def start_follower(live: Path, config: Path, *args: str) -> subprocess.Popen[str]:
    """``cowrie-enrich ingest --follow LIVE --config CONFIG ARGS``, in a session of its own."""
    return subprocess.Popen(
        [cowrie_enrich(), "ingest", "--follow", str(live), "--config", str(config), *args],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_rotation_mid_burst_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """The follower alone, against a writer that renames and recreates mid-burst."""
    live = tmp_path / "cowrie.json"
    live.write_text("")
    followed = FollowedFile(str(live))
    seen: list[bytes] = []
    handle = live.open("a")
    for n in range(5000):
        handle.write(f"line {n}\n")
        if n % 700 == 0:
            handle.flush()
            seen.extend(line.text for line in followed.read())
        if n == 2500:  # Cowrie's daily rotation: rename, then a new file
            handle.close()
            live.rename(tmp_path / "cowrie.json.2026-11-28")
            handle = live.open("a")
    handle.write("last line without a newline")
    handle.close()
    live.rename(tmp_path / "cowrie.json.2026-11-29")
    live.write_text("")
    for _ in range(3):
        seen.extend(line.text for line in followed.read())
    followed.close()
    assert seen == [f"line {n}".encode() for n in range(5000)] + [b"last line without a newline"]
    assert followed.rotations == 2


def test_follow_delivers_as_lines_arrive_across_rotation_and_stops_on_sigterm(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    live = tmp_path / "cowrie.json"
    live.write_text("")
    out = tmp_path / "records.jsonl"
    db = f"sqlite:///{tmp_path / 'follow.db'}"
    config = write_config(tmp_path / "host.toml", server, db, flush_interval=1, shutdown_timeout=3)
    proc = start_follower(live, config, "--output", str(out))
    try:
        time.sleep(1.0)
        first = global_ips(1, seed=501)[0]
        with live.open("a") as handle:
            handle.write(event(first, 0) + "\n")
        appended = time.monotonic()
        while first not in delivered(out) and time.monotonic() - appended < 1 + 2 + 2:
            time.sleep(0.1)
        assert first in delivered(out), proc.stderr
        assert time.monotonic() - appended < 1 + 2  # flush_interval + 2 s

        # a burst of 3,000 lines with a rotation in its middle
        burst = global_ips(600, seed=502)
        handle = live.open("a")
        for n in range(3000):
            handle.write(event(burst[n % len(burst)], n) + "\n")
            if n == 1500:
                handle.close()
                live.rename(tmp_path / "cowrie.json.2026-11-28")
                handle = live.open("a")
            if n % 100 == 0:
                handle.flush()
                time.sleep(0.01)
        handle.close()
        deadline = time.monotonic() + 30
        while set(burst) - set(delivered(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(delivered(out)) == {first, *burst}
    finally:
        stopped = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - stopped < 3 + 2  # shutdown_timeout
    assert proc.returncode == 0, stdout + stderr
    assert "Traceback" not in stdout + stderr
    # every line read exactly once: 1 + 3,000 events from as many lines
    assert re.search(r"^3001 events from 3001 lines", stdout, re.M), stdout
    records = delivered(out)
    for ip in (first, *burst):
        expected = server.expected(ip)
        assert expected is not None
        assert records[ip]["status"] in ("enriched", "unannounced")
        assert records[ip]["cymru"]["asn"] == expected["asn"]  # type: ignore[index]


@pytest.mark.parametrize("how", ["SIGTERM to the host", "SIGHUP to the group"])
def test_addresses_collected_but_not_yet_sent_survive_a_stop(
    server: BulkWhoisServer, tmp_path: Path, how: str
) -> None:
    """A long-lived host cannot give them again: the stop resolves or records each one.

    SIGHUP (a closing terminal, ``systemctl reload``) stops it as SIGTERM does.
    """
    live = tmp_path / "cowrie.json"
    live.write_text("")
    db_file = tmp_path / "stop.db"
    config = write_config(
        tmp_path / "host.toml", server, f"sqlite:///{db_file}", shutdown_timeout=5
    )
    proc = start_follower(live, config)
    ips = global_ips(18, seed=503)
    time.sleep(1.5)
    with live.open("a") as handle:
        handle.writelines(event(ip, n) + "\n" for n, ip in enumerate(ips))
    time.sleep(1.5)  # read and handed on; the batch waits for the 30 s flush
    if how.startswith("SIGHUP"):
        os.killpg(proc.pid, signal.SIGHUP)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"{len(ips)} events from {len(ips)} lines" in out  # the summary
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{db_file}")
    with engine.connect() as conn:
        known = {row[0] for row in conn.execute(sa.text("SELECT ip FROM enrichment_record"))}
        queued = {row[0] for row in conn.execute(sa.text("SELECT ip FROM pending_queue"))}
    engine.dispose()
    assert known == set(ips)  # answered, or recorded pending (then also queued)
    assert queued <= set(ips)


def test_a_batch_run_waits_for_batches_queued_behind_slow_ones(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """Batches longer than the host's quiet window, more of them than connection slots."""
    server.faults.latency_per_batch = 12
    log = tmp_path / "cowrie.json"
    log.write_text("".join(event(ip, n) + "\n" for n, ip in enumerate(global_ips(150, seed=41))))
    db = f"sqlite:///{tmp_path / 'slow.db'}"
    config = write_config(
        tmp_path / "host.toml", server, db, batch_size=50, concurrency=1, timeout=30
    )
    done = run_ingest(log, config)
    assert done.returncode == 0, done.stderr
    assert "150 resolved by whois" in done.stderr + done.stdout, done.stderr


def test_a_restarted_follower_keeps_what_it_wrote_before(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """The documented unit restarts on failure: --output is appended to, not emptied."""
    live = tmp_path / "cowrie.json"
    ips = global_ips(20, seed=504)
    live.write_text("".join(event(ip, n) + "\n" for n, ip in enumerate(ips[:10])))
    out = tmp_path / "records.jsonl"
    config = write_config(
        tmp_path / "host.toml", server, f"sqlite:///{tmp_path / 'r.db'}", flush_interval=1
    )
    for first, round_ips in ((True, ips[:10]), (False, ips[10:])):
        if not first:  # rotated while it was down: the first records are not read again
            live.rename(tmp_path / "cowrie.json.1")
            live.write_text("".join(event(ip, n) + "\n" for n, ip in enumerate(round_ips)))
        proc = start_follower(live, config, "--output", str(out))
        deadline = time.monotonic() + 30
        while set(round_ips) - set(delivered(out)) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
    assert set(delivered(out)) == set(ips), stdout + stderr


def test_a_trickle_waits_flush_interval_not_the_hosts_own_rhythm(tmp_path: Path) -> None:
    """An address every 2 s, ``flush_interval = 25``: nothing is asked of whois until the
    first has waited 25 s, then one batch holds them all (the host's 10 s commits used to
    flush a partial batch each time)."""
    live = tmp_path / "cowrie.json"
    live.write_text("")
    ips = global_ips(12, seed=91)
    with BulkWhoisServer() as server:
        config = write_config(tmp_path / "host.toml", server, f"sqlite:///{tmp_path / 'c.db'}")
        config.write_text(
            config.read_text().replace("flush_interval = 0.2", "flush_interval = 25.0")
        )
        follower = start_follower(live, config, "--output", str(tmp_path / "out.jsonl"))
        try:
            time.sleep(2)  # started, following
            first = time.monotonic()
            with live.open("a") as log:
                for n, ip in enumerate(ips):
                    log.write(event(ip, n) + "\n")
                    log.flush()
                    time.sleep(2)
            assert not server.requests, "a partial batch went before flush_interval"
            deadline = first + 40
            while len(delivered(tmp_path / "out.jsonl")) < len(ips) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(server.requests) == 1 and sorted(server.requests[0].ips) == sorted(ips)
        finally:
            os.killpg(follower.pid, signal.SIGTERM)
            follower.communicate(timeout=30)


def test_an_answer_another_sensor_gives_reaches_a_quiet_follower(tmp_path: Path) -> None:
    """Another sensor holds the lease of the one address in the log and then answers it:
    the follower, with no new line to read, delivers that answer within a few flushes."""
    import datetime as dt

    from cowrie_enrich_plugin.record import CymruAnswer, EnrichmentRecord, Status, utc_now
    from cowrie_enrich_plugin.store import open_store

    live = tmp_path / "cowrie.json"
    live.write_text("")
    out = tmp_path / "out.jsonl"
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    ip = global_ips(1, seed=92)[0]
    other = open_store(db)  # the other sensor: alive, holding the lease for ten minutes
    try:
        assert other.claim([ip], 600) == {ip}
        with BulkWhoisServer() as server:
            config = write_config(tmp_path / "host.toml", server, db, flush_interval=1.0)
            follower = start_follower(live, config, "--output", str(out))
            try:
                live.write_text(event(ip, 0) + "\n")
                time.sleep(4)  # read, found leased elsewhere; the log stays quiet from here on
                now = utc_now()
                answer = CymruAnswer((64500,), "EXAMPLE, US", "1.0.0.0/8", "US", "arin", "", now)
                other.save(
                    [
                        EnrichmentRecord(
                            ip, Status.ENRICHED, answer, None, now + dt.timedelta(days=1)
                        )
                    ]
                )
                deadline = time.monotonic() + 15
                while delivered(out).get(ip, {}).get("status") != "enriched":
                    assert time.monotonic() < deadline, delivered(out)
                    time.sleep(0.1)
                assert not server.requests  # asked by the other sensor only
            finally:
                os.killpg(follower.pid, signal.SIGTERM)
                follower.communicate(timeout=30)
    finally:
        other.close()
