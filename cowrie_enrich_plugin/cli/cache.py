"""``cowrie-enrich cache stats|prune|retry``: look after the store."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..record import Status
from .options import EX_TEMPFAIL, common_options, host_config, run_command, settings

__all__ = ["cache"]


@click.group()
def cache() -> None:
    """Inspect and maintain the cache: stats, prune, retry."""


@cache.command()
@common_options
@run_command
def stats(**opts: Any) -> None:
    """Counts by status and age.

    \b
    Example:
      cowrie-enrich cache stats --db postgresql+psycopg://enrich@db/enrich
    """
    from ..store import open_store
    from ..store.source_sections import count_sections

    config = settings(host_config(opts))
    with open_store(config.db, read_only=True) as store:
        result = store.stats()
        per_source = count_sections(store)
    click.echo(f"database: {config.as_dict()['db']} (schema version {result.schema_version})")
    for status in Status:
        click.echo(f"{status.value:>12}: {result.by_status.get(status.value, 0)}")
    click.echo(f"{'fresh':>12}: {result.fresh}")
    click.echo(f"{'expired':>12}: {result.expired}")
    click.echo(f"{'queued':>12}: {result.queued} ({result.leased} leased now)")
    if result.oldest_fetch is not None:
        click.echo(
            f"{'whois dates':>12}: {result.oldest_fetch:%Y-%m-%d} .. {result.newest_fetch:%Y-%m-%d}"
        )
    enabled = [name for name, _items in config.sources]
    for name in sorted({*per_source, *enabled}):
        counts = per_source.get(name, {})
        click.echo(
            f"{name + ':':>12} {counts.get('answered', 0)} answered, "
            f"{counts.get('not_found', 0)} not found, {counts.get('pending', 0)} pending, "
            f"{counts.get('fresh', 0)} fresh" + ("" if name in enabled else " (not enabled)")
        )


@cache.command()
@common_options
@run_command
def prune(**opts: Any) -> None:
    """Delete expired records (those queued for a refresh are kept); forget gone runs.

    What long-lived runs that no longer run delivered is dropped too, and what
    sensors no run of which looked for in 30 days are owed.

    \b
    Example:
      cowrie-enrich cache prune --config /etc/cowrie-enrich.toml
    """
    from ..store import open_store
    from ..store.deliveries import drop_gone_runs
    from ..store.owed import drop_unclaimed

    with open_store(settings(host_config(opts)).db, create=False, upgrade=True) as store:
        removed = store.prune()
        runs = drop_gone_runs(store)
        owed = drop_unclaimed(store)
    click.echo(
        f"{removed} expired record(s) removed; the deliveries of {runs} gone run(s);"
        f" {owed} record(s) owed to gone sensors"
    )


@cache.command()
@common_options
@run_command
def retry(**opts: Any) -> None:
    """Ask the whois server again for every pending address (exit 75 if some still are).

    \b
    Example:
      cowrie-enrich cache retry --config /etc/cowrie-enrich.toml
    """
    from ..engine.serve import open_engine
    from .asking import Asked, ask_now, end_interrupted

    with open_engine(settings(host_config(opts)), create=False) as engine:
        ips = engine.store.due_pending()
        asked = ask_now(engine, ips) if ips else Asked([], False, False)
        records = asked.records
        pending = sum(record["status"] == "pending" for record in records)
        if asked.interrupted:
            end_interrupted(asked, len(ips) - (len(records) - pending))
    click.echo(
        f"{len(ips)} queued address(es) retried; {len(records) - pending} resolved, "
        f"{pending} still pending"
    )
    if pending:
        sys.exit(EX_TEMPFAIL)
