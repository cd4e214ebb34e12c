"""The CI's benchmark guard: a cold ingest against its own lower bounds, as ratios of one run.

A minute at most. Against the benchmarks' whois server answering at once, in
interleaved rounds:

  cold     ``cowrie-enrich ingest`` of N new addresses into an empty store
  warm     the same run again (every address from the store)
  whois    the same addresses asked of the server alone, batches of 500 on two
           connections: the network's share of the cold run

Each ingest runs as a whole process tree (the host and its worker) whose CPU time is
measured, so that a run that *waits* instead of working shows as wall time well above
its CPU time, whatever the machine's speed today. It fails (exit 1) when the median
round's cold wall passes ``--max-wall-per-cpu`` times its own CPU (a host that stalls
its worker, as in issue 22, measured 6x), or when the cold run's CPU per address
passes ``--max-cold-vs-warm`` times the warm run's CPU per event.

    python benchmarks/guard.py                 # 3 rounds of 20,000 addresses
    python benchmarks/guard.py --json out.json
    python benchmarks/guard.py --feeds 150000  # and each round again with feeds installed

With ``--feeds N``, N synthetic prefixes (``benchmarks/feeds.py``'s shape) are served
as two feeds, installed with ``cowrie-enrich feeds update``, and every round runs the
cold and warm ingests a second time with them enabled: ``feeds_cpu_us_per_cold_address``
against ``cpu_us_per_cold_address`` is what the feeds add to a cold address.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import ROOT, Server, global_ips, whois_alone, write_events  # noqa: E402

_PR_SET_CHILD_SUBREAPER = 36


def measure(command: list[str]) -> dict[str, float]:
    """Run ``command`` as a process tree; its wall time and the CPU of every process in it.

    This process becomes the tree's subreaper, so that a grandchild left running by its
    parent (the worker, reaped by a daemon thread) is reaped here and its CPU counted.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    status = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    while True:  # the orphans of the tree
        try:
            os.wait()
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if status.returncode != 0:
        raise SystemExit(f"{command} exited {status.returncode}: {status.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu}


def _measured(command: list[str]) -> dict[str, float]:
    """:func:`measure` in a child of its own (a subreaper per measurement)."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure", json.dumps(command)],
        capture_output=True,
        check=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--addresses", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-wall-per-cpu", type=float, default=2.0)
    parser.add_argument("--max-cold-vs-warm", type=float, default=8.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--feeds", type=int, default=0, help="synthetic prefixes (0: no feeds)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.measure:
        print(json.dumps(measure(json.loads(options.measure))))
        return 0
    tool = str(Path(sys.executable).with_name("cowrie-enrich"))
    with tempfile.TemporaryDirectory() as tmp:
        ips = global_ips(options.addresses, seed=22)
        events = Path(tmp) / "cowrie.json.gz"
        write_events(events, ips, 4 * len(ips), None, 22)
        server = Server(0.0, 0.0, prime=ips)
        rounds: list[dict[str, float]] = []
        no_feeds = Path(tmp) / "no-feeds.toml"
        no_feeds.write_text("[plugins.enrich.feeds]\nenabled = []\n")
        with_feeds = _install_feeds(tool, Path(tmp), options.feeds) if options.feeds else None
        try:
            for number in range(options.rounds):
                db = f"sqlite:///{tmp}/round{number}.db"
                ingest = [tool, "ingest", str(events), "--db", db, "--cymru", server.hostport]
                ingest += ["--concurrency", "2"]
                cold = _measured([*ingest, "--config", str(no_feeds)])
                warm = _measured([*ingest, "--config", str(no_feeds)])
                alone = whois_alone(server.hostport, ips)
                rounds.append(
                    {
                        "cold_wall": cold["wall"],
                        "cold_cpu": cold["cpu"],
                        "warm_wall": warm["wall"],
                        "warm_cpu": warm["cpu"],
                        "whois_wall": alone,
                    }
                )
                if with_feeds is not None:
                    ingest[4] = f"sqlite:///{tmp}/feeds{number}.db"
                    cold = _measured([*ingest, "--config", str(with_feeds)])
                    warm = _measured([*ingest, "--config", str(with_feeds)])
                    rounds[-1].update(feeds_cold_cpu=cold["cpu"], feeds_warm_cpu=warm["cpu"])
                print(json.dumps(rounds[-1]), file=sys.stderr)
        finally:
            server.close()
    report = _report(rounds, options.addresses)
    print(json.dumps(report, indent=2))
    if options.json:
        options.json.write_text(json.dumps({"rounds": rounds, "report": report}, indent=2))
    failures = []
    if report["cold_wall_per_cpu"] > options.max_wall_per_cpu:
        failures.append(f"cold wall {report['cold_wall_per_cpu']:.2f}x its CPU")
    if report["cold_cpu_per_address_vs_warm_per_event"] > options.max_cold_vs_warm:
        failures.append(
            f"cold CPU per address {report['cold_cpu_per_address_vs_warm_per_event']:.1f}x "
            "the warm CPU per event"
        )
    if failures:
        print("benchmark guard FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("benchmark guard passed", file=sys.stderr)
    return 0


def _report(rounds: list[dict[str, float]], addresses: int) -> dict[str, Any]:
    """Medians of each round's own ratios (the machine's speed drifts between rounds)."""

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    events = 4 * addresses
    return {
        "addresses": addresses,
        "cold_wall_per_cpu": statistics.median(r["cold_wall"] / r["cold_cpu"] for r in rounds),
        "cold_wall_vs_whois_alone": statistics.median(
            r["cold_wall"] / r["whois_wall"] for r in rounds
        ),
        "cold_cpu_per_address_vs_warm_per_event": statistics.median(
            ((r["cold_cpu"] - r["warm_cpu"]) / addresses) / (r["warm_cpu"] / events) for r in rounds
        ),
        "cold_wall_s": median("cold_wall"),
        "cold_cpu_s": median("cold_cpu"),
        "warm_wall_s": median("warm_wall"),
        "warm_cpu_s": median("warm_cpu"),
        "whois_alone_s": median("whois_wall"),
        "cold_cpu_us_per_address": median("cold_cpu") / addresses * 1e6,
        "cpu_us_per_cold_address": statistics.median(
            (r["cold_cpu"] - r["warm_cpu"]) / addresses * 1e6 for r in rounds
        ),
        "root": str(ROOT),
        **(
            {
                "feeds_cpu_us_per_cold_address": statistics.median(
                    (r["feeds_cold_cpu"] - r["feeds_warm_cpu"]) / addresses * 1e6 for r in rounds
                ),
                "feeds_add_us_per_cold_address": statistics.median(
                    ((r["feeds_cold_cpu"] - r["feeds_warm_cpu"]) - (r["cold_cpu"] - r["warm_cpu"]))
                    / addresses
                    * 1e6
                    for r in rounds
                ),
                # the whole cold run's CPU: what cold - warm leaves out (the warm run's
                # relabelling, the index opened at start) included
                "feeds_add_cold_cpu_us_per_address": statistics.median(
                    (r["feeds_cold_cpu"] - r["cold_cpu"]) / addresses * 1e6 for r in rounds
                ),
            }
            if rounds and "feeds_cold_cpu" in rounds[0]
            else {}
        ),
    }


def _install_feeds(tool: str, folder: Path, prefixes: int) -> Path:
    """Serve ``prefixes`` synthetic prefixes as two feeds and install them; the config file."""
    import random

    from feeds import synthetic

    from cowrie_enrich_plugin.testing import FeedServer

    per_feed = synthetic(prefixes, random.Random(22))
    every = [p for found in per_feed.values() for p in found]
    half = len(every) // 2
    files = {
        "/netset": ("\n".join(every[:half]) + "\n").encode(),
        "/v4": ("\n".join(p for p in every[half:] if ":" not in p) + "\n").encode(),
        "/v6": ("\n".join(p for p in every[half:] if ":" in p) + "\n").encode(),
    }
    config = folder / "feeds.toml"
    with FeedServer(files) as feed_server:
        config.write_text(
            "[plugins.enrich.feeds]\n"
            f'enabled = ["firehol_level1", "cloudflare"]\ndir = "{folder / "feeds"}"\n'
            f'[plugins.enrich.feeds.firehol_level1]\nurl = "{feed_server.url("/netset")}"\n'
            f'[plugins.enrich.feeds.cloudflare]\nurl_v4 = "{feed_server.url("/v4")}"\n'
            f'url_v6 = "{feed_server.url("/v6")}"\n'
        )
        done = subprocess.run([tool, "feeds", "update", "--config", str(config)], check=False)
        if done.returncode != 0:
            raise SystemExit("the benchmark's feeds did not install")
    return config


if __name__ == "__main__":
    sys.exit(main())
