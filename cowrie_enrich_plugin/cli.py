"""The ``cowrie-enrich`` command: the reference host and the operator's tools.

Exit codes: 0 all done; 75 (EX_TEMPFAIL) finished, but some addresses are still
pending because the network source failed (run again later); 2 usage or
configuration error; 1 anything else (an unreadable input file, a database error).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from .config import ConfigError, EnrichConfig, load_host_config, resolve_config
from .config import cli_flags as _cli_flags
from .config import plugin_section as _plugin_section
from .errors import GeoDatabaseError, StoreError, WorkerError, configure_logging
from .record import Status

if TYPE_CHECKING:
    from .enricher import Enricher
    from .store import Store

# The store, whois and MaxMind modules (SQLAlchemy, geoip2) are imported by the commands
# that use them: ``ingest`` runs them in its worker process, never in this one.


def _open_enricher(settings: EnrichConfig) -> Enricher:
    from .enricher import Enricher

    return Enricher.open(settings)


def _open_store(settings: EnrichConfig) -> Store:
    from .store import open_store

    return open_store(settings.db)


__all__ = ["main"]

EX_TEMPFAIL = 75
_F = TypeVar("_F", bound=Callable[..., Any])
logger = logging.getLogger("cowrie_enrich_plugin")


class Failure(click.ClickException):
    """An expected failure: printed as advice, no traceback; exit code 1."""

    exit_code = 1


class ConfigFailure(Failure):
    """A usage or configuration error: exit code 2."""

    exit_code = 2


def _parse_cymru(value: str | None) -> tuple[str | None, int | None]:
    if value is None:
        return None, None
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, None
    if not port.isdigit():
        raise click.BadParameter(f"{value!r} is not HOST:PORT", param_hint="--cymru")
    return host.strip("[]"), int(port)


def common_options(func: _F) -> _F:
    """The options every command that touches the store or a source takes."""
    options = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False),
            envvar="COWRIE_ENRICH_CONFIG",
            help="Host TOML config with a [plugins.enrich] section (env COWRIE_ENRICH_CONFIG).",
        ),
        click.option("--db", help="SQLAlchemy database URL (default sqlite:///cowrie-enrich.db)."),
        click.option(
            "--cymru", metavar="HOST:PORT", help="Bulk whois server (default whois.cymru.com:43)."
        ),
        click.option(
            "--geoip-city",
            type=click.Path(dir_okay=False),
            help="GeoIP2/GeoLite2 City or Country .mmdb.",
        ),
        click.option(
            "--geoip-asn", type=click.Path(dir_okay=False), help="GeoIP2/GeoLite2 ASN .mmdb."
        ),
        click.option("-v", "--verbose", count=True, help="More logging (-vv for debug)."),
        click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _setup_logging(verbose: int, quiet: bool) -> None:
    configure_logging(
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )


def _host_config(opts: Mapping[str, Any], **extra_flags: Any) -> dict[str, Any]:
    """The host config from --config, with the command-line flags in ``cli.enrich``."""
    config = load_host_config(opts.get("config_path"))
    host, port = _parse_cymru(opts.get("cymru"))
    flags = {
        "db": opts.get("db"),
        "cymru_host": host,
        "cymru_port": port,
        "geoip_city": opts.get("geoip_city"),
        "geoip_asn": opts.get("geoip_asn"),
        **extra_flags,
    }
    config.setdefault("cli", {})["enrich"] = {k: v for k, v in flags.items() if v is not None}
    return config


def _settings(config: Mapping[str, Any]) -> EnrichConfig:
    return resolve_config(_plugin_section(config), None, _cli_flags(config))


@contextmanager
def _expected_failures() -> Iterator[None]:
    """Turn the conditions an operator can fix into advice with the right exit code."""
    try:
        yield
    except (ConfigError, GeoDatabaseError) as exc:
        raise ConfigFailure(str(exc)) from exc
    except StoreError as exc:
        raise Failure(f"{exc}\n  check the db URL, that the server runs, and permissions") from exc
    except WorkerError as exc:
        raise Failure(str(exc)) from exc


def _run_command(func: _F) -> _F:
    """Apply logging options and the expected-failure handling to a command body."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _setup_logging(kwargs.get("verbose", 0), kwargs.get("quiet", False))
        with _expected_failures():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cowrie-enrich-plugin")
def main() -> None:
    """Enrich Cowrie honeypot attacker IPs with Team Cymru bulk whois and MaxMind GeoIP2."""


