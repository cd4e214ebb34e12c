"""How long checking 100,000 cached addresses takes, on SQLite and PostgreSQL, in how many statements.

    python benchmarks/store_lookup.py                       # SQLite only
    CE_TEST_PG_ADMIN_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python benchmarks/store_lookup.py                   # and PostgreSQL

Compared side by side with the naive alternative (one ``SELECT`` per address), on a
10,000-address sample of the same store, scaled to 100,000.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from cowrie_enrich_plugin.record import CymruAnswer, EnrichmentRecord, Status  # noqa: E402
from cowrie_enrich_plugin.store import open_store  # noqa: E402
from cowrie_enrich_plugin.store.schema import records_table  # noqa: E402

N = 100_000
NAIVE_SAMPLE = 10_000


def addresses(count: int) -> list[str]:
    rng = random.Random(100)
    found: dict[str, None] = {}
    while len(found) < count:
        found[
            f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        ] = None
    return list(found)


def bench(url: str, label: str) -> None:
    store = open_store(url)
    ips = addresses(N)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    answer = CymruAnswer((64500,), "EXAMPLE, US", None, "US", "arin", None, now)
    started = time.perf_counter()
    store.put_records(
        [
            EnrichmentRecord(ip, Status.ENRICHED, answer, None, now + dt.timedelta(days=30))
            for ip in ips
        ]
    )
    fill = time.perf_counter() - started
    times = []
    for _ in range(3):
        before = store.statements
        started = time.perf_counter()
        found = store.get_records(ips)
        times.append(time.perf_counter() - started)
        statements = store.statements - before
        assert len(found) == N
    bulk = statistics.median(times)
    query = sa.select(records_table).where(records_table.c.ip == sa.bindparam("ip"))
    started = time.perf_counter()
    with store.engine.connect() as conn:
        for ip in ips[:NAIVE_SAMPLE]:
            conn.execute(query, {"ip": ip}).first()
    naive = (time.perf_counter() - started) * N / NAIVE_SAMPLE
    print(
        f"{label:<10} fill {fill:6.2f}s | bulk lookup of {N:,}: {bulk:6.3f}s in {statements} statements "
        f"| one SELECT per IP: {naive:6.2f}s in {N:,} statements (x{naive / bulk:.0f})"
    )
    store.close()


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        bench(f"sqlite:///{folder}/bench.db", "SQLite")
    admin = os.environ.get("CE_TEST_PG_ADMIN_URL")
    if admin:
        import psycopg

        name = f"cowrie_enrich_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            bench(f"{base}/{name}", "PostgreSQL")
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
