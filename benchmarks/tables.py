"""The benchmarks' table and ratios, printed from ``run.py``'s report."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["INGEST_RATIOS", "ingest_ratios", "print_table"]

#: Each ingest ratio reported: (scenario, the scenario it is divided by).
INGEST_RATIOS = {
    "on_over_off": ("ingest-on", "ingest-off"),
    "floor_over_off": ("host-floor", "ingest-off"),
    "collect_over_read": ("collect-only", "read-only"),
}


def print_table(report: dict[str, Any]) -> None:
    """Print the report as the README's table, then the ingest ratios."""
    rows = report["rows"]
    ours = {r["workload"]: r for r in rows if r["scenario"] in ("ours-cold", "ingest-on")}
    print(
        f"profile {report['profile']}: {report['cost']['per_batch'] * 1000:.0f} ms per batch + "
        f"{report['cost']['per_ip'] * 1000:.0f} ms per IP; lower bound for 10k cold at concurrency 2: "
        f"{report['lower_bound_10k']:.1f} s"
    )
    print(
        f"{'workload':<12} {'scenario':<12} {'wall s':>8} {'x ours':>7} {'loop s':>7} {'conns':>6} {'IPs sent':>9} {'peak RSS MB':>11} {'events/s':>10}"
    )
    for r in rows:
        base = ours.get(r["workload"])
        ratio = r["wall"] / base["wall"] if base else float("nan")
        rate = r.get("events", 0) / r["wall"] if r.get("events") else 0
        loop = f"{r['loop']:7.2f}" if "loop" in r else f"{'':7}"
        print(
            f"{r['workload']:<12} {r['scenario']:<12} {r['wall']:8.2f} {ratio:7.2f} {loop} {r['connections']:6d} "
            f"{r['ips_sent']:9d} {r['peak_rss_mb']:11.0f} {rate:10,.0f}"
        )
    for work, ratio in ingest_ratios(rows).items():

        def shown(key: str, ratio: dict[str, float] = ratio) -> str:
            rounds = ratio.get(key + "_rounds")
            each = f" (rounds' median {rounds:.2f}x)" if rounds is not None else ""
            return f"{ratio[key]:.2f}x{each}" if key in ratio else "n/a"

        print(
            f"{work}: plugin on / off = {shown('on_over_off')}; with a worker that costs "
            f"nothing (host-floor / off) = {shown('floor_over_off')}; collecting alone "
            f"(collect-only / read-only) = {shown('collect_over_read')}"
        )


def ingest_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per ingest workload, each of :data:`INGEST_RATIOS`: of the medians, and of the rounds."""
    by_key = {(r["workload"], r["scenario"]): r for r in rows}
    ratios: dict[str, dict[str, float]] = {}
    for work in dict.fromkeys(r["workload"] for r in rows):
        for key, (top, base) in INGEST_RATIOS.items():
            if (work, top) not in by_key or (work, base) not in by_key:
                continue
            found = ratios.setdefault(work, {})
            found[key] = by_key[work, top]["wall"] / by_key[work, base]["wall"]
            if by_key[work, top].get("round_ratios"):
                found[key + "_rounds"] = statistics.median(by_key[work, top]["round_ratios"])
    return ratios
