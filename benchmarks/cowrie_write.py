"""How long Cowrie's reactor thread spends in the enrich output plugin's ``write()``.

Run with the Python of a Cowrie environment that has this package installed (the
Cowrie tests make one in ``.cache/cowrie-venv``)::

    .cache/cowrie-venv/bin/python benchmarks/cowrie_write.py --events 20000

It starts the package's loopback whois server, hanging on every batch (the worst
case: every batch in flight for its whole timeout), builds the plugin from a
``[output_enrich]`` section as Cowrie would, and times each ``write()`` of Cowrie-like
events from many source addresses, with the plugin's once-a-second poll running on
the same thread between them. It reports p50, p99 and the maximum, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--addresses", type=int, default=3_000)
    options = parser.parse_args()

    from cowrie.core.config import CowrieConfig

    from cowrie_enrich_plugin.addresses import Usable, classify
    from cowrie_enrich_plugin.cowrie_output import Output
    from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults

    rng = random.Random(5)
    ips: list[str] = []
    while len(ips) < options.addresses:
        verdict = classify(".".join(str(rng.randint(1, 223)) for _ in range(4)))
        if isinstance(verdict, Usable):
            ips.append(verdict.ip)
    with (
        BulkWhoisServer(faults=Faults(hang_rate=1.0)) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        host, port = server.address
        if not CowrieConfig.has_section("output_enrich"):
            CowrieConfig.add_section("output_enrich")
        for key, value in {
            "enabled": "true",
            "db": f"sqlite:///{tmp}/w.db",
            "cymru_host": host,
            "cymru_port": str(port),
            "flush_interval": "1",
            "timeout": "60",
            "shutdown_timeout": "2",
        }.items():
            CowrieConfig.set("output_enrich", key, value)
        plugin = Output()
        durations: list[float] = []
        next_poll = time.monotonic() + 1.0
        for n in range(options.events):
            ip = ips[n % len(ips)] if n % 3 else rng.choice(ips)
            event = {
                "eventid": ("cowrie.session.connect", "cowrie.login.failed")[n % 2],
                "src_ip": ip,
                "session": f"{n:012x}",
                "timestamp": "2026-11-29T10:00:00.000000Z",
                "message": "x",
            }
            started = time.perf_counter()
            plugin.write(event)
            durations.append((time.perf_counter() - started) * 1000)
            if time.monotonic() >= next_poll:  # the LoopingCall's turn on the reactor thread
                plugin._poll()
                next_poll = time.monotonic() + 1.0
            if n % 200 == 0:
                time.sleep(0.005)  # events arrive over time, not in one burst
        stopping = time.monotonic()
        plugin.stop()
        stop_seconds = time.monotonic() - stopping
        durations.sort()
        report = {
            "events": len(durations),
            "addresses": len(ips),
            "p50_ms": round(statistics.median(durations), 4),
            "p99_ms": round(durations[int(len(durations) * 0.99) - 1], 4),
            "max_ms": round(durations[-1], 4),
            "stop_seconds": round(stop_seconds, 2),
            "whois_connections_hanging": server.connections,
        }
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
