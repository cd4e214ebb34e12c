"""A day of a long-lived host, simulated: a million addresses, whois down for the first hours.

``cowrie-enrich ingest --follow`` (host and worker processes, as an operator runs it)
reads a growing ``cowrie.json`` on a simulated clock (:class:`SimulatedClock`: both
processes read their time from a file this test moves forward) against the loopback
whois server. The log gets a day of events over 1,000,000 distinct addresses, with
addresses coming back hours later; whois refuses every connection for the first
hours. Checked: the peak RSS of the host and of the worker, that every address ends
with a final record and no record is delivered twice, that records that expired are
refreshed when their address comes back, and that whois was asked for an address only
when it had no fresh answer (the failed attempts never reached it).
"""

from __future__ import annotations

import calendar
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cowrie_enrich_plugin.testing import BulkWhoisServer, SimulatedClock

from ..helpers import cowrie_enrich, global_ips, write_config

pytestmark = pytest.mark.slow

#: CE_LONG_RUN_ADDRESSES scales it down for a quick look; the issue asks for a million.
ADDRESSES = int(os.environ.get("CE_LONG_RUN_ADDRESSES", "1000000"))
HOURS = 24
WHOIS_DOWN_HOURS = 3
#: Simulated seconds per tick of the clock, and ticks between two writes to the log.
TICK = 30.0
TICKS_PER_WRITE = 10
#: Sightings of addresses seen before, per write (some after their record expired).
RETURNING_PER_WRITE = 1_500
TTL_HOURS = 6
WORKING_SET = 20_000
#: Bounded memory, not a tight fit: what grew with the addresses seen (1,000,000 of
#: them) would pass it by far. The worker's peak depends on how far the simulated day
#: runs ahead of its work: 214 MB when this test was written, 250-259 MB on 2026-12-05 (the code of
#: both days alike).
RSS_LIMIT_MB = 300
START = 1_793_491_200.0  # 2026-11-01T00:00:00Z
QUIET_OUT = ("--output", "-", "-q")
BATCH = 500


@dataclass
class Deliveries:
    """What the host wrote, per address: final records (their expiry times), pendings."""

    finals: dict[str, list[str]] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)
    #: the last record of some addresses, to check
    samples: dict[str, dict[str, object]] = field(default_factory=dict)
    lines: int = 0
    #: addresses with at least one delivery
    addresses: int = 0

    def read(self, stream: Iterator[bytes]) -> None:
        for line in stream:
            record = json.loads(line)
            self.lines += 1
            ip = record["ip"]
            if ip not in self.finals and ip not in self.pending:
                self.addresses += 1
            if ip in self.samples:
                self.samples[ip] = record
            if record["status"] == "pending":
                self.pending[ip] = self.pending.get(ip, 0) + 1
                continue
            expiries = self.finals.setdefault(ip, [])
            if expiries and expiries[-1] == record["expires_at"]:
                self.repeated.append(ip)
            expiries.append(record["expires_at"])


