"""The enrich filter's rate against the reference host's reader, on the real logs, warm cache.

    python benchmarks/enrich_filter.py --rounds 7

The 2018 logs (``../shared/data/cowrie-logs-2018``, 102,686 events) are ingested
once to warm a store; then, round after round (interleaved, so the machine's drift
stays out of the ratio), the reference host's reader (``LogReader`` parsing every
line, in a process of its own) and ``cowrie-enrich enrich`` (reading the same events
on stdin, writing them enriched to /dev/null) are timed, each as a whole process.
Once over the logs, where the filter's fixed start (its worker process, the store)
weighs most, and five times over, for the rate of a stream that goes on. The goal:
the filter at least 0.7 x the reader's rate.
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT.parent / "shared" / "data" / "cowrie-logs-2018"
sys.path.insert(0, str(ROOT))

from cowrie_enrich_plugin.hosts.logreader import LogReader  # noqa: E402
from cowrie_enrich_plugin.testing import BulkWhoisServer  # noqa: E402


def _command() -> str:
    script = Path(sys.executable).parent / "cowrie-enrich"
    return str(script) if script.exists() else shutil.which("cowrie-enrich") or "cowrie-enrich"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Single rounds of a run this short swing by +-0.1 here: the median of several decides.
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    if not LOGS.is_dir():
        print(f"{LOGS} is not here; nothing to measure")
        return 0
    files = sorted(LOGS.glob("*.gz"))
    # As an installed package is (PYTHONDONTWRITEBYTECODE would leave it to each start).
    compileall.compile_dir(ROOT / "cowrie_enrich_plugin", quiet=1)
    with BulkWhoisServer(seed=3) as server, tempfile.TemporaryDirectory() as tmp:
        host, port = server.address
        flags = ["--db", f"sqlite:///{tmp}/f.db", "--cymru", f"{host}:{port}"]
        subprocess.run(
            [_command(), "ingest", *map(str, files), *flags], check=True, capture_output=True
        )
        once = b"".join(gzip.decompress(f.read_bytes()) for f in files)
        report = {}
        for passes in (1, 5):
            plain = Path(tmp) / f"cowrie-{passes}.json"
            plain.write_bytes(once * passes)
            report[f"{passes}x"] = _rounds(plain, flags, options.rounds)
        print(json.dumps(report, indent=1))
    return 0


def filter_rate(
    events_file: Path, flags: list[str], count: int, env: dict[str, str] | None = None
) -> float:
    """Events per second of one ``cowrie-enrich enrich`` over ``events_file``, start included."""
    with events_file.open("rb") as source:
        started = time.perf_counter()
        subprocess.run(
            [_command(), "enrich", *flags],
            stdin=source,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            env=env,
        )
    return count / (time.perf_counter() - started)


def _rounds(plain: Path, flags: list[str], rounds: int) -> dict[str, object]:
    events = sum(1 for _ in plain.open("rb"))
    reader = f"from {LogReader.__module__} import LogReader; LogReader([{str(plain)!r}]).__iter__"
    reader_rates, filter_rates = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"{reader}; sum(len(c.events) for c in LogReader([{str(plain)!r}]))",
            ],
            check=True,
        )
        reader_rates.append(events / (time.perf_counter() - started))
        filter_rates.append(filter_rate(plain, flags, events))
    ratios = [f / r for f, r in zip(filter_rates, reader_rates, strict=True)]
    return {
        "events": events,
        "reader_events_per_s": [round(r) for r in reader_rates],
        "filter_events_per_s": [round(r) for r in filter_rates],
        "filter_over_reader": [round(r, 2) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 2),
        "ratio_of_medians": round(
            statistics.median(filter_rates) / statistics.median(reader_rates), 2
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
