"""``cowrie-enrich ingest``: the reference host over files, and its summary."""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any

import click

from ..config import PLUGIN_NAME, EnrichConfig, plugin_enabled
from ..counters import RunCounters
from ..hosts.reference import IngestSummary, make_plugin_manager, run_ingest
from .options import (
    EX_INTERRUPTED,
    EX_TEMPFAIL,
    ConfigFailure,
    common_options,
    host_config,
    output_stream,
    run_command,
    run_file_options,
    settings,
)
from .progress import TerminalProgress
from .reporting import RunFiles
from .writers import printable

__all__ = ["ingest"]

logger = logging.getLogger("cowrie_enrich_plugin")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@common_options
@click.option("--batch-size", type=int, help="Addresses per whois batch, 1..500.")
@click.option("--concurrency", type=int, help="Parallel whois connections (default 2).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write this run's records as JSON lines ('-' for stdout): a batch run "
    "replaces the file at its end, --follow appends to it.",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Follow one growing cowrie.json across rotation until SIGINT or SIGTERM.",
)
@run_file_options
@run_command
def ingest(
    paths: tuple[str, ...],
    batch_size: int | None,
    concurrency: int | None,
    output: str | None,
    follow: bool,
    status_file: str | None,
    metrics_file: str | None,
    **opts: Any,
) -> None:
    """Read Cowrie logs, enrich every new attacker IP, and store the records.

    PATHS are cowrie.json files (.gz and .bz2 too), directories holding
    cowrie.json* files (read oldest first), or - for stdin. With --follow, one
    file, followed as it grows and across its daily rotation; each record is
    written to --output when it is ready, and again if it changes (an upsert by
    ip); SIGINT or SIGTERM stops it within shutdown_timeout.

    \b
    Example:
      cowrie-enrich ingest examples/logs/ --geoip-city GeoLite2-City.mmdb
    """
    extra = {"lifecycle": "long-lived"} if follow else {}
    config = host_config(opts, batch_size=batch_size, concurrency=concurrency, **extra)
    settings(config)  # refuse bad settings before any file is read
    if follow and (len(paths) != 1 or paths[0] == "-"):
        raise ConfigFailure("--follow takes one file (the live cowrie.json)")
    if follow and os.path.isdir(paths[0]):
        raise ConfigFailure(
            f"--follow takes one file, not a folder: give "
            f"{os.path.join(paths[0], 'cowrie.json')} (the live log)"
        )
    if follow and not os.path.exists(paths[0]):
        logger.warning("%s does not exist yet; waiting for it to appear", paths[0])
    if not plugin_enabled(config):
        logger.warning(
            "enrichment is off: [plugins] enabled does not list %r; the logs are only read",
            PLUGIN_NAME,
        )
    elif not follow:  # a long-lived run downloads what is due itself
        _say_feed_problems(settings(config))
    pm = make_plugin_manager(config)
    files = RunFiles("ingest", status_file, metrics_file)
    if follow:
        from ..hosts.follow import follow as follow_file

        with output_stream(output, append=True) as stream:
            summary = follow_file(
                paths[0],
                config,
                pm=pm,
                output=stream,
                progress=lambda s, stats: files.update(_facts(s), stats),
            )
        files.finish("stopped", _facts(summary), summary.plugin)
        _report(summary, err=output == "-", live=True)
        sys.exit(0)  # stopped as asked; what is pending is resolved after the next start
    terminal = TerminalProgress() if sys.stderr.isatty() and not opts.get("quiet") else None

    def progress(summary: IngestSummary, stats: RunCounters) -> None:
        if terminal is not None:
            terminal(summary, stats)
        files.update(_facts(summary), stats)

    with output_stream(output) as stream:
        try:
            summary = run_ingest(paths, config, pm=pm, output=stream, progress=progress)
        except ValueError as exc:  # a plugin refused its settings at start
            raise ConfigFailure(str(exc)) from exc
        finally:
            if terminal is not None:
                terminal.clear()
    code = _report(summary, err=output == "-")
    state = {0: "done", EX_TEMPFAIL: "pending", EX_INTERRUPTED: "interrupted"}.get(code, "failed")
    files.finish(state, _facts(summary), summary.plugin)
    sys.exit(code)


