"""``consume``'s rate, one replica and three, as a ratio of the enrich filter's, warm cache.

    python benchmarks/consume.py [--events 50000] [--rounds 3] [--db URL]

Needs RabbitMQ (``CE_TEST_AMQP_URL``, default ``amqp://guest:guest@127.0.0.1:5672/%2F``).
The 2018 logs (``../shared/data/cowrie-logs-2018``) are ingested once to warm a store;
then, in interleaved rounds, the same events go through:

- ``filter``: ``cowrie-enrich enrich`` reading them on stdin, writing to /dev/null;
- ``consume-1`` and ``consume-3``: the events published first, as Cowrie's
  ``[output_rmq]`` publishes them, into the queue; then one or three replicas start,
  and the round ends when the output queue holds every event.

Each is timed as a whole (process start included), and reported as events per second
and as a ratio of the filter's rate in the same round.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT.parent / "shared" / "data" / "cowrie-logs-2018"
sys.path.insert(0, str(ROOT))

from benchmarks.enrich_filter import _command, filter_rate  # noqa: E402
from cowrie_enrich_plugin.testing import BulkWhoisServer  # noqa: E402

URL = os.environ.get("CE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", help="a shared database URL (default: a SQLite file)")
    options = parser.parse_args()
    import pika

    if not LOGS.is_dir():
        print(f"{LOGS} is not here; nothing to measure")
        return 0
    files = sorted(LOGS.glob("*.gz"))
    lines = b"".join(gzip.decompress(f.read_bytes()) for f in files).splitlines()
    lines = [line for line in lines if line.strip()][: options.events]
    with BulkWhoisServer(seed=3) as server, tempfile.TemporaryDirectory() as tmp:
        host, port = server.address
        db = options.db or f"sqlite:///{tmp}/c.db"
        flags = ["--db", db, "--cymru", f"{host}:{port}"]
        env = {**os.environ, "COWRIE_ENRICH_FEEDS_ENABLED": "", "COWRIE_ENRICH_AMQP_URL": URL}
        subprocess.run(
            [_command(), "ingest", *map(str, files), *flags],
            check=True,
            capture_output=True,
            env=env,
        )
        stdin = Path(tmp) / "events.json"
        stdin.write_bytes(b"\n".join(lines) + b"\n")
        rates: dict[str, list[float]] = {"filter": [], "consume-1": [], "consume-3": []}
        for _ in range(options.rounds):
            rates["filter"].append(filter_rate(stdin, flags, len(lines), env))
            for replicas in (1, 3):
                rate = _consume(pika, lines, flags, env, replicas)
                rates[f"consume-{replicas}"].append(rate)
    report = {
        name: {
            "events_per_second": round(statistics.median(values)),
            "ratio_to_filter": round(
                statistics.median(v / f for v, f in zip(values, rates["filter"], strict=True)), 2
            ),
        }
        for name, values in rates.items()
    }
    report["filter"]["ratio_to_filter"] = 1.0
    print(json.dumps({"events": len(lines), "rounds": options.rounds, **report}, indent=1))
    return 0


def _consume(pika: Any, lines: list[bytes], flags: list[str], env: dict[str, str], n: int) -> float:
    tag = uuid.uuid4().hex[:8]
    exchange, queue, out_exchange, out_queue = (f"{p}-{tag}" for p in ("x", "q", "ox", "oq"))
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(queue, exchange, routing_key="#")
    channel.exchange_declare(out_exchange, exchange_type="topic", durable=True)
    channel.queue_declare(out_queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(out_queue, out_exchange, routing_key="#")
    channel.confirm_delivery()
    props = pika.BasicProperties(content_type="application/json")
    for line in lines:  # the routing key Cowrie uses; the body as it is
        channel.basic_publish(exchange, json.loads(line).get("eventid", "x"), line, props)
    names = ["--exchange", exchange, "--queue", queue, "--output-exchange", out_exchange]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [_command(), "consume", *flags, *names],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(n)
    ]
    try:
        while channel.queue_declare(out_queue, passive=True).method.message_count < len(lines):
            time.sleep(0.05)
            if all(proc.poll() is not None for proc in procs):
                raise SystemExit("every consume replica ended early")
        took = time.perf_counter() - start
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        for name in (queue, out_queue):
            channel.queue_delete(name)
        for name in (exchange, out_exchange):
            channel.exchange_delete(name)
        connection.close()
    return len(lines) / took


if __name__ == "__main__":
    raise SystemExit(main())
