"""``cowrie-enrich feeds update|status``: download the offline feeds, and say what is installed."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from .options import (
    EX_TEMPFAIL,
    ConfigFailure,
    Failure,
    common_options,
    host_config,
    run_command,
    settings,
)

__all__ = ["feeds"]


@click.group()
def feeds() -> None:
    """The offline feeds (cloud, CDN, hosting, Tor exits, DROP): update, status."""


@feeds.command()
@click.option(
    "--feed",
    "names",
    multiple=True,
    metavar="NAME",
    help="Update only this feed (repeatable); default: every enabled feed.",
)
@common_options
@run_command
def update(names: tuple[str, ...], **opts: Any) -> None:
    """Download what changed, check it, install it; keep the last good version on failure.

    Exit 0 when every feed asked for is installed and current, 75 when a download
    failed (the feed is named; its last good version stays in use), 2 on a
    configuration error.

    \b
    Example (cron, hourly):
      cowrie-enrich feeds update --config /etc/cowrie-enrich.toml
    """
    from ..feeds.update import update_feeds

    config = settings(host_config(opts)).feeds
    unknown = [name for name in names if name not in config.enabled]
    if unknown:
        raise ConfigFailure(
            f"--feed {', '.join(unknown)}: not an enabled feed; enabled: "
            + (", ".join(config.enabled) or "none")
        )
    if not config.enabled:
        click.echo("no feed is enabled ([plugins.enrich.feeds] enabled = [])")
        return
    try:
        outcomes = update_feeds(config, names or None)
    except OSError as exc:
        raise Failure(
            f"cannot write the feeds folder {config.dir}: {exc.strerror or exc}; set "
            "[plugins.enrich.feeds] dir (or COWRIE_ENRICH_FEEDS_DIR) to a folder you can write"
        ) from None
    for outcome in outcomes:
        line = f"{outcome.feed}: {outcome.message}"
        click.echo(line, err=outcome.result == "failed")
    failed = [o.feed for o in outcomes if o.result == "failed"]
    if failed:
        click.echo(
            f"cowrie-enrich: {len(failed)} feed(s) failed to download ({', '.join(failed)}); "
            "their last good versions stay in use: run again later",
            err=True,
        )
        sys.exit(EX_TEMPFAIL)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@feeds.command()
@common_options
@run_command
def status(**opts: Any) -> None:
    """Each enabled feed's version, age, entries and source.

    A feed older than twice its refresh is marked STALE; one never installed, MISSING.
    """
    from ..dburl import mask_url
    from ..feeds.installed import read_state

    config = settings(host_config(opts)).feeds
    click.echo(f"feeds folder: {config.dir}")
    now = time.time()
    for name in config.enabled:
        feed = config.feed(name)
        state = read_state(config, name)
        # what the installed version came from (a page and the file it linked), else
        # what the config names
        used = state.urls if state.installed and state.urls else config.urls(name)
        sources = " ".join(mask_url(url) for url in used.values())
        if not state.installed:
            shown = "MISSING  (not installed: run cowrie-enrich feeds update)"
        else:
            age = now - (state.checked_at or 0)
            mark = "STALE " if age > 2 * config.refresh(name) else "ok    "
            shown = (
                f"{mark}  version {state.version}, {state.entries:,} entries, "
                f"fetched {state.fetched_at}, checked {_age(age)} ago"
            )
        click.echo(f"{name:<15} {feed.kind:<10} {shown}  <{sources}>")
        if state.last_error:
            click.echo(f"{'':<15} last attempt failed: {state.last_error}")
