"""The benchmarks' table and ratios, printed from ``run.py``'s report."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["INGEST_RATIOS", "ingest_ratios", "markdown_table", "print_table", "write_markdown"]

#: Each ingest ratio reported: (scenario, the scenario it is divided by).
INGEST_RATIOS = {
    "on_over_off": ("ingest-on", "ingest-off"),
    "floor_over_off": ("host-floor", "ingest-off"),
    "collect_over_read": ("collect-only", "read-only"),
}

#: How the README names each workload and scenario.
_WORKLOADS = {"ips10k": "10k new IPs", "real": "real logs", "corpus1m": "1M events / 50k IPs"}
_SCENARIOS = {
    "naive": "one connection per IP (200 measured, scaled)",
    "seq500": "sequential batches of 500 (cowrieprocessor)",
    "cymruwhois": "`cymruwhois` `lookupmany`",
    "ours-cold": "**cowrie-enrich, cold cache**",
    "ours-warm": "**cowrie-enrich, warm cache**",
    "whois-alone": "the same addresses asked of the server alone (2 connections)",
    "bare-json": "bare `json.loads` loop",
    "bare-orjson": "bare `orjson.loads` loop",
    "ingest-off": "reference host, plugin off",
    "ingest-on": "reference host, plugin on (instant server)",
    "host-floor": "plugin on, stand-in worker that costs nothing (`host-floor`)",
    "read-only": "the host's reader alone (`read-only`)",
    "collect-only": "reader + the plugin's collecting, no worker (`collect-only`)",
}


def print_table(report: dict[str, Any]) -> None:
    """Print the report as the README's table, then the ingest ratios."""
    rows = report["rows"]
    ours = _ours(rows)
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
    bound = real_cold_over_whois(rows)
    if bound is not None:
        print(f"real logs, cost model: cold ingest / whois alone = {bound:.2f}x")
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


def _ours(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each workload's row of this package's run: the base of its ``x ours`` column."""
    return {r["workload"]: r for r in rows if r["scenario"] in ("ours-cold", "ingest-on")}


def real_cold_over_whois(rows: list[dict[str, Any]]) -> float | None:
    """The real logs' cold ingest against the cost model, over the whois-alone bound."""
    by_key = {(r["workload"], r["scenario"]): r for r in rows}
    cold = by_key.get(("real logs, cost model", "ours-cold"))
    alone = by_key.get(("real logs, cost model", "whois-alone"))
    return cold["wall"] / alone["wall"] if cold and alone else None


def markdown_table(report: dict[str, Any], date: str, commit: str) -> str:
    """The README's performance table from a report, with the run's date and commit."""
    lines = [
        f"Measured on {date} at commit {commit} (`benchmarks/run.py --runs "
        f"{report['runs']} --markdown`), profile {report['profile']}:",
        "",
        "| workload | scenario | wall s | × ours | loop s | whois conns | IPs sent "  # noqa: RUF001
        "| peak RSS MB | events/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = report["rows"]
    ours = _ours(rows)
    for r in rows:
        base = ours.get(r["workload"])
        ratio = f"{r['wall'] / base['wall']:.2f}" if base else ""
        loop = f"{r['loop']:.2f}" if "loop" in r else ""
        rate = f"{r['events'] / r['wall']:,.0f}" if r.get("events") else ""
        work = _WORKLOADS.get(r["workload"], r["workload"])
        if r["workload"] == "real" and r.get("events"):
            work = f"real logs ({r['events']:,} events)"
        connections = r["connections"] or ""
        sent = r["ips_sent"] or ""
        lines.append(
            f"| {work} | {_SCENARIOS.get(r['scenario'], r['scenario'])} | {r['wall']:.2f} "
            f"| {ratio} | {loop} | {connections} | {sent} | {r['peak_rss_mb']:.0f} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], path: Path, root: Path) -> None:
    """Write :func:`markdown_table` to ``path``, dated today, with ``root``'s commit."""
    commit = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    path.write_text(markdown_table(report, time.strftime("%Y-%m-%d"), commit or "unknown"))
