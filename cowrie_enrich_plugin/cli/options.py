"""What every command shares: the common options, the host config they make, exit codes.

Exit codes: 0 all done; 75 (EX_TEMPFAIL) finished, but some addresses are still
pending (run again later); 130 stopped by SIGINT or SIGTERM, the rest pending;
2 usage or configuration error; 1 anything else.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, Final, TypeVar

import click

from ..config import (
    ConfigError,
    EnrichConfig,
    cli_flags,
    load_host_config,
    plugin_section,
    resolve_config,
)
from ..errors import GeoDatabaseError, StoreError, WorkerError, configure_logging
from ..files import beside

__all__ = [
    "EX_INTERRUPTED",
    "EX_TEMPFAIL",
    "ConfigFailure",
    "Failure",
    "common_options",
    "host_config",
    "output_stream",
    "run_command",
    "run_file_options",
    "settings",
]

EX_TEMPFAIL: Final = 75
EX_INTERRUPTED: Final = 130
_F = TypeVar("_F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """An expected failure: printed as advice, no traceback; exit code 1."""

    exit_code = 1


class ConfigFailure(Failure):
    """A usage or configuration error: exit code 2."""

    exit_code = 2


def parse_cymru(value: str | None) -> tuple[str | None, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address."""
    if value is None:
        return None, None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise click.BadParameter(f"{value!r} is not [ADDRESS]:PORT", param_hint="--cymru")
        port = rest[1:] if rest else None
    elif value.count(":") > 1:  # a bare IPv6 address, no port
        host, port = value, None
    else:
        host, sep, port_text = value.partition(":")
        port = port_text if sep else None
    if port is not None and not port.isdigit():
        raise click.BadParameter(f"{value!r} is not HOST:PORT", param_hint="--cymru")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise click.BadParameter(
                f"{value!r}: {host!r} is not an IPv6 address", param_hint="--cymru"
            ) from exc
    return host, int(port) if port is not None else None


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


def filter_options(func: _F) -> _F:
    """``--format`` and ``--hold``: how the enrich filter and ``consume`` add records."""
    options = [
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["native", "ecs"]),
            default="native",
            show_default=True,
            help='native adds "enrich": <record>; ecs adds source.* objects and "cowrie_enrich".',
        ),
        click.option(
            "--hold",
            type=click.FloatRange(0, 3600),
            default=5.0,
            show_default=True,
            help="Seconds an event of a new address waits for its record before going out pending.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_file_options(func: _F) -> _F:
    """``--status-file`` and ``--metrics-file`` (see :mod:`.reporting`)."""
    options = [
        click.option(
            "--status-file",
            type=click.Path(dir_okay=False),
            help="JSON status, rewritten atomically about once a second while the run goes on.",
        ),
        click.option(
            "--metrics-file",
            type=click.Path(dir_okay=False),
            help="Prometheus textfile-collector metrics, written atomically at the end "
            "(and every 15 s in long-lived runs).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def host_config(opts: Mapping[str, Any], **extra_flags: Any) -> dict[str, Any]:
    """The host config from --config, with the command-line flags in ``cli.enrich``."""
    config = load_host_config(opts.get("config_path"))
    host, port = parse_cymru(opts.get("cymru"))
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


def settings(config: Mapping[str, Any]) -> EnrichConfig:
    """The plugin's checked settings from a host config (as ``cowrie_ingest_start`` reads them)."""
    return resolve_config(plugin_section(config), None, cli_flags(config))


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
    except Exception as exc:
        sqlalchemy = sys.modules.get("sqlalchemy")  # loaded only where a store was opened
        if sqlalchemy is None or not isinstance(exc, sqlalchemy.exc.DatabaseError):
            raise
        from ..store.retry import first_line

        raise Failure(
            f"the database failed: {first_line(exc)}\n  a SQLite file may be damaged: "
            "check it with sqlite3 FILE 'PRAGMA integrity_check'"
        ) from exc
    except KeyboardInterrupt:
        click.echo("interrupted; run again to finish", err=True)
        sys.exit(EX_INTERRUPTED)


def run_command(func: _F) -> _F:
    """Apply logging options and the expected-failure handling to a command body."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose, quiet = kwargs.get("verbose", 0), kwargs.get("quiet", False)
        configure_logging(
            logging.ERROR
            if quiet
            else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
        )
        with _expected_failures():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def output_stream(output: str | None, *, append: bool = False) -> Iterator[IO[str] | None]:
    """The ``--output`` file (``-``: stdout; ``None``: no output).

    A regular file is written beside its name and renamed over it at the end (with
    the old file's mode and owner), so that a run that fails before it delivers
    anything (a database that does not open) leaves the last run's file as it was, and
    a symbolic link at that name is replaced, never written through. Anything else (a
    device such as ``/dev/null``, a pipe, ``/dev/fd/N``) and a file in a folder the
    user may not write are written in place. With ``append`` (a long-lived run, whose
    deliveries are upserts by ip) records are added to the file, so that a restarted
    follower keeps what it wrote before; a symbolic link is refused there.
    """
    if output is None:
        yield None
    elif output == "-":
        yield sys.stdout
    elif append:
        try:
            fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            why = (
                "a symbolic link; name the file itself"
                if exc.errno == errno.ELOOP
                else exc.strerror
            )
            raise Failure(f"cannot write {output}: {why}") from exc
        with open(fd, "a", encoding="utf-8") as handle:
            yield handle
    elif not _replaceable(output):
        try:
            in_place = open(output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise Failure(f"cannot write {output}: {exc.strerror}") from exc
        with in_place:
            yield in_place
    else:
        with _replacing(output) as replacing:
            yield replacing


def _replaceable(output: str) -> bool:
    """Whether ``output`` is a regular file (or nothing yet) in a folder the user may write."""
    try:
        if not stat.S_ISREG(os.stat(output).st_mode):
            return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return os.access(os.path.dirname(os.path.abspath(output)) or ".", os.W_OK)


@contextmanager
def _replacing(output: str) -> Iterator[IO[str]]:
    """A temporary file beside ``output``, renamed over it when the block ends.

    It is kept when the block fails having written nothing; when the rename fails,
    the temporary file stays and is named.
    """
    try:
        fd, temporary = beside(output)
    except OSError as exc:
        raise Failure(f"cannot write {output}: {exc.strerror}") from exc
    keep = False
    try:
        with open(fd, "w", encoding="utf-8") as handle:
            try:
                yield handle
                keep = True
            finally:
                keep = keep or handle.tell() > 0  # what a failed run delivered
    finally:
        if not keep:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        else:
            try:
                os.replace(temporary, output)
            except OSError as exc:
                raise Failure(
                    f"cannot write {output} ({exc.strerror}); this run's records are in {temporary}"
                ) from exc
