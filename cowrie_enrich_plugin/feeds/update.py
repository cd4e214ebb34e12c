"""Downloading feeds: conditional requests, checks before use, atomic installs.

Each URL of a feed is asked with the ETag and Last-Modified of the installed copy;
a ``304`` reuses it. A new body is read whole by the feed's format and must hold a
plausible number of entries (at least one, and not a tenth of what the installed
version has) before anything is installed. A failure keeps the last good version
and is recorded in the feed's state, with the reason.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from ..dburl import mask_url, scrub
from .catalog import Feed
from .formats import FeedFormatError, digest
from .installed import (
    FeedState,
    bodies_of,
    ensure_index,
    exclusive,
    read_state,
    write_body,
    write_state,
)
from .links import newest_link
from .settings import FeedsConfig

__all__ = ["Outcome", "due_feeds", "update_feeds"]

#: The largest body accepted (Onionoo's details, the largest feed, is a few MiB).
MAX_BODY: Final = 256 * 1024 * 1024
TIMEOUT: Final = 60.0
#: A feed whose download failed is tried again after this long, at most (or its refresh).
RETRY_AFTER_FAILURE: Final = 900.0


@dataclass(frozen=True)
class Outcome:
    """What an update did to one feed: ``installed``, ``current``, ``failed`` or ``waiting``."""

    feed: str
    result: str
    message: str


class _Failed(Exception):
    pass


def _agent() -> str:
    try:
        return f"cowrie-enrich/{version('cowrie-enrich-plugin')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "cowrie-enrich"


def _request(url: str) -> urllib.request.Request:
    """A request for ``url``; a mirror's ``user:password@`` becomes a Basic header."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url, headers={"User-Agent": _agent()})
    host = parts.netloc.rpartition("@")[2]
    plain = urllib.parse.urlunsplit(parts._replace(netloc=host))
    secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    token = base64.b64encode(secret.encode()).decode()
    request = urllib.request.Request(plain, headers={"User-Agent": _agent()})
    # not carried to wherever the mirror redirects
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _fetch(url: str, validators: Mapping[str, str]) -> tuple[bytes | None, dict[str, str]]:
    """The body at ``url`` (``None``: not modified) and its new validators.

    :raises _Failed: saying why, the URL's password masked (also in the reason).
    """
    try:
        return _fetch_unmasked(url, validators)
    except _Failed as exc:
        raise _Failed(scrub(str(exc), url)) from None


def _fetch_unmasked(url: str, validators: Mapping[str, str]) -> tuple[bytes | None, dict[str, str]]:
    try:
        request = _request(url)
    except ValueError as exc:
        raise _Failed(f"{mask_url(url)}: {exc}") from None
    if validators.get("etag"):
        request.add_header("If-None-Match", validators["etag"])
    if validators.get("last_modified"):
        request.add_header("If-Modified-Since", validators["last_modified"])
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            body = answer.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise _Failed(f"{mask_url(url)}: more than {MAX_BODY >> 20} MiB")
            length = answer.headers.get("Content-Length")
            if length and length.isdigit() and int(length) != len(body):
                raise _Failed(f"{mask_url(url)}: cut short ({len(body)} of {length} bytes)")
            found = {
                "etag": answer.headers.get("ETag") or "",
                "last_modified": answer.headers.get("Last-Modified") or "",
            }
            return body, {k: v for k, v in found.items() if v}
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None, dict(validators)
        raise _Failed(f"{mask_url(url)}: HTTP {exc.code} {exc.reason}") from None
    except http.client.IncompleteRead as exc:
        raise _Failed(f"{mask_url(url)}: cut short ({len(exc.partial)} bytes)") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Failed(f"{mask_url(url)}: {reason}") from None


