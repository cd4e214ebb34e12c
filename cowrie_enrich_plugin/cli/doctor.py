"""``cowrie-enrich doctor``: each check says OK, WARN or FAIL, and how to fix what is wrong.

It applies exactly the checks ``ingest`` applies at start (the settings, whether the
plugin is enabled, the files), then looks at the database, the sources, the feeds and
the files a run would write (``--output``, ``--status-file``, ``--metrics-file``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import click

from ..config import PLUGIN_NAME, ConfigError, EnrichConfig, mask_url, plugin_enabled
from ..dburl import scrub, sqlite_file
from ..errors import StoreError
from .options import common_options, host_config, run_command, run_file_options, settings

__all__ = ["doctor", "run_checks"]

Level = Literal["OK", "WARN", "FAIL"]
Check = tuple[Level, str]


@click.command()
@common_options
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="A file ingest will write its records to: check that it can.",
)
@run_file_options
@run_command
def doctor(**opts: Any) -> None:
    """Check the config, the database, the sources, the feeds and the files a run writes.

    Each line says OK, WARN or FAIL with what to do. Exit code 0 when nothing failed.
    Give the --output, --status-file and --metrics-file the real runs use (a cron job's
    metrics file in node_exporter's folder, say) to check that this user can write them.

    \b
    Example:
      cowrie-enrich doctor --config /etc/cowrie-enrich.toml \\
          --metrics-file /var/lib/node_exporter/textfile/cowrie_enrich.prom
    """
    outputs = [opts.get(key) for key in ("output", "status_file", "metrics_file")]
    failures = 0
    checks = run_checks(
        lambda: host_config(opts), opts.get("config_path"), [o for o in outputs if o]
    )
    for level, line in checks:
        click.echo(f"{level:<6}{line}")
        failures += level == "FAIL"
    if failures:
        sys.exit(1)


def run_checks(
    host: Callable[[], Mapping[str, Any]],
    config_path: str | None,
    outputs: Iterable[str] = (),
) -> Iterator[Check]:
    """Run every check in order; stop after the config check when the config is unusable.

    ``outputs``: files a run will write, each checked for whether this user can.
    """
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
    for path in outputs:
        yield _check_output(path)


def _check_output(path: str) -> Check:
    """Whether this user can replace ``path``: a new file beside it, renamed over it."""
    if path == "-":
        return "OK", "output: standard output"
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return "FAIL", f"output: {path} is a folder; give a file name inside it"
    if os.path.exists(target) and not os.path.isfile(target):  # /dev/null: written in place
        if os.access(target, os.W_OK):
            return "OK", f"output: {path} can be written"
        return "FAIL", f"output: cannot write {path}: run as a user who may"
    if not os.path.isdir(folder):
        return "FAIL", f"output: cannot write {path}: {folder} does not exist; `mkdir -p {folder}`"
    from ..files import beside

    try:
        fd, temporary = beside(target)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return "FAIL", (
            f"output: cannot write {path} ({reason}): choose a folder this user can write, "
            f"or let it (`sudo chown {_user()} {folder}`, or a group it belongs to)"
        )
    os.close(fd)
    os.unlink(temporary)
    return "OK", f"output: {path} can be written"


def _nearest_folder(path: str) -> str:
    """``path`` or its nearest existing ancestor (where a missing folder would be made)."""
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _checks(config: EnrichConfig) -> Iterator[Check]:
    from ..sources.plugin import settings_of

    yield _check_database(config)
    for name in ("maxmind", "cymru"):  # their lines name their own keys
        yield _check_source(name, settings_of(config, name), prefix="")
    for name, items in config.sources:
        yield _check_source(name, dict(items))
    yield from _check_feeds(config)


def _check_feeds(config: EnrichConfig) -> Iterator[Check]:
    """Each enabled feed: installed and fresh (WARN: records lack its labels until it is)."""
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
    folder = _nearest_folder(str(feeds.path.absolute()))
    if not os.access(folder, os.W_OK | os.X_OK):
        yield (
            "WARN",
            (
                f"feeds: this user cannot write {folder}: `feeds update` (and a long-lived host's "
                f"own refresh) cannot install new versions; run them as the owner, or "
                f"`sudo chown {_user()} {folder}`"
            ),
        )
    for name in feeds.enabled:
        error = read_state(feeds, name).last_error
        if error:
            yield "WARN", f"feeds: the last download of {name} failed: {error}"


def _check_source(name: str, settings: dict[str, Any], prefix: str | None = None) -> Check:
    """What the source's own ``check`` says, after ``prefix`` (default: ``source <name>: ``)."""
    from ..sources.plugin import load

    plugin = load(name)
    head = f"source {name}: " if prefix is None else prefix
    check = getattr(plugin, "check", None)
    if check is None:  # a plugin written before check was part of the interface
        return "OK", f"{head}enabled"
    level, line = check(settings)
    return ("FAIL" if level == "FAIL" else "WARN" if level == "WARN" else "OK"), f"{head}{line}"


def _check_database(config: EnrichConfig) -> Check:
    import sqlalchemy as sa

    from ..store import open_store
    from ..store.opening import EmptyDatabase, cannot_write
    from ..store.schema import SCHEMA_VERSION, current_version

    url = mask_url(config.db)
    try:
        path = sqlite_file(config.db)
        if path is not None and path.parent.is_dir() and not path.exists():
            return "OK", f"database: {path} does not exist yet (created on the first ingest)"
        store = open_store(config.db, read_only=True)
    except EmptyDatabase:
        return "OK", f"database: {url} reachable, empty (created on the first ingest)"
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
    if path is not None and cannot_write(path):
        return "WARN", (
            f"database: {url} (schema {version}) is readable, but this user cannot write "
            f"{path} or its folder: cache stats and export work, ingest does not"
        )
    return "OK", f"database: {url} (schema {version})"
