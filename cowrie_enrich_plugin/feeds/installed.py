"""What is installed in the feeds folder, and the compiled index made of it.

Layout of ``dir``::

    .lock                 taken (flock) by whoever installs or compiles
    <feed>/state.json     the installed version: version, fetched_at, checked_at,
                          entries, the body file of each URL key and its ETag /
                          Last-Modified; the last attempt and its error
    <feed>/<digest>.body  the downloaded bodies, named by their content
    mirror/<feed>/<key>   the installed body of each URL key, under a name that stays
                          (:mod:`.mirror`)
    index/<key>.idx       the compiled index of a set of installed versions

A new version's bodies are written first, under new names; ``state.json`` is
replaced (written aside, renamed) last, so a reader sees the old version or the new
one, never a mix, and a failed download leaves the last good version in place. The
index's name is a digest of the versions it holds: every process with the same
enabled feeds finds the same file, compiled once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import replace_whole
from .catalog import INDEX_FOLDER, MIRROR_FOLDER
from .index import MAGIC, FeedContent, compile_index
from .mirror import publish
from .settings import FeedsConfig

__all__ = [
    "Busy",
    "FeedState",
    "bodies_of",
    "ensure_index",
    "exclusive",
    "read_state",
    "write_body",
    "write_state",
]


@dataclass
class FeedState:
    """A feed's ``state.json``: its installed version (if any) and its last attempt."""

    version: str | None = None
    fetched_at: str | None = None
    checked_at: float | None = None
    entries: int = 0
    #: the body file of each URL key
    files: dict[str, str] = field(default_factory=dict)
    #: each URL key's ETag and Last-Modified, for conditional downloads
    validators: dict[str, dict[str, str]] = field(default_factory=dict)
    #: the URLs the installed version came from, by key (passwords masked)
    urls: dict[str, str] = field(default_factory=dict)
    last_attempt: float | None = None
    last_error: str | None = None

    @property
    def installed(self) -> bool:
        """Whether a good version is installed."""
        return self.version is not None


