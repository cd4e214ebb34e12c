"""Where a run's settings come from: the host's TOML section, the environment, flags.

Precedence, lowest first: defaults, the host's TOML section, environment variables
``COWRIE_ENRICH_<KEY>``, and the host's command-line flags (which the reference host
passes in ``config["cli"]["enrich"]``). Every key is checked at start: an unknown
key, a wrong type or a value out of range raises :class:`ConfigError` naming the key
and what is allowed. What each key accepts is declared in :mod:`.settings`; the
settings of other installed sources are their plugins' (:mod:`.sources.plugin`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .checks import Setting, check_value, value_from_text
from .clock import CLOCK_FILE_VARIABLE
from .dburl import mask_url
from .errors import ConfigError
from .feeds.catalog import installed_feeds
from .feeds.settings import ENV_KEYS as FEEDS_ENV_KEYS
from .feeds.settings import feeds_config
from .host_file import load_host_config
from .settings import (
    DEFAULTS,
    LIVE_FLUSH_INTERVAL,
    PLUGIN_NAME,
    RULES,
    EnrichConfig,
    check_setting,
    rules_of,
)
from .sources.cymru import MAX_BACKOFF_SECONDS
from .sources.plugin import BUILT_IN, discover, load

__all__ = [
    "DEFAULTS",
    "ENV_PREFIX",
    "MAX_BACKOFF_SECONDS",
    "PLUGIN_NAME",
    "ConfigError",
    "EnrichConfig",
    "cli_flags",
    "load_host_config",
    "mask_url",
    "plugin_enabled",
    "plugin_section",
    "resolve_config",
    "section_from_strings",
    "source_rules_of",
]

ENV_PREFIX: Final = "COWRIE_ENRICH_"
#: Environment variables with the prefix that are not configuration keys.
_RESERVED_ENV: Final = frozenset(
    {"COWRIE_ENRICH_CONFIG", CLOCK_FILE_VARIABLE, "COWRIE_ENRICH_AMQP_URL"}  # consume's broker
)
#: The name this had before :mod:`.settings` declared the rules (kept for sources).
source_rules_of: Final = rules_of


#: The command-line flag that sets each key, where it is not ``--key``.
_FLAGS: Final = {"cymru_host": "--cymru", "cymru_port": "--cymru"}


def _from_text(key: str, text: str, where: str) -> Any:
    """Convert an environment variable's text to the key's type, then check it."""
    return check_setting(key, value_from_text(key, RULES[key], text, where), where)


def resolve_config(
    section: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    *,
    source: str = "[plugins.enrich]",
) -> EnrichConfig:
    """Merge defaults, the TOML section, the environment and flags into a checked config.

    :raises ConfigError: naming the offending key (or variable) and what is allowed.
    """
    values: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    feeds_section: Mapping[str, Any] | None = None
    for key, value in (section or {}).items():
        if key == "feeds":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: feeds must be a table ([plugins.enrich.feeds])")
            feeds_section = value
            continue
        if isinstance(value, Mapping):
            sections[_source_name(key, source)] = dict(value)
            continue
        if key not in RULES:
            raise ConfigError(
                f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(RULES))}"
            )
        values[key] = check_setting(key, value, source)
    env = os.environ if environ is None else environ
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in _RESERVED_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key.startswith("feeds_") and key[len("feeds_") :] in FEEDS_ENV_KEYS:
            continue  # the feeds section reads its own
        if key in RULES:
            values[key] = _from_text(key, text, f"environment variable {name}")
        elif not _is_source_key(key):
            raise ConfigError(
                f"environment variable {name} names no setting; known: "
                + ", ".join(ENV_PREFIX + k.upper() for k in sorted(RULES))
            )
    values["sources"] = tuple(
        (name, tuple(sorted(_source_config(name, given, env, source).items())))
        for name, given in sorted(sections.items())
    )
    values["public_settings"] = frozenset(
        (name, key)
        for name in sections
        for key, rule in _source_rules(name).items()
        if not rule.secret
    )
    where = f"{source[:-1]}.feeds]" if source.endswith("]") else f"{source}.feeds"
    values["feeds"] = feeds_config(feeds_section, env, where)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
        values[key] = check_setting(key, value, f"option {flag}")
    if values.get("lifecycle") == "long-lived" and "flush_interval" not in values:
        # A live trickle of new addresses would otherwise make a connection every few
        # seconds, the pattern Team Cymru null-routes; 30 s batches them politely.
        values["flush_interval"] = LIVE_FLUSH_INTERVAL
    return EnrichConfig(**values)


def _source_rules(name: str) -> Mapping[str, Setting]:
    return load(name).settings


def _source_name(key: str, where: str) -> str:
    """The name of an installed source that ``[plugins.enrich.<key>]`` configures."""
    installed = sorted(set(discover()) - BUILT_IN)
    if key in BUILT_IN or key not in installed:
        raise ConfigError(
            f"{where}.{key}: no installed enrichment source is called {key!r}; "
            f"installed: {', '.join(installed) or 'none'}"
        )
    return key


def _is_source_key(key: str) -> bool:
    """Whether ``key`` is ``<source>_<setting>`` of an installed source.

    :raises ConfigError: when it names an installed source but no setting of it.
    """
    for name in set(discover()) - BUILT_IN:
        if key.startswith(name + "_"):
            rules = _source_rules(name)
            if key[len(name) + 1 :] not in rules:
                raise ConfigError(
                    f"environment variable {ENV_PREFIX}{key.upper()} names no setting of "
                    f"{name}; known: "
                    + ", ".join(f"{ENV_PREFIX}{name.upper()}_{k.upper()}" for k in sorted(rules))
                )
            return True
    return False


def _source_config(
    name: str, given: Mapping[str, Any], env: Mapping[str, str], where: str
) -> dict[str, Any]:
    """A source's checked settings: defaults, its section, then ``COWRIE_ENRICH_<NAME>_<KEY>``."""
    rules = _source_rules(name)
    table = f"{where[:-1]}.{name}]" if where.endswith("]") else f"{where}.{name}"
    values = {key: rule.default for key, rule in rules.items()}
    for key, value in given.items():
        if key not in rules:
            raise ConfigError(
                f"{table}: unknown key {key!r}; known keys: {', '.join(sorted(rules))}"
            )
        values[key] = check_value(key, rules[key], value, table)
    for key, rule in rules.items():
        variable = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
        if variable in env:
            values[key] = value_from_text(
                key, rule, env[variable], f"environment variable {variable}"
            )
    return values


