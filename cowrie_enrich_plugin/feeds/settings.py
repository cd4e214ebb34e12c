"""The ``[plugins.enrich.feeds]`` section: which feeds, where they live, how often, from where.

``enabled`` defaults to every installed feed (the twelve built-in ones and any a
third-party package adds); ``enabled = []`` turns feeds off. ``dir`` defaults to
``$COWRIE_ENRICH_FEEDS_DIR``, else ``/var/lib/cowrie-enrich/feeds`` for root, else
``$XDG_DATA_HOME/cowrie-enrich/feeds`` (``~/.local/share/...``). Each feed's
subsection (``[plugins.enrich.feeds.aws]``) may replace its URLs and its ``refresh``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..checks import Setting, check_value, value_from_text
from ..dburl import mask_url
from ..errors import ConfigError
from .catalog import SECTION_KEYS, Feed, installed_feeds

__all__ = ["FeedsConfig", "default_dir", "feeds_config"]

_REFRESH: Final = Setting(float, low=1, high=365 * 86_400)
#: The environment variables of the section (``COWRIE_ENRICH_FEEDS_<KEY>``).
ENV_KEYS: Final = SECTION_KEYS


def default_dir() -> str:
    """Where installed feeds live when ``dir`` is not set."""
    if os.geteuid() == 0:
        return "/var/lib/cowrie-enrich/feeds"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(base, "cowrie-enrich", "feeds")


@dataclass(frozen=True)
class FeedsConfig:
    """The checked feeds section."""

    enabled: tuple[str, ...] = ()
    dir: str = ""
    #: each enabled feed's URLs and refresh, after defaults and overrides
    settings: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = field(default=())

    @property
    def path(self) -> Path:
        """The feeds' folder."""
        return Path(self.dir)

    def feed(self, name: str) -> Feed:
        """The definition of the enabled feed ``name``."""
        return installed_feeds()[name]

    def urls(self, name: str) -> dict[str, str]:
        """The URLs of feed ``name`` by key (a part set to ``""`` is left out)."""
        values = dict(dict(self.settings)[name])
        return {key: str(values[key]) for key in self.feed(name).urls if values[key]}

    def refresh(self, name: str) -> float:
        """Seconds between downloads of feed ``name``."""
        return float(dict(dict(self.settings)[name])["refresh"])


def _feed_settings(
    feed: Feed, refresh: float | None, given: Mapping[str, Any], where: str
) -> dict[str, Any]:
    values: dict[str, Any] = {
        **feed.urls,
        "refresh": refresh if refresh is not None else feed.refresh,
    }
    for key, value in given.items():
        if key == "refresh":
            values[key] = check_value(key, _REFRESH, value, where)
        elif key in feed.urls:
            if value == "" and (key in feed.optional or key in feed.linked):
                values[key] = ""  # left out, or (linked) found on its page
                continue
            if not isinstance(value, str) or not value or value != value.strip():
                shown = mask_url(value) if isinstance(value, str) else repr(value)
                raise ConfigError(
                    f"{where}: {key} = {shown!r} is not allowed; {key} must be a URL"
                    + (" (or empty to leave it out)" if key in feed.optional else "")
                    + (" (or empty to find it on the page)" if key in feed.linked else "")
                )
            values[key] = value
        else:
            known = ", ".join(sorted([*feed.urls, "refresh"]))
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {known}")
    if values["refresh"] < feed.min_refresh:
        raise ConfigError(
            f"{where}: refresh = {values['refresh']:g} is below {feed.min_refresh:g} seconds, "
            f"the most often {feed.provider} allows a download"
        )
    return values


def feeds_config(
    section: Mapping[str, Any] | None, environ: Mapping[str, str], where: str
) -> FeedsConfig:
    """Check ``[plugins.enrich.feeds]`` and its ``COWRIE_ENRICH_FEEDS_*`` variables.

    :raises ConfigError: naming the key, the feed or the variable.
    """
    given = dict(section or {})
    for key in ENV_KEYS:
        variable = f"COWRIE_ENRICH_FEEDS_{key.upper()}"
        if variable in environ:
            text = environ[variable]
            if key == "enabled":
                given[key] = [name.strip() for name in text.split(",") if name.strip()]
            elif key == "refresh":
                given[key] = value_from_text(
                    key, _REFRESH, text, f"environment variable {variable}"
                )
            else:
                given[key] = text
    feeds = installed_feeds()
    enabled = given.pop("enabled", list(feeds))
    if not isinstance(enabled, list) or not all(isinstance(n, str) for n in enabled):
        raise ConfigError(f"{where}: enabled must be a list of feed names")
    unknown = [name for name in enabled if name not in feeds]
    if unknown:
        raise ConfigError(
            f"{where}: enabled names {', '.join(map(repr, unknown))}, which no installed feed "
            f"is called; installed: {', '.join(feeds)}"
        )
    folder = check_value("dir", Setting(str), given.pop("dir", "") or default_dir(), where)
    refresh = given.pop("refresh", None)
    if refresh is not None:
        refresh = check_value("refresh", _REFRESH, refresh, where)
    subsections: dict[str, Mapping[str, Any]] = {}
    for key, value in given.items():
        if key in feeds and isinstance(value, Mapping):
            subsections[key] = value
        else:
            raise ConfigError(
                f"{where}: unknown key {key!r}; known keys: dir, enabled, refresh, "
                f"and a table per feed ({', '.join(feeds)})"
            )
    settings = tuple(
        (
            name,
            tuple(
                sorted(
                    _feed_settings(
                        feeds[name], refresh, subsections.get(name, {}), f"{where[:-1]}.{name}]"
                    ).items()
                )
            ),
        )
        for name in dict.fromkeys(enabled)
    )
    return FeedsConfig(tuple(dict.fromkeys(enabled)), str(Path(folder).expanduser()), settings)