# -- ingest --------------------------------------------------------------------------


@main.command()
@click.argument("paths", nargs=-1, required=True)
@common_options
@click.option("--batch-size", type=int, help="Addresses per whois batch, 1..500.")
@click.option("--concurrency", type=int, help="Parallel whois connections (default 2).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write this run's records as JSON lines ('-' for stdout).",
)
@_run_command
def ingest(
    paths: tuple[str, ...],
    batch_size: int | None,
    concurrency: int | None,
    output: str | None,
    **opts: Any,
) -> None:
    r"""Read Cowrie logs, enrich every new attacker IP, and store the records.

    PATHS are cowrie.json files (.gz and .bz2 too), directories holding
    cowrie.json* files (read oldest first), or - for stdin.

    \b
    Example:
      cowrie-enrich ingest /var/log/cowrie/ --geoip-city GeoLite2-City.mmdb
    """
    from .host import make_plugin_manager, run_ingest

    config = _host_config(opts, batch_size=batch_size, concurrency=concurrency)
    _settings(config)  # refuse bad settings before any file is read
    pm = make_plugin_manager(config)
    progress = _TerminalProgress() if sys.stderr.isatty() and not opts.get("quiet") else None
    with _output_stream(output) as stream:
        try:
            summary = run_ingest(paths, config, pm=pm, output=stream, progress=progress)
        except ValueError as exc:  # a plugin refused its settings at start
            raise ConfigFailure(str(exc)) from exc
        finally:
            if progress is not None:
                progress.clear()
    echo = functools.partial(click.echo, err=output == "-")
    stats = summary.plugin_stats
    echo(
        f"{summary.events} events from {summary.lines} lines in {summary.seconds:.1f}s; "
        f"{stats.get('new_ips', 0)} new IPs, {stats.get('cache_hits', 0)} from cache, "
        f"{stats.get('resolved', 0)} resolved by whois in {stats.get('batches_sent', 0)} batches, "
        f"{stats.get('skipped', 0)} skipped (not global), {summary.pending} pending; "
        f"{summary.delivered} records delivered"
    )
    if summary.problems:
        echo(f"{summary.bad_lines} bad line(s), {summary.bad_files} unreadable file(s):")
        for problem in summary.problems[:10]:
            echo(f"  {_safe(str(problem))}")
        if len(summary.problems) > 10:
            echo(f"  ... and {len(summary.problems) - 10} more")
    unsaved = int(stats.get("unsaved", 0))
    if unsaved:
        echo(
            f"{unsaved} IP(s) could not be recorded because the database failed; "
            "they will be collected again from the logs on the next run"
        )
    if summary.bad_files or unsaved or stats.get("errors", 0):
        sys.exit(1)
    if summary.pending:
        echo(
            f"{summary.pending} IP(s) still pending: the whois server did not answer; "
            "run again later"
        )
        sys.exit(EX_TEMPFAIL)


@contextmanager
def _output_stream(output: str | None) -> Iterator[IO[str] | None]:
    if output is None:
        yield None
    elif output == "-":
        yield sys.stdout
    else:
        try:
            handle = open(output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise Failure(f"cannot write {output}: {exc.strerror}") from exc
        with handle:
            yield handle


class _TerminalProgress:
    """One status line on a terminal, rewritten in place."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.width = 0

    def __call__(self, summary: Any, stats: Mapping[str, int]) -> None:
        rate = summary.events / max(1e-9, time.monotonic() - self.started)
        line = (
            f"{summary.events} events ({rate:,.0f}/s), {stats.get('new_ips', 0)} new IPs, "
            f"{stats.get('cache_hits', 0)} cached, {stats.get('batches_sent', 0)} batches sent, "
            f"{stats.get('in_flight_batches', 0)} in flight, {summary.delivered} delivered"
        )
        self.width = max(self.width, len(line))
        click.echo("\r" + line.ljust(self.width), nl=False, err=True)

    def clear(self) -> None:
        if self.width:
            click.echo("\r" + " " * self.width + "\r", nl=False, err=True)


def _safe(text: str) -> str:
    """Neutralise control characters (terminal escapes) for display."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- lookup --------------------------------------------------------------------------


@main.command()
@click.argument("ips", nargs=-1, required=True)
@common_options
@_run_command
def lookup(ips: tuple[str, ...], **opts: Any) -> None:
    r"""Enrich the given addresses now (cache first) and print their records as JSON lines.

    \b
    Example:
      cowrie-enrich lookup 81.2.69.142 --geoip-city GeoLite2-City.mmdb
    """
    from .addresses import InvalidAddress, classify

    for value in ips:
        verdict = classify(value)
        if isinstance(verdict, InvalidAddress):
            raise ConfigFailure(f"{_safe(value)}: {verdict.reason}")
    settings = _settings(_host_config(opts))
    enricher = _open_enricher(settings)
    try:
        records = enricher.enrich(ips)
    finally:
        enricher.close()
    for record in records:
        click.echo(json.dumps(record.to_dict()))
    pending = sum(record.status is Status.PENDING for record in records)
    if pending:
        click.echo(f"{pending} address(es) pending: the whois server did not answer", err=True)
        sys.exit(EX_TEMPFAIL)


# -- export --------------------------------------------------------------------------


@main.command()
@common_options
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="File to write ('-' for stdout).",
)
@_run_command
def export(fmt: str, output: str, **opts: Any) -> None:
    r"""Write every stored record, as JSON lines or CSV.

    \b
    Example:
      cowrie-enrich export --format csv --output ips.csv
    """
    settings = _settings(_host_config(opts))
    store = _open_store(settings)
    try:
        with _output_stream(output) as stream:
            assert stream is not None
            from .export import write_csv, write_jsonl

            count = (write_csv if fmt == "csv" else write_jsonl)(store.iter_records(), stream)
    finally:
        store.close()
    if output != "-":
        click.echo(f"{count} records written to {output}")


