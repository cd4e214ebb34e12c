"""Side-by-side benchmarks: this package against what operators would use instead.

One entry point runs every comparison in one process tree: the loopback whois
server runs in a child process (so its CPU is not billed to any client), and each
scenario runs in its own child process, so that its peak RSS is its own. Each
scenario is run ``--runs`` times; the table shows medians and ratios. The ingest
scenarios run in interleaved rounds (one run of each per round), so that a machine
whose speed drifts does not bias their ratios.

    python benchmarks/run.py                    # default cost model, 3 runs
    python benchmarks/run.py --profile cymru    # 100 ms + 10 ms per IP per batch
    python benchmarks/run.py --json results.json --runs 1 --quick
    python benchmarks/run.py --runs 3 --markdown table.md   # the README's table

Scenarios (cold = empty cache):
  naive          one connection per IP (measured on a sample, scaled to N)
  seq500         sequential bulk batches of 500, one connection each (cowrieprocessor)
  cymruwhois     the cymruwhois package's Client(host, port).lookupmany
  ours-cold      this package through the host contract (cowrie-enrich ingest), empty cache
  ours-warm      the same run again: every address from the cache
  bare-json      a bare ``json.loads`` loop over the log lines (stdlib), the ceiling
  bare-orjson    the same with orjson, when installed
  ingest-off     the reference host with the plugin disabled
  ingest-on      the reference host with the plugin, the network answering instantly
  host-floor     the same with a stand-in worker (benchmarks/floor_worker.py) that answers
                 every address at once from memory: what the host's thread pays alone
  read-only      the reference host's log reader alone (no hooks): the base of the next
  collect-only   the same reader, with the plugin's collecting (``Collector.ingest``)
                 on every chunk and no worker behind it: the host-side cost by itself
  whois-alone    the addresses of a workload asked of the server alone, batches of 500
                 on two connections: the network's share of a cold run (the real logs'
                 cold ingest against the cost model is measured against it)
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables import INGEST_RATIOS, ingest_ratios, print_table, write_markdown
from workloads import ROOT, Server, bulk, whois_alone, workload

PROFILES = {"default": (0.05, 0.002), "cymru": (0.1, 0.01)}
NAIVE_SAMPLE = 200


def scenario(name: str, hostport: str, work: str, db: str) -> dict[str, Any]:
    loaded = workload(work)
    assert loaded is not None
    files, ips = loaded
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if name == "naive":
        sample = ips[:NAIVE_SAMPLE]
        for ip in sample:
            bulk(hostport, [ip])
        extra["scaled_from"] = len(sample)
        extra["scale"] = len(ips) / len(sample)
    elif name == "seq500":
        for start in range(0, len(ips), 500):
            bulk(hostport, ips[start : start + 500])
    elif name == "whois-alone":
        sys.path.insert(0, str(ROOT))
        from cowrie_enrich_plugin.addresses import Usable, classify

        verdicts = [classify(ip) for ip in ips]  # asked as the plugin asks: canonical, once
        asked = list(dict.fromkeys(v.ip for v in verdicts if isinstance(v, Usable)))
        whois_alone(hostport, asked)
    elif name == "cymruwhois":
        import cymruwhois

        host, port = hostport.rsplit(":", 1)
        client = cymruwhois.Client(host, int(port), memcache_host=None)
        extra["answers"] = sum(1 for _ in client.lookupmany(ips))
        client.disconnect()
    elif name in ("bare-json", "bare-orjson"):
        loads = json.loads
        if name == "bare-orjson":
            import orjson

            loads = orjson.loads
        count = 0
        for file in files:
            with gzip.open(file, "rb") as handle:
                for line in handle:
                    loads(line)
                    count += 1
        extra["events"] = count
    elif name in ("read-only", "collect-only"):
        extra.update(_read_and_collect(files, collect=name == "collect-only"))
    else:
        sys.path.insert(0, str(ROOT))
        from cowrie_enrich_plugin.hosts.reference import make_plugin_manager, run_ingest

        host, port = hostport.rsplit(":", 1)
        enabled = name != "ingest-off"
        config = {
            "plugins": {
                "enabled": ["enrich"] if enabled else [],
                "enrich": {"db": db, "cymru_host": host, "cymru_port": int(port), "concurrency": 2},
            }
        }
        pm = make_plugin_manager(config)
        if name == "host-floor":  # the plugin, with the stand-in worker as its engine
            from cowrie_enrich_plugin.plugin import EnrichPlugin
            from cowrie_enrich_plugin.transport import ProcessTransport

            floor = (str(ROOT / "benchmarks" / "floor_worker.py"),)
            pm.unregister(name="enrich")
            pm.register(
                EnrichPlugin(lambda settings: ProcessTransport(settings, command=floor)),
                name="enrich",
            )
        summary = run_ingest([str(f) for f in files], config, pm=pm)
        extra["events"] = summary.events
        extra["loop"] = summary.read_seconds
        extra["delivered"] = summary.delivered
        extra["pending"] = summary.pending
        extra["wall"] = time.perf_counter() - started
        if enabled:  # the worker process exits on its own once it said "done"
            deadline = time.monotonic() + 10
            while (
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss == 0
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            extra["worker_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return extra
    extra["wall"] = time.perf_counter() - started
    return extra


def _read_and_collect(files: list[Path], collect: bool) -> dict[str, Any]:
    """The reference host's reader, with (or without) the plugin's collecting per chunk.

    The collector's transport keeps what it is handed and sends nothing: what is
    measured is the host's side alone, as if the worker cost nothing.
    """
    sys.path.insert(0, str(ROOT))
    from cowrie_enrich_plugin.channel import NewAddresses, SkippedAddresses, ToEngine
    from cowrie_enrich_plugin.collect import Collector
    from cowrie_enrich_plugin.config import EnrichConfig
    from cowrie_enrich_plugin.hosts.logreader import LogReader
    from cowrie_enrich_plugin.transport import Transport

    class Keep(Transport):
        def __init__(self) -> None:
            super().__init__()
            self.addresses = 0

        def send(self, message: ToEngine) -> None:
            if isinstance(message, NewAddresses | SkippedAddresses):
                self.addresses += len(message.ips)

    keep = Keep()
    pipeline = Collector(EnrichConfig(), lambda records: None, keep)
    events = 0
    for chunk in LogReader([str(f) for f in files]):
        if collect:
            pipeline.ingest(chunk.events)
        events += len(chunk.events)
    return {"events": events, "addresses": keep.addresses}


def run_child(name: str, server: Server, work: str, db: str) -> dict[str, Any]:
    server.command("reset")
    server_cpu = server.stats()["cpu_seconds"]
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--scenario",
            name,
            "--server",
            server.hostport,
            "--workload",
            work,
            "--db",
            db,
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    assert proc.stdout is not None
    output = proc.stdout.read()
    if status != 0:
        raise RuntimeError(f"scenario {name} failed: {output!r}")
    result: dict[str, Any] = json.loads(output)
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    stats = server.stats()
    result["connections"] = stats["connections"]
    result["server_cpu"] = stats["cpu_seconds"] - server_cpu
    result["cpu"] = usage.ru_utime + usage.ru_stime
    result["ips_sent"] = stats["ips_asked"]
    if "scale" in result:
        result["wall"] *= result["scale"]
        result["connections"] = round(result["connections"] * result["scale"])
        result["ips_sent"] = round(result["ips_sent"] * result["scale"])
    return result


def median_runs(
    name: str, server: Server, work: str, runs: int, fresh_db: bool, db: str | None = None
) -> dict[str, Any]:
    results = []
    for _ in range(runs):
        target = db
        if fresh_db or target is None:
            target = f"sqlite:///{tempfile.mkdtemp(prefix='cebench-')}/bench.db"
        results.append(run_child(name, server, work, target))
    return _median_row(results)


def _median_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from several runs: median times, the highest peak memory."""
    runs = len(results)
    out = dict(results[len(results) // 2])
    out["wall"] = statistics.median(r["wall"] for r in results)
    if "loop" in results[0]:
        out["loop"] = statistics.median(r["loop"] for r in results)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    out["worker_rss_mb"] = max(r.get("worker_rss_mb", 0) for r in results)
    out["runs"] = runs
    return out


def ingest_rounds(server: Server, work: str, ips: list[str], runs: int) -> list[dict[str, Any]]:
    """The ingest scenarios of one workload, interleaved: ``runs`` rounds of each in turn.

    On a machine whose speed drifts, running every scenario once per round (rather
    than all runs of one, then all of the next) keeps the drift out of the ratios;
    each round's on/off ratio is kept, and their median reported. The server is
    asked for every address once first, so that rendering its answers (which the
    real server does on its own machine) is not billed to the first run.
    """
    names = [
        "bare-json",
        "bare-orjson",
        "ingest-off",
        "ingest-on",
        "host-floor",
        "read-only",
        "collect-only",
    ]
    try:
        import orjson  # noqa: F401
    except ImportError:
        names.remove("bare-orjson")
    for start in range(0, len(ips), 500):
        bulk(server.hostport, ips[start : start + 500])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(runs):
        for name in names:
            target = f"sqlite:///{tempfile.mkdtemp(prefix='cebench-')}/bench.db"
            results[name].append(run_child(name, server, work, target))
    rows = []
    for name in names:
        row = _median_row(results[name])
        for top, base in INGEST_RATIOS.values():
            if name == top:
                row["round_ratios"] = [
                    a["wall"] / b["wall"] for a, b in zip(results[top], results[base], strict=True)
                ]
        rows.append({"workload": work, "scenario": name, **row})
    return rows


# -- the report --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="skip the 1M-event corpus")
    parser.add_argument(
        "--markdown", type=Path, help="write the README's table here, dated, with the commit"
    )
    parser.add_argument("--only", choices=["whois", "ingest"], help="run one half of the report")
    parser.add_argument("--scenario")
    parser.add_argument("--server")
    parser.add_argument("--workload")
    parser.add_argument("--db")
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, args.server, args.workload, args.db)))
        return 0

    per_batch, per_ip = PROFILES[args.profile]
    # An installed wheel carries its bytecode; a checkout run with PYTHONDONTWRITEBYTECODE
    # (as in CI) would compile the package's sources again in every process it starts.
    compileall.compile_dir(ROOT / "cowrie_enrich_plugin", quiet=1)
    table: list[dict[str, Any]] = []
    whois = args.only != "ingest"
    ingest = ("real", "corpus1m") if args.only != "whois" else ()
    if args.quick:
        ingest = ingest[:1]

    def addresses(*names: str) -> list[str]:
        return [ip for name in names if (found := workload(name)) is not None for ip in found[1]]

    slow = Server(per_batch, per_ip, prime=addresses(*(("ips10k", "real") if whois else ())))
    # one write per answer: the least server CPU
    instant = Server(0.0, 0.0, streaming=False, prime=addresses(*ingest))
    try:
        # 1. cold 10,000 IPs against the cost model
        n = 10_000
        bound = math.ceil(n / 500) * (per_batch + 500 * per_ip) / 2
        rows: dict[str, dict[str, Any]] = {}
        if whois:
            for name in ("naive", "seq500", "cymruwhois"):
                rows[name] = median_runs(
                    name, slow, "ips10k", 1 if name == "naive" else args.runs, True
                )
            db = f"sqlite:///{tempfile.mkdtemp(prefix='cebench-')}/warm.db"
            cold = [
                run_child(
                    "ours-cold",
                    slow,
                    "ips10k",
                    f"sqlite:///{tempfile.mkdtemp(prefix='cebench-')}/c.db",
                )
                for _ in range(args.runs - 1)
            ]
            cold.append(run_child("ours-cold", slow, "ips10k", db))
            rows["ours-cold"] = dict(
                cold[-1], wall=statistics.median(r["wall"] for r in cold), runs=len(cold)
            )
            rows["ours-warm"] = median_runs("ours-warm", slow, "ips10k", args.runs, False, db)
            for name, row in rows.items():
                table.append({"workload": "10k new IPs", "scenario": name, **row})
            # 2. the real logs' cold ingest against the cost model, and its bound: the
            # same addresses asked of the server alone (one first, as a warm-up)
            if workload("real") is not None:
                run_child("whois-alone", slow, "real", "")
                real: dict[str, list[dict[str, Any]]] = {"ours-cold": [], "whois-alone": []}
                for _ in range(args.runs):  # interleaved
                    target = f"sqlite:///{tempfile.mkdtemp(prefix='cebench-')}/r.db"
                    real["ours-cold"].append(run_child("ingest-on", slow, "real", target))
                    real["whois-alone"].append(run_child("whois-alone", slow, "real", ""))
                for name, results in real.items():
                    row = _median_row(results)
                    table.append({"workload": "real logs, cost model", "scenario": name, **row})
        # 3. ingest rates: real logs and the 1M corpus, network answering instantly
        for work in ingest:
            loaded = workload(work)
            if loaded is None:
                continue
            table.extend(ingest_rounds(instant, work, loaded[1], args.runs))
    finally:
        slow.close()
        instant.close()

    report = {
        "profile": args.profile,
        "runs": args.runs,
        "cost": {"per_batch": per_batch, "per_ip": per_ip},
        "lower_bound_10k": bound,
        "rows": table,
        "ingest_ratios": ingest_ratios(table),
    }
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.markdown:
        write_markdown(report, args.markdown, ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
