"""``cowrie-enrich doctor``: each check says OK, WARN or FAIL, and how to fix what is wrong.

It applies exactly the checks ``ingest`` applies at start (the settings, whether the
plugin is enabled, the files), then looks at the database and the whois server.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import click

from ..config import PLUGIN_NAME, ConfigError, EnrichConfig, mask_url, plugin_enabled
from ..dburl import scrub, sqlite_file
from ..errors import GeoDatabaseError, StoreError
from .options import common_options, host_config, run_command, settings

__all__ = ["doctor", "run_checks"]

Level = Literal["OK", "WARN", "FAIL"]
Check = tuple[Level, str]


@click.command()
@common_options
@run_command
def doctor(**opts: Any) -> None:
    """Check the config, the database, the GeoIP files and the whois server.

    Each line says OK, WARN or FAIL with what to do. Exit code 0 when nothing failed.

    \b
    Example:
      cowrie-enrich doctor --config /etc/cowrie-enrich.toml
    """
    failures = 0
    for level, line in run_checks(lambda: host_config(opts), opts.get("config_path")):
        click.echo(f"{level:<6}{line}")
        failures += level == "FAIL"
    if failures:
        sys.exit(1)


def run_checks(host: Callable[[], Mapping[str, Any]], config_path: str | None) -> Iterator[Check]:
    """Run every check in order; stop after the config check when the config is unusable."""
    try:
        config = host()
        enabled = plugin_enabled(config)
        checked = settings(config)
    except ConfigError as exc:
        yield "FAIL", f"config: {exc}"
        return
    yield "OK", f"config: {config_path or 'defaults (no --config file)'}"
    if not enabled:
        yield (
            "FAIL",
            (
                f"config: [plugins] enabled does not list {PLUGIN_NAME!r}: "
                "ingest would read the logs and enrich nothing"
            ),
        )
    yield from _checks(checked)


def _checks(config: EnrichConfig) -> Iterator[Check]:
    yield _check_database(config)
    for option, path, kind in (
        ("geoip_city", config.geoip_city, "city"),
        ("geoip_asn", config.geoip_asn, "asn"),
    ):
        yield _check_geoip(option, path, kind)
    yield _check_whois(config)
    for name, items in config.sources:
        yield _check_source(name, dict(items))
    yield from _check_feeds(config)


def _check_feeds(config: EnrichConfig) -> Iterator[Check]:
    """Each enabled feed: installed and fresh (WARN: records lack its labels until it is)."""
    import time

    from ..feeds.installed import problems, read_state

    feeds = config.feeds
    if not feeds.enabled:
        yield "OK", "feeds: none enabled"
        return
    found = problems(feeds, time.time())
    for problem in found:
        yield "WARN", f"feeds: {problem}"
    if not found:
        states = {name: read_state(feeds, name) for name in feeds.enabled}
        entries = sum(state.entries for state in states.values())
        yield (
            "OK",
            f"feeds: {len(states)} installed and current in {feeds.dir} ({entries:,} entries)",
        )
    for name in feeds.enabled:
        error = read_state(feeds, name).last_error
        if error:
            yield "WARN", f"feeds: the last download of {name} failed: {error}"


def _check_source(name: str, settings: dict[str, Any]) -> Check:
    """What the source's own ``check`` says (every source is checked if it can say)."""
    from ..sources.plugin import load

    plugin = load(name)
    check = getattr(plugin, "check", None)
    if check is None:
        return "OK", f"source {name}: enabled"
    level, line = check(settings)
    return ("FAIL" if level == "FAIL" else "WARN" if level == "WARN" else "OK"), (
        f"source {name}: {line}"
    )


def _check_database(config: EnrichConfig) -> Check:
    import sqlalchemy as sa

    from ..store import open_store
    from ..store.schema import SCHEMA_VERSION, current_version

    url = mask_url(config.db)
    try:
        path = sqlite_file(config.db)
        if path is not None and path.parent.is_dir() and not path.exists():
            return "OK", f"database: {path} does not exist yet (created on the first ingest)"
        store = open_store(config.db, create=False)
    except (StoreError, ConfigError) as exc:
        return "FAIL", f"database: {exc}; check the URL and that the server runs"
    try:
        with store.engine.connect() as conn:
            version = current_version(conn)
            if conn.dialect.name == "sqlite":  # a file damaged past its first pages
                verdict = conn.exec_driver_sql("PRAGMA quick_check").scalar()
                if verdict != "ok":
                    return "FAIL", (
                        f"database: {url} is damaged ({str(verdict).splitlines()[0][:200]}); "
                        "restore it from a backup, or move it away and let the next run "
                        "start afresh"
                    )
    except sa.exc.SQLAlchemyError as exc:
        said = str(getattr(exc, "orig", exc)).splitlines()[0]
        return "FAIL", f"database: {url}: {scrub(said, config.db)}"
    finally:
        store.close()
    if version == 0:
        return "OK", f"database: {url} reachable, empty (created on the first ingest)"
    if version < SCHEMA_VERSION:
        return (
            "OK",
            f"database: {url} at schema {version}; upgraded to {SCHEMA_VERSION} on the next run",
        )
    if version > SCHEMA_VERSION:
        return (
            "FAIL",
            f"database: {url} is at schema {version}, newer than this version; "
            "upgrade cowrie-enrich",
        )
    return "OK", f"database: {url} (schema {version})"


def _check_geoip(option: str, path: str | None, kind: str) -> Check:
    from ..sources.maxmind.lookup import GeoDatabase

    if not path:
        return "OK", f"{option}: not configured (records carry no MaxMind data for it)"
    if not os.path.exists(path):  # ingest goes on without it, as it says
        return "WARN", (
            f"{option}: {path} does not exist; records carry no MaxMind data for it "
            "(download it from MaxMind or fix the path)"
        )
    try:
        database = GeoDatabase(path, "city" if kind == "city" else "asn")
    except GeoDatabaseError as exc:
        return "FAIL", f"{option}: {exc}"
    age = (time.time() - database.built_at.timestamp()) / 86400
    database.close()
    line = f"{option}: {path} ({database.database_type}, built {database.built_at:%Y-%m-%d})"
    if age > 30:
        return "WARN", f"{line}; older than 30 days: update it (geoipupdate)"
    return "OK", line


def _check_whois(config: EnrichConfig) -> Check:
    where = f"{config.cymru_host}:{config.cymru_port}"
    started = time.monotonic()
    try:
        with socket.create_connection(
            (config.cymru_host, config.cymru_port), timeout=min(10.0, config.timeout)
        ):
            pass
    except OSError as exc:
        return "FAIL", (
            f"whois: cannot reach {where} ({exc}); outbound TCP port {config.cymru_port} must be "
            "open. Without it, addresses stay pending and are retried on the next run"
        )
    return "OK", f"whois: {where} reachable ({(time.monotonic() - started) * 1000:.0f} ms)"