def _peak_rss_mb(pid: int) -> float:
    """The peak resident set (``VmHWM``) of a running process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def _not_refreshed(deliveries: Deliveries, returns: list[tuple[str, float]]) -> list[str]:
    """The addresses that came back after their first record expired and have no second."""
    finals = deliveries.finals
    return [
        ip
        for ip, when in returns
        if ip in finals and len(finals[ip]) < 2 and when > _epoch(finals[ip][0]) + TICK
    ]


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _epoch(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def _sample(host: int, peaks: dict[str, float]) -> None:
    """Note the peak RSS of the host and its worker (once it has one)."""
    peaks["host"] = max(peaks["host"], _peak_rss_mb(host))
    for child in Path(f"/proc/{host}/task/{host}/children").read_text().split():
        peaks["worker"] = max(peaks["worker"], _peak_rss_mb(int(child)))


def _write(
    ips: list[str],
    write: int,
    per_write: int,
    rng: random.Random,
    now: float,
    returns: list[tuple[str, float]],
) -> str:
    """The log lines of one write: new addresses, and some seen before."""
    fresh = ips[write * per_write : (write + 1) * per_write]
    back = (
        [ips[rng.randrange(write * per_write)] for _ in range(RETURNING_PER_WRITE)] if write else []
    )
    returns += ((ip, now) for ip in back)
    return "".join(_event(ip, n, now) + "\n" for n, ip in enumerate(fresh + back))


def _event(ip: str, n: int, at: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
    return json.dumps(
        {
            "eventid": "cowrie.session.connect",
            "src_ip": ip,
            "session": f"{n:08x}",
            "timestamp": stamp,
        }
    )


@pytest.mark.timeout(1800)
def test_a_simulated_day_with_a_million_addresses(tmp_path: Path) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc for the processes' peak RSS")
    ips = global_ips(ADDRESSES, seed=24)
    rng = random.Random(24)
    writes = HOURS * 3600 // int(TICK * TICKS_PER_WRITE)
    per_write = -(-ADDRESSES // writes)
    live = tmp_path / "cowrie.json"
    live.write_text("")
    with (
        open(tmp_path / "stderr", "w+b") as errors,
        BulkWhoisServer(seed=24) as server,
        SimulatedClock(tmp_path / "clock", START) as clock,
    ):
        config = write_config(
            tmp_path / "host.toml",
            server,
            f"sqlite:///{tmp_path / 'day.db'}",
            ttl_days=TTL_HOURS / 24,
            negative_ttl_hours=TTL_HOURS,
            working_set=WORKING_SET,
            retries=2,
            shutdown_timeout=10,
        )
        server.set_refusing(True)
        proc = subprocess.Popen(
            [
                cowrie_enrich(),
                *("ingest", "--follow", str(live), "--config", str(config), *QUIET_OUT),
                *("--status-file", str(tmp_path / "status.json")),
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=clock.environment(),
            start_new_session=True,
        )
        assert proc.stdout is not None
        deliveries = Deliveries(samples={ip: {} for ip in ips[::9973]})
        reader = threading.Thread(target=deliveries.read, args=(proc.stdout,), daemon=True)
        reader.start()
        peaks = {"host": 0.0, "worker": 0.0}
        returns: list[tuple[str, float]] = []
        up_from = 0  # the first address written once whois answers
        lagging = 0
        try:
            with live.open("a") as log:
                write, next_write, ticks, waiting_since = 0, START, 0, time.monotonic()
                while write < writes:
                    # The next write waits (the clock running on) until the host has
                    # delivered a record for every address of the writes before the last.
                    caught_up = deliveries.addresses >= min(len(ips), (write - 1) * per_write)
                    behind = clock.now() >= next_write and not caught_up
                    if behind and time.monotonic() - waiting_since < 30:
                        clock.advance(0.25)  # the host catches up; the clock slows down
                        time.sleep(0.02)
                        continue
                    if clock.now() >= next_write:
                        lagging += not caught_up
                        now = clock.now()
                        if now - START >= WHOIS_DOWN_HOURS * 3600 and not up_from:
                            server.set_refusing(False)
                            up_from = write * per_write
                        log.write(_write(ips, write, per_write, rng, now, returns))
                        log.flush()
                        write += 1
                        next_write = now + TICK * TICKS_PER_WRITE
                        waiting_since = time.monotonic()
                    clock.advance(TICK)
                    time.sleep(0.02)
                    ticks += 1
                    if ticks % 100 == 0:
                        _sample(proc.pid, peaks)
            # After the last write: the clock runs on until every address is final and
            # the last writes' returning addresses are refreshed (or time is up).
            deadline = time.monotonic() + 300
            last_returns = returns[-2 * RETURNING_PER_WRITE :]
            while time.monotonic() < deadline and (
                len(deliveries.finals) < len(ips) or _not_refreshed(deliveries, last_returns)
            ):
                clock.advance(TICK)
                time.sleep(0.05)
            simulated_hours = (clock.now() - START) / 3600
            _sample(proc.pid, peaks)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
            reader.join(60)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    asked = server.asked()
    print(
        f"\nsimulated {HOURS} h, {len(ips)} addresses, {deliveries.lines} deliveries, "
        f"{sum(asked.values())} addresses asked, {simulated_hours:.1f} h simulated; peak RSS host {peaks['host']:.0f} MB, "
        f"worker {peaks['worker']:.0f} MB; writes before the host had caught up (after 30 s): {lagging}"
    )
    print(stderr[-2000:])
    assert proc.returncode == 0, stderr
    assert peaks["host"] < RSS_LIMIT_MB and peaks["worker"] < RSS_LIMIT_MB, peaks
    # Every address ends with a final record; none is delivered twice as it was.
    assert not deliveries.repeated, deliveries.repeated[:10]
    missing = [ip for ip in ips if ip not in deliveries.finals]
    assert not missing, (len(missing), missing[:10])
    # Whois was asked for an address once per final record (the first answer, and a
    # refresh once it expired and came back; the refused attempts never reached it),
    # and more only after a failed attempt of a batch that reached it (a timeout).
    counters = json.loads((tmp_path / "status.json").read_text())["counters"]
    extra = {ip: asked[ip] - len(deliveries.finals[ip]) for ip in ips}
    assert min(extra.values()) >= 0
    failed_attempts = counters["retries"] + counters["failed_batches"]
    print(f"asked beyond the final records: {sum(extra.values())}; counters: {counters}")
    assert sum(extra.values()) <= failed_attempts * BATCH
    # An address that came back after its first record expired has a second one.
    assert any(when > _epoch(deliveries.finals[ip][0]) + TICK for ip, when in returns)
    not_refreshed = _not_refreshed(deliveries, returns)
    assert not not_refreshed, [
        (ip, deliveries.finals[ip], [_stamp(w) for i, w in returns if i == ip])
        for ip in not_refreshed[:5]
    ]
    # Those seen while whois was down were delivered pending first.
    # (The last write before whois came back may have been answered at once.)
    assert up_from and all(deliveries.pending.get(ip) for ip in ips[: up_from - per_write : 97])
    for ip, record in deliveries.samples.items():  # the answers are right
        expected = server.expected(ip)
        assert expected is not None
        cymru = record["cymru"]
        assert isinstance(cymru, dict)
        assert {key: cymru[key] for key in expected} == expected, (ip, record)
