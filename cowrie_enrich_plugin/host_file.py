"""The reference host's configuration file: TOML, with every table where it is read.

The file holds ``[plugins]`` (``enabled``: the plugins the host loads) and one
``[plugins.<name>]`` table per plugin; nothing else is read. A setting written where
nothing reads it would be silently ignored (a top-level ``db = ...``, a misspelt
``[plugins.enrihc]``, ``enabled = ["enrch"]``, which turns enrichment off), so such a
file is refused with the table or name it meant; a table or name that is merely
unknown (another host's, a plugin not installed here) is a warning.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .hookspecs import PROJECT_NAME
from .settings import PLUGIN_NAME, RULES

__all__ = ["check_layout", "load_host_config"]

logger = logging.getLogger(__name__)


def load_host_config(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Read a host's TOML configuration file (``None``: an empty configuration).

    :raises ConfigError: when the file is missing, is not valid TOML (with the line),
        or holds a table or a plugin name it surely did not mean (:func:`check_layout`).
    """
    if path is None:
        return {}
    if sys.version_info >= (3, 11):  # here, not at import: most runs read no file
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    file = Path(path)
    try:
        with file.open("rb") as handle:
            loaded: dict[str, Any] = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {file} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    check_layout(loaded, file, _installed_plugins())
    return loaded


def check_layout(loaded: Mapping[str, Any], file: Path, installed: Iterable[str]) -> None:
    """Refuse what surely meant the enrichment's settings; warn of what nothing here reads.

    A file another host shares may hold tables of its own: those are warned of, not
    refused. Refused: an enrichment setting outside ``[plugins.enrich]`` and a table
    or plugin name one typo away from one that is read.

    :param installed: the plugins a host could load (this one's included).
    :raises ConfigError: naming the file, what is misplaced and what it likely meant.
    """
    known = sorted({PLUGIN_NAME, *installed})
    for key, value in loaded.items():
        if key == "plugins":
            continue
        where = f"[{key}]" if isinstance(value, Mapping) else f"{key} = ..."
        if key in RULES:
            raise ConfigError(
                f"config file {file}: {where} at the top level is not read; "
                f"settings of the enrichment go under [plugins.{PLUGIN_NAME}]"
            )
        if _typo(key, ("plugins", PLUGIN_NAME)):
            raise ConfigError(
                f"config file {file}: {where} at the top level is not read; "
                f"did you mean [plugins.{PLUGIN_NAME}]?"
            )
        logger.warning("config file %s: %s at the top level is not read here", file, where)
    plugins = loaded.get("plugins", {})
    if not isinstance(plugins, Mapping):
        raise ConfigError(f"config file {file}: plugins must be a table, [plugins]")
    for key, value in plugins.items():
        if key == "enabled" or key in known:
            continue
        if not isinstance(value, Mapping):
            if key in RULES:
                raise ConfigError(
                    f"config file {file}: [plugins] {key} is not read; "
                    f"settings of the enrichment go under [plugins.{PLUGIN_NAME}]"
                )
            logger.warning("config file %s: [plugins] %s is not read here", file, key)
            continue
        _unknown(file, f"[plugins.{key}]", key, known)
    enabled = plugins.get("enabled")
    if isinstance(enabled, list):
        for name in enabled:
            if isinstance(name, str) and name not in known:
                _unknown(file, f"[plugins] enabled = [{name!r}]", name, known)


def _unknown(file: Path, where: str, name: str, known: list[str]) -> None:
    """A plugin name no installed plugin has: an error when it is one typo from one."""
    close = _typo(name, known)
    if close:
        raise ConfigError(
            f"config file {file}: {where} names no installed plugin; did you mean {close!r}?"
        )
    logger.warning(
        "config file %s: %s names no installed plugin (installed: %s); it is not read",
        file,
        where,
        ", ".join(known),
    )


def _typo(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``name`` misspells, if any: another case, or one edit away.

    One edit: a letter added, dropped or changed, or two neighbours swapped.
    """
    typed = name.lower()
    return next((c for c in candidates if name != c and (typed == c or _one_edit(typed, c))), None)


def _one_edit(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _installed_plugins() -> list[str]:
    return [point.name for point in entry_points(group=PROJECT_NAME)]
