"""Run the loopback bulk whois server on its own: ``python -m cowrie_enrich_plugin.testing``.

It prints ``listening HOST:PORT`` and then takes commands on standard input, one per
line: ``stats`` prints a JSON object (connections, requests, addresses asked, distinct
addresses), ``reset`` forgets them, ``quit`` (or end of input) stops the server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from .whois_server import BulkWhoisServer, Faults


def serve_commands(
    server: BulkWhoisServer, extra: Callable[[], dict[str, float]] | None = None
) -> None:
    """Say where the server listens, then answer ``stats``, ``reset`` and ``quit`` on stdin."""
    print(f"listening {server.hostport}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            asked = server.asked()
            stats: dict[str, float] = {
                "connections": server.connections,
                "requests": len(server.requests),
                "ips_asked": sum(asked.values()),
                "distinct": len(asked),
                **(extra() if extra is not None else {}),
            }
            print(json.dumps(stats), flush=True)
        elif command == "reset":
            server.reset_log()
            print("ok", flush=True)
        elif command == "quit":
            return


def main(argv: list[str] | None = None) -> int:
    """Parse options, serve until ``quit`` or end of input."""
    parser = argparse.ArgumentParser(
        prog="python -m cowrie_enrich_plugin.testing", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-per-batch", type=float, default=0.0)
    parser.add_argument("--latency-per-ip", type=float, default=0.0)
    parser.add_argument("--reset-rate", type=float, default=0.0)
    parser.add_argument("--truncate-rate", type=float, default=0.0)
    parser.add_argument("--garbage-rate", type=float, default=0.0)
    parser.add_argument("--hang-rate", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--plain-names", action="store_true", help="no '|' in synthetic AS names")
    options = parser.parse_args(argv)
    faults = Faults(
        latency_per_batch=options.latency_per_batch,
        latency_per_ip=options.latency_per_ip,
        reset_rate=options.reset_rate,
        truncate_rate=options.truncate_rate,
        garbage_rate=options.garbage_rate,
        hang_rate=options.hang_rate,
        error_rate=options.error_rate,
    )
    with BulkWhoisServer(
        options.host,
        options.port,
        faults=faults,
        plain_names=options.plain_names,
    ) as server:
        serve_commands(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