# -- cache ---------------------------------------------------------------------------


@main.group()
def cache() -> None:
    """Inspect and maintain the cache: stats, prune, retry."""


@cache.command()
@common_options
@_run_command
def stats(**opts: Any) -> None:
    r"""Counts by status and age.

    \b
    Example:
      cowrie-enrich cache stats --db postgresql+psycopg://enrich@db/enrich
    """
    settings = _settings(_host_config(opts))
    store = _open_store(settings)
    try:
        result = store.stats()
    finally:
        store.close()
    click.echo(f"database: {settings.as_dict()['db']} (schema version {result.schema_version})")
    for status in Status:
        click.echo(f"{status.value:>12}: {result.by_status.get(status.value, 0)}")
    click.echo(f"{'fresh':>12}: {result.fresh}")
    click.echo(f"{'expired':>12}: {result.expired}")
    click.echo(f"{'queued':>12}: {result.queued} ({result.leased} leased now)")
    if result.oldest_fetch is not None:
        click.echo(
            f"{'whois dates':>12}: {result.oldest_fetch:%Y-%m-%d} .. {result.newest_fetch:%Y-%m-%d}"
        )


@cache.command()
@common_options
@_run_command
def prune(**opts: Any) -> None:
    r"""Delete expired records (those queued for a refresh are kept).

    \b
    Example:
      cowrie-enrich cache prune --config /etc/cowrie-enrich.toml
    """
    settings = _settings(_host_config(opts))
    store = _open_store(settings)
    try:
        removed = store.prune()
    finally:
        store.close()
    click.echo(f"{removed} expired record(s) removed")


@cache.command()
@common_options
@_run_command
def retry(**opts: Any) -> None:
    r"""Ask the whois server again for every pending address (exit 75 if some still are).

    \b
    Example:
      cowrie-enrich cache retry --config /etc/cowrie-enrich.toml
    """
    settings = _settings(_host_config(opts))
    enricher = _open_enricher(settings)
    try:
        ips = enricher.store.due_pending()
        records = enricher.enrich(ips) if ips else []
    finally:
        enricher.close()
    pending = sum(record.status is Status.PENDING for record in records)
    click.echo(
        f"{len(ips)} queued address(es) retried; {len(records) - pending} resolved, "
        f"{pending} still pending"
    )
    if pending:
        sys.exit(EX_TEMPFAIL)


# -- doctor --------------------------------------------------------------------------


@main.command()
@common_options
@_run_command
def doctor(**opts: Any) -> None:
    r"""Check the config, the database, the GeoIP files and the whois server.

    Each line says OK or what to do. Exit code 0 when everything is usable.

    \b
    Example:
      cowrie-enrich doctor --config /etc/cowrie-enrich.toml
    """
    from .doctor import run_checks

    failures = 0
    for ok, line in run_checks(lambda: _settings(_host_config(opts)), opts.get("config_path")):
        click.echo(("OK    " if ok else "FAIL  ") + line)
        failures += not ok
    if failures:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
