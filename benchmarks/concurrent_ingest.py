"""Many ``cowrie-enrich ingest`` processes at once on one PostgreSQL database, round after round.

Each round gives the processes the same logs and an emptied database, starts them
together, and counts what an operator of many sensors would see go wrong: a
deadlock reported by the database (shown as a ``database hiccup``), an address
asked of the whois server more than once, a run that did not complete::

    CE_TEST_PG_ADMIN_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python benchmarks/concurrent_ingest.py --rounds 20 --processes 2
    python benchmarks/concurrent_ingest.py --rounds 1 --processes 8

It uses the package's loopback whois server with a little latency, so that batches
of the processes overlap. ``tests/e2e/test_processes.py`` runs a few rounds of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sqlalchemy as sa  # noqa: E402
from workloads import global_ips  # noqa: E402

from cowrie_enrich_plugin.store.rows import row_record  # noqa: E402
from cowrie_enrich_plugin.store.schema import metadata, records_table  # noqa: E402
from cowrie_enrich_plugin.testing import (  # noqa: E402
    BulkWhoisServer,
    Faults,
    SimulatedClock,
    expected_cymru,
    synthetic_rows,
)


@dataclass
class Round:
    """What one round of concurrent runs did."""

    processes: int
    seconds: float
    deadlocks: int
    hiccups: int
    asked_twice: int
    failed_runs: int
    incomplete: int
    wrong: int


def _cowrie_enrich() -> str:
    script = Path(sys.executable).parent / "cowrie-enrich"
    return str(script) if script.exists() else shutil.which("cowrie-enrich") or "cowrie-enrich"


def _empty(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    metadata.drop_all(engine)  # every table of the store, the schema version's too
    engine.dispose()


def run_round(
    db_url: str,
    server: BulkWhoisServer,
    folder: Path,
    ips: list[str],
    processes: int,
    offsets: Sequence[float] = (),
    sensor_url: str = "",
) -> Round:
    """Start ``processes`` ingests of the same log together; wait; count what went wrong.

    ``offsets``: each process's clock, that many seconds off the real one (a simulated
    clock that runs at the real pace), as sensors whose clocks disagree.
    ``sensor_url``: the URL the processes are given, when not ``db_url`` (a pooler's).
    """
    _empty(db_url)
    server.reset_log()
    log = folder / "cowrie.json"
    log.write_text("".join(json.dumps({"src_ip": ip}) + "\n" for ip in ips))
    host, port = server.address
    config = folder / "host.toml"
    config.write_text(
        "[plugins.enrich]\n"
        f'db = "{sensor_url or db_url}"\ncymru_host = "{host}"\ncymru_port = {port}\n'
        "flush_interval = 0.2\ntimeout = 10\nretries = 3\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRIE_ENRICH_")}
    with _skewed(folder, offsets) as clocks:
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [_cowrie_enrich(), "ingest", str(log), "--config", str(config)],
                env={**env, **clocks[n].environment()} if n < len(clocks) else env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(processes)
        ]
        outputs = [proc.communicate(timeout=600) for proc in procs]
    seconds = time.monotonic() - started
    errors = "".join(err for _out, err in outputs)
    asked = server.asked()
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        records = [row_record(row) for row in conn.execute(sa.select(records_table)).mappings()]
    engine.dispose()
    done = [record for record in records if record.status != "pending"]
    wrong = sum(
        1
        for record in done
        if record.cymru is None
        or record.cymru.asn != expected_cymru(synthetic_rows(record.ip))["asn"]
    )
    return Round(
        processes=processes,
        seconds=round(seconds, 2),
        deadlocks=errors.count("deadlock detected"),
        hiccups=errors.count("database hiccup"),
        asked_twice=sum(1 for count in asked.values() if count > 1),
        failed_runs=sum(1 for proc in procs if proc.returncode != 0),
        incomplete=len(ips) - len(done),
        wrong=wrong,
    )


@contextlib.contextmanager
def _skewed(folder: Path, offsets: Sequence[float]) -> Iterator[list[SimulatedClock]]:
    """A clock for each offset, kept at the real time plus that offset while inside."""
    clocks = [
        SimulatedClock(folder / f"clock-{n}", time.time() + offset)
        for n, offset in enumerate(offsets)
    ]
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.005):
            for clock, offset in zip(clocks, offsets, strict=True):
                clock.set(time.time() + offset)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield clocks
    finally:
        done.set()
        ticker.join()
        for clock in clocks:
            clock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--ips", type=int, default=3000)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: a new database)")
    options = parser.parse_args()
    admin = os.environ.get("CE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = admin.replace("postgresql://", "postgresql+psycopg://", 1)
    db_url = options.db or _create_database(admin)
    ips = global_ips(options.ips, seed=7)
    rounds: list[Round] = []
    with (
        BulkWhoisServer(faults=Faults(latency_per_batch=0.15, latency_per_ip=0.0005)) as server,
        tempfile.TemporaryDirectory() as folder,
    ):
        for number in range(options.rounds):
            result = run_round(db_url, server, Path(folder), ips, options.processes)
            rounds.append(result)
            print(f"round {number + 1}: {result}", flush=True)
    total = {
        key: sum(getattr(r, key) for r in rounds)
        for key in ("deadlocks", "hiccups", "asked_twice", "failed_runs", "incomplete", "wrong")
    }
    print(f"{options.rounds} rounds of {options.processes} processes: {total}")
    return 0 if not any(total.values()) else 1


def _create_database(admin: str) -> str:
    name = f"cowrie_enrich_bench_{os.getpid()}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin.rsplit("/", 1)[0] + "/" + name


if __name__ == "__main__":
    sys.exit(main())