def _say_feed_problems(config: EnrichConfig) -> None:
    """Warn of feeds missing or stale: a batch run uses what is installed, as it is."""
    import time

    from ..feeds.installed import problems

    for problem in problems(config.feeds, time.time()):
        logger.warning("%s", problem)


def _why_pending(stats: RunCounters) -> str:
    """Why a batch run left addresses pending, from what its counters say happened."""
    if stats.failed_batches or stats.circuit_opened:
        return "the whois server did not answer"
    if not stats.whois_connections:
        return (
            "the run ended before they were asked (the database was busy or slow: "
            "another process may hold a lock on it)"
        )
    return "they were not answered within shutdown_timeout"


def _facts(summary: IngestSummary) -> dict[str, Any]:
    return {
        "events": summary.events,
        "lines": summary.lines,
        "bad_lines": summary.bad_lines,
        "delivered": summary.delivered,
    }


def _report(summary: IngestSummary, *, err: bool, live: bool = False) -> int:
    """Print the summary; return the exit code (``live``: a --follow run's)."""
    echo = functools.partial(click.echo, err=err)
    stats = summary.plugin
    pending = stats.pending_now if live else summary.pending
    if summary.interrupted and not live:
        click.echo(
            f"interrupted: {summary.pending} address(es) pending, run again to finish", err=True
        )
    echo(
        f"{summary.events} events from {summary.lines} lines in {summary.seconds:.1f}s; "
        f"{stats.new_ips + stats.skipped} distinct IPs: {stats.cache_hits} from cache, "
        f"{stats.resolved} resolved by whois in {stats.batches_sent} batches, "
        f"{stats.skipped} skipped (not global), {pending} pending; "
        f"{summary.delivered} records delivered"
    )
    for name, requests, left in stats.sources:
        spent = (
            "; its daily quota is spent (counted by every process on this database): "
            "its sections stay pending until the next UTC day"
            if name in stats.quota_spent
            else ""
        )
        echo(f"{name}: {requests} request(s), {left} section(s) left pending{spent}")
    if summary.problems:
        echo(f"{summary.bad_lines} bad line(s), {summary.bad_files} unreadable file(s):")
        for problem in summary.problems[:10]:
            echo(f"  {printable(str(problem))}")
        if len(summary.problems) > 10:
            echo(f"  ... and {len(summary.problems) - 10} more")
    if summary.skipped_paths:
        echo(f"{len(summary.skipped_paths)} path(s) skipped:")
        for line in summary.skipped_paths[:10]:
            echo(f"  {printable(line)}")
    if stats.unsaved:
        echo(
            f"{stats.unsaved} IP(s) could not be recorded (or their recording was not "
            "confirmed) because the database failed; they will be collected again from "
            "the logs on the next run"
        )
    if live:  # its failures were retried: what counts is what is pending now
        if pending:
            echo(f"{pending} IP(s) pending in the store: asked again after the next start")
        return 0
    if summary.interrupted:
        return EX_INTERRUPTED
    if not summary.lines and summary.skipped_paths:  # a cron job pointed at the wrong folder
        echo("nothing was read: no Cowrie log in the path(s) given")
        return 1
    if summary.bad_files or stats.unsaved or stats.errors:
        return 1
    if summary.pending:
        echo(f"{summary.pending} IP(s) still pending: {_why_pending(stats)}; run again later")
        return EX_TEMPFAIL
    # Every whois answer is in, but a network source left sections pending (its quota
    # spent, or it failed): the addresses are not done, as when whois failed.
    if stats.quota_spent or stats.source_pending:
        if not stats.quota_spent:
            echo(
                f"{stats.source_pending} section(s) of network sources still pending; "
                "run again later"
            )
        return EX_TEMPFAIL
    return 0