def _locate(
    feed: Feed, given: Mapping[str, str], state: FeedState
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The URLs to download, by key, and the validators of the pages read to find them.

    A linked file the config does not set is found on its page, asked conditionally:
    while the page is not modified, the file it linked last time is still the one.
    """
    urls = dict(given)
    pages: dict[str, dict[str, str]] = {}
    for key, linked in feed.linked.items():
        page = urls.pop(linked.page, None)
        if key in urls:  # set in the config: the page is neither needed nor recorded
            continue
        if page is None:
            raise _Failed(f"neither {key} nor {linked.page} is set")
        last = state.urls.get(key) if state.urls.get(linked.page) == mask_url(page) else None
        # state.json keeps links masked: one that carried a password cannot be asked again
        # as it is (the page is read whole instead)
        if last is not None and urllib.parse.urlsplit(last).password is not None:
            last = None
        known = state.validators.get(linked.page, {}) if last is not None else {}
        body, pages[linked.page] = _fetch(page, known)
        if body is None and last is not None:
            urls[key] = last
            continue
        try:
            urls[key] = newest_link(page, body or b"", linked)
        except FeedFormatError as exc:
            raise _Failed(f"{mask_url(page)}: {exc}") from None
    return urls, pages


def _now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _update_one(config: FeedsConfig, name: str, now: float) -> Outcome:
    feed = config.feed(name)
    state = read_state(config, name)
    given = config.urls(name)
    if state.installed and state.checked_at and now - state.checked_at < feed.min_refresh:
        minutes = (now - state.checked_at) / 60
        return Outcome(
            name,
            "waiting",
            f"asked {minutes:.0f} min ago; {feed.provider} allows one download every "
            f"{feed.min_refresh / 60:.0f} min",
        )
    state.last_attempt = now
    try:
        wanted, pages = _locate(feed, given, state)
        # as shown and kept in state.json: a mirror's password is never written anywhere;
        # a page is kept with the file it linked
        used = {k: u for k, u in given.items() if k in wanted or k in pages}
        urls = {key: mask_url(url) for key, url in {**used, **wanted}.items()}
        same_urls = state.installed and state.urls == urls
        try:
            old = bodies_of(config, name, state) if same_urls else {}
        except OSError:  # a body file lost: download everything again, unconditionally
            old = {}
        bodies: dict[str, bytes] = {}
        validators: dict[str, dict[str, str]] = dict(pages)
        changed = False
        for key, url in wanted.items():
            known = state.validators.get(key, {}) if key in old else {}
            body, validators[key] = _fetch(url, known)
            if body is None:
                bodies[key] = old[key]
            else:
                bodies[key] = body
                changed = changed or body != old.get(key)
        if not changed:
            state.checked_at = now
            state.validators = validators
            state.last_error = None
            write_state(config, name, state)
            return Outcome(name, "current", f"not modified ({state.version})")
        try:
            parsed = feed.read(bodies)
        except FeedFormatError as exc:
            raise _Failed(str(exc)) from None
        entries = len(parsed.entries)
        if not entries:
            raise _Failed("no entries: refused as implausible")
        if state.installed and state.entries >= 100 and entries * 10 < state.entries:
            raise _Failed(
                f"{entries} entries where the installed version has {state.entries}: "
                "refused as implausible"
            )
        files = {key: write_body(config, name, body) for key, body in bodies.items()}
        fresh = FeedState(
            version=parsed.version or digest(bodies),
            fetched_at=_now_text(),
            checked_at=now,
            entries=entries,
            files=files,
            validators=validators,
            urls=urls,
            last_attempt=now,
        )
        write_state(config, name, fresh)
        return Outcome(name, "installed", f"installed {fresh.version} ({entries:,} entries)")
    except (_Failed, OSError) as exc:
        state.last_error = str(exc)
        write_state(config, name, state)
        kept = f"keeping {state.version}" if state.installed else "nothing installed"
        return Outcome(name, "failed", f"failed, {kept}: {exc}")


def update_feeds(
    config: FeedsConfig,
    names: Iterable[str] | None = None,
    *,
    only_due: bool = False,
    wait: bool = True,
) -> list[Outcome]:
    """Download what changed of ``names`` (every enabled feed), install it, compile the index.

    Holds the folder's lock throughout: two updates on one machine take turns, or,
    without ``wait``, the second does nothing. ``only_due`` leaves out feeds whose
    refresh has not come (looked at under the lock: another process may just have
    downloaded them).
    """
    chosen = list(names) if names is not None else list(config.enabled)
    with exclusive(config, wait=wait) as held:
        if not held:
            return []
        if only_due:
            due = set(due_feeds(config))
            chosen = [name for name in chosen if name in due]
        outcomes = [_update_one(config, name, time.time()) for name in chosen]
    if any(o.result == "installed" for o in outcomes) or not any(
        o.result == "failed" for o in outcomes
    ):
        ensure_index(config)
    return outcomes


def due_feeds(config: FeedsConfig, now: float | None = None) -> list[str]:
    """The enabled feeds whose refresh has come (a failed one waits a while between tries)."""
    moment = time.time() if now is None else now
    due = []
    for name in config.enabled:
        state = read_state(config, name)
        refresh = config.refresh(name)
        waiting = min(refresh, RETRY_AFTER_FAILURE)
        if state.last_error and state.last_attempt and moment - state.last_attempt < waiting:
            continue
        if state.checked_at is None or moment - state.checked_at >= refresh:
            due.append(name)
    return due
