"""``cowrie-enrich lookup`` and ``export``: records of some addresses now, or of the store."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..addresses import InvalidAddress, NonGlobal, Usable, classify
from ..ecs import to_ecs
from .options import (
    EX_TEMPFAIL,
    ConfigFailure,
    common_options,
    host_config,
    output_stream,
    run_command,
    settings,
)
from .writers import printable

__all__ = ["export", "lookup"]


@click.command()
@click.argument("ips", nargs=-1, required=True)
@common_options
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "ecs"]), default="jsonl", show_default=True
)
@run_command
def lookup(ips: tuple[str, ...], fmt: str, **opts: Any) -> None:
    """Enrich the given addresses now (cache first) and print their records as JSON lines.

    \b
    Example:
      cowrie-enrich lookup 81.2.69.142 --geoip-city GeoLite2-City.mmdb
    """
    order: list[str] = []
    usable: list[str] = []
    skipped: list[str] = []
    for value in ips:
        verdict = classify(value)
        if isinstance(verdict, InvalidAddress):
            raise ConfigFailure(f"{printable(value)}: {verdict.reason}")
        order.append(verdict.ip)
        if isinstance(verdict, Usable):
            usable.append(verdict.ip)
        elif isinstance(verdict, NonGlobal):
            skipped.append(verdict.ip)
    from ..engine.serve import open_engine
    from .asking import ask_now, end_interrupted

    with open_engine(settings(host_config(opts))) as engine:
        asked = ask_now(engine, usable, skipped)
        found = {record["ip"]: record for record in asked.records}
        records = [found[ip] for ip in dict.fromkeys(order) if ip in found]
        for record in records:
            click.echo(json.dumps(to_ecs(record) if fmt == "ecs" else record))
        pending = sum(record["status"] == "pending" for record in records)
        if asked.interrupted:
            end_interrupted(asked, pending + len(set(order) - set(found)))
    if pending:
        click.echo(f"{pending} address(es) pending: the whois server did not answer", err=True)
        sys.exit(EX_TEMPFAIL)


@click.command()
@common_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "ecs"]),
    default="jsonl",
    show_default=True,
    help="JSON lines, CSV, or JSON lines in Elastic Common Schema names.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="File to write ('-' for stdout).",
)
@run_command
def export(fmt: str, output: str, **opts: Any) -> None:
    """Write every stored record, as JSON lines or CSV.

    \b
    Example:
      cowrie-enrich export --format csv --output ips.csv
    """
    from ..store import open_store
    from ..store.source_sections import count_sections, with_sections
    from .writers import write_csv, write_jsonl

    config = settings(host_config(opts))
    with open_store(config.db, read_only=True) as store, output_stream(output) as stream:
        assert stream is not None
        sources = sorted({*count_sections(store), *(name for name, _ in config.sources)})
        records = with_sections(store, store.iter_records(), sources)
        if fmt == "csv":
            count = write_csv(records, stream, sources)
        else:
            count = write_jsonl(records, stream, ecs=fmt == "ecs")
    if output != "-":
        click.echo(f"{count} records written to {output}")