def _folder(config: FeedsConfig, name: str) -> Path:
    return config.path / name


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` (its folder made if need be), on disk before anyone reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_whole(path, data, mode=0o644, sync=True)


def read_state(config: FeedsConfig, name: str) -> FeedState:
    """The state of feed ``name`` (an empty one when nothing was ever installed)."""
    try:
        data = json.loads((_folder(config, name) / "state.json").read_text())
    except FileNotFoundError:
        return FeedState()
    except (OSError, ValueError):
        data = None
    state = _checked_state(data)
    if state is None:
        return FeedState(last_error="state.json is unreadable; the next update reinstalls")
    return state


def _checked_state(data: Any) -> FeedState | None:
    """The state ``state.json`` holds, or ``None`` when it is not what this module writes."""
    if not isinstance(data, dict):
        return None
    text = (str, type(None))
    number = (int, float, type(None))

    def mapping(value: Any, inner: type | tuple[type, ...]) -> bool:
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, inner) for k, v in value.items()
        )

    checks = {
        "version": lambda v: isinstance(v, text),
        "fetched_at": lambda v: isinstance(v, text),
        "checked_at": lambda v: isinstance(v, number) and not isinstance(v, bool),
        "entries": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "files": lambda v: mapping(v, str),
        "validators": lambda v: mapping(v, dict),
        "urls": lambda v: mapping(v, str),
        "last_attempt": lambda v: isinstance(v, number) and not isinstance(v, bool),
        "last_error": lambda v: isinstance(v, text),
    }
    known = {k: v for k, v in data.items() if k in checks}
    if not all(checks[k](v) for k, v in known.items()):
        return None
    return FeedState(**known)


def write_state(config: FeedsConfig, name: str, state: FeedState) -> None:
    """Replace ``state.json`` atomically; drop body files the state no longer names."""
    folder = _folder(config, name)
    _write(folder / "state.json", json.dumps(state.__dict__, indent=1).encode())
    keep = set(state.files.values())
    publish(folder, config.path / MIRROR_FOLDER / name, state.files)
    for path in folder.glob("*.body"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def write_body(config: FeedsConfig, name: str, body: bytes) -> str:
    """Store one downloaded body under its digest; its file name."""
    file = hashlib.sha256(body).hexdigest()[:24] + ".body"
    path = _folder(config, name) / file
    if not path.exists():
        _write(path, body)
    return file


def bodies_of(config: FeedsConfig, name: str, state: FeedState) -> dict[str, bytes]:
    """The installed bodies of feed ``name``, by URL key."""
    folder = _folder(config, name)
    return {key: (folder / file).read_bytes() for key, file in state.files.items()}


@contextlib.contextmanager
def exclusive(config: FeedsConfig, wait: bool = True) -> Iterator[bool]:
    """Hold the folder's lock (``False`` inside when ``wait`` is off and someone else has it)."""
    config.path.mkdir(parents=True, exist_ok=True)
    with open(config.path / ".lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _index_key(config: FeedsConfig, states: Mapping[str, FeedState]) -> str:
    sha = hashlib.sha256(MAGIC)  # an index of another format is compiled again, not misread
    for name, state in states.items():
        sha.update(
            f"{name}\0{state.version}\0{state.fetched_at}\0{sorted(state.files.items())}\0".encode()
        )
    return sha.hexdigest()[:24]


def installed_states(config: FeedsConfig) -> dict[str, FeedState]:
    """The enabled feeds that have a good version installed, with their states."""
    states = {name: read_state(config, name) for name in config.enabled}
    return {name: state for name, state in states.items() if state.installed}


class Busy(Exception):
    """Another process holds the feeds folder (installing or compiling)."""


def ensure_index(config: FeedsConfig, wait: bool = True) -> Path | None:
    """The compiled index of the installed enabled feeds, compiled now if nobody has yet.

    ``None`` when no enabled feed is installed. A feed whose installed files cannot be
    read is left out (with a warning) rather than taking the others down.

    :raises Busy: when ``wait`` is off and another process holds the folder.
    """
    states = installed_states(config)
    if not states:
        return None
    path = config.path / INDEX_FOLDER / f"{_index_key(config, states)}.idx"
    if path.exists():
        return path
    with exclusive(config, wait=wait) as held:
        if not held:
            raise Busy(config.dir)
        states = installed_states(config)  # what is installed now that we hold the lock
        if not states:
            return None
        path = config.path / INDEX_FOLDER / f"{_index_key(config, states)}.idx"
        if path.exists():
            return path
        contents = []
        for name, state in states.items():
            feed = config.feed(name)
            try:
                parsed = feed.read(bodies_of(config, name, state))
            except (OSError, ValueError, KeyError) as exc:
                logging.getLogger(__name__).warning(
                    "feed %s is left out: its installed files are unusable (%s); "
                    "`cowrie-enrich feeds update` reinstalls it",
                    name,
                    exc,
                )
                continue
            contents.append(
                FeedContent(
                    name,
                    feed.kind,
                    feed.provider,
                    str(state.version),
                    str(state.fetched_at),
                    parsed.entries,
                )
            )
        compile_index(contents, path)
        for old in sorted(path.parent.glob("*.idx"), key=lambda p: p.stat().st_mtime)[:-2]:
            if old != path:
                old.unlink(missing_ok=True)  # a process that maps it keeps its pages
        return path


def problems(config: FeedsConfig, now: float) -> list[str]:
    """What a run should say of the enabled feeds: missing, or older than twice their refresh."""
    if not config.enabled:
        return []
    states = {name: read_state(config, name) for name in config.enabled}
    missing = [name for name, state in states.items() if not state.installed]
    if len(missing) == len(states):
        return [
            f"no feed is installed in {config.dir}: records have no classification; run "
            "`cowrie-enrich feeds update` (or set [plugins.enrich.feeds] enabled = [])"
        ]
    found = []
    if missing:
        found.append(
            f"feed(s) not installed: {', '.join(missing)}; run `cowrie-enrich feeds update`"
        )
    for name, state in states.items():
        refresh = config.refresh(name)
        if state.installed and now - (state.checked_at or 0) > 2 * refresh:
            days = (now - (state.checked_at or 0)) / 86_400
            found.append(
                f"feed {name} was last checked {days:.1f} days ago, more than twice its "
                f"refresh ({refresh / 86_400:g} days); run `cowrie-enrich feeds update`"
            )
    return found