def section_from_strings(
    items: Mapping[str, str], where: str, host_keys: Sequence[str] = ()
) -> dict[str, Any]:
    """A section written as strings (``cowrie.cfg``'s ``[output_enrich]``), typed.

    Each key is converted and checked as in ``[plugins.enrich]``; a source's keys
    come as ``<source>_<key>`` and become its section. ``host_keys``: the keys the
    host reads itself (left out of ``items``), named with the others in a refusal.

    :raises ConfigError: naming the key, as :func:`resolve_config` does.
    """
    extras = sorted(set(discover()) - BUILT_IN, key=len, reverse=True)
    section: dict[str, Any] = {}
    for key, text in items.items():
        if key in RULES:
            section[key] = _from_text(key, text, where)
            continue
        if key.startswith("feeds_"):
            _feeds_key(section.setdefault("feeds", {}), key[len("feeds_") :], text)
            continue
        name = next((n for n in extras if key.startswith(n + "_")), None)
        if name is None:
            known = sorted([*RULES, *host_keys]) + [f"{n}_<key>" for n in extras]
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(known)}")
        setting = key[len(name) + 1 :]
        rules = _source_rules(name)
        if setting not in rules:
            raise ConfigError(
                f"{where}: unknown key {key!r}; {name} knows "
                + ", ".join(f"{name}_{k}" for k in sorted(rules))
            )
        value = value_from_text(setting, rules[setting], text, f"{where} {key}")
        section.setdefault(name, {})[setting] = value
    return section


def _feeds_key(feeds: dict[str, Any], key: str, text: str) -> None:
    """Put one ``feeds_*`` key of a section written as strings into the feeds table.

    ``feeds_dir``, ``feeds_enabled`` (comma-separated), ``feeds_refresh``, or
    ``feeds_<feed>_<key>``.
    """
    if key == "enabled":
        feeds[key] = [name.strip() for name in text.split(",") if name.strip()]
    elif key in ("dir", "refresh"):
        feeds[key] = float(text) if key == "refresh" and _number(text) else text
    else:
        name = next(
            (
                n
                for n in sorted(installed_feeds(), key=len, reverse=True)
                if key.startswith(n + "_")
            ),
            None,
        )
        if name is None:
            raise ConfigError(f"feeds_{key}: no installed feed has that key")
        setting = key[len(name) + 1 :]
        feeds.setdefault(name, {})[setting] = (
            float(text) if setting == "refresh" and _number(text) else text
        )


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plugin_enabled(host_config: Mapping[str, Any], name: str = PLUGIN_NAME) -> bool:
    """Whether ``[plugins] enabled`` enables ``name`` (default on when the list is absent).

    :raises ConfigError: when ``enabled`` is not a list of strings.
    """
    plugins = host_config.get("plugins", {})
    if not isinstance(plugins, Mapping):
        raise ConfigError("[plugins] must be a table")
    enabled = plugins.get("enabled")
    if enabled is None:
        return True
    if not isinstance(enabled, list) or not all(isinstance(item, str) for item in enabled):
        raise ConfigError(f"[plugins] enabled = {enabled!r} must be a list of plugin names")
    return name in enabled


def plugin_section(host_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``[plugins.enrich]`` table of a host configuration (empty when absent)."""
    plugins = host_config.get("plugins", {})
    section = plugins.get(PLUGIN_NAME, {}) if isinstance(plugins, Mapping) else {}
    if not isinstance(section, Mapping):
        raise ConfigError("[plugins.enrich] must be a table")
    return section


def cli_flags(host_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The command-line overrides a host passed in ``config["cli"]["enrich"]``."""
    cli = host_config.get("cli", {})
    flags = cli.get(PLUGIN_NAME, {}) if isinstance(cli, Mapping) else {}
    return flags if isinstance(flags, Mapping) else {}
