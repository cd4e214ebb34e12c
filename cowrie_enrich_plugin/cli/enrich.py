"""``cowrie-enrich enrich``: the streaming filter for log shippers (Logstash, Vector, ...)."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..counters import RunCounters
from ..hosts.reference import make_plugin_manager
from ..hosts.stream import StreamSummary, enrich_stream
from .options import (
    EX_INTERRUPTED,
    common_options,
    filter_options,
    host_config,
    run_command,
    run_file_options,
    settings,
)
from .reporting import RunFiles

__all__ = ["enrich"]


@click.command()
@common_options
@filter_options
@run_file_options
@run_command
def enrich(
    fmt: str, hold: float, status_file: str | None, metrics_file: str | None, **opts: Any
) -> None:
    """Read Cowrie JSON lines on stdin; write the same events, enriched, on stdout.

    Every line comes out once, in order. Lines that are not events, and events
    without a usable src_ip, pass through untouched; the counts go to stderr. It
    runs until the end of its input, SIGINT or SIGTERM, and is a long-lived host
    (see --help of ingest --follow for the lifecycle).

    \b
    Example:
      tail -F /var/log/cowrie/cowrie.json | cowrie-enrich enrich --format ecs
    """
    config = host_config(opts, lifecycle="long-lived", redeliver=True)
    checked = settings(config)
    pm = make_plugin_manager(config)
    files = RunFiles("enrich", status_file, metrics_file)
    summary = enrich_stream(
        sys.stdin.buffer,
        sys.stdout.buffer,
        config,
        pm=pm,
        fmt=fmt,
        hold=hold,
        working_set=checked.working_set,
        # the counters are added up for each chunk read: only when there is a file to fill
        progress=(
            (lambda s, stats: files.update(_facts(s), stats))
            if status_file is not None or metrics_file is not None
            else None
        ),
    )
    files.finish(
        "interrupted" if summary.interrupted else "done",
        _facts(summary),
        summary.plugin or RunCounters(),
    )
    click.echo(
        f"{summary.lines} lines: {summary.enriched} events enriched, {summary.pending} "
        f"went out pending, {summary.no_address} events without a usable src_ip and "
        f"{summary.passed_through - summary.no_address} lines that are not events "
        "passed through",
        err=True,
    )
    if summary.interrupted:
        sys.exit(EX_INTERRUPTED)


def _facts(summary: StreamSummary) -> dict[str, Any]:
    return {
        "lines": summary.lines,
        "enriched": summary.enriched,
        "went_out_pending": summary.pending,
        "passed_through": summary.passed_through,
    }
