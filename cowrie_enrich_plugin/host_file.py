"""The reference host's configuration file: TOML, with every table where it is read.

The file holds ``[plugins]`` (``enabled``: the plugins the host loads) and one
``[plugins.<name>]`` table per plugin; nothing else is read. A setting written where
nothing reads it would be silently ignored (a top-level ``db = ...``, a misspelt
``[plugins.enrihc]``, ``enabled = ["enrch"]``, which turns enrichment off), so such a
file is refused with the table or name it meant, and a table or name that is merely
unknown (a plugin not installed here) is a warning.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .hookspecs import PROJECT_NAME
from .settings import PLUGIN_NAME

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
    """Refuse what is written where nothing reads it; warn of unknown plugin names.

    :param installed: the plugins a host could load (this one's included).
    :raises ConfigError: naming the file, what is misplaced and what it likely meant.
    """
    known = sorted({PLUGIN_NAME, *installed})
    for key, value in loaded.items():
        if key == "plugins":
            continue
        where = f"[{key}]" if isinstance(value, Mapping) else f"{key} = ..."
        hint = (
            f"did you mean [plugins.{PLUGIN_NAME}]?"
            if _close(key, ["plugins", PLUGIN_NAME])
            else f"settings of the enrichment go under [plugins.{PLUGIN_NAME}]"
        )
        raise ConfigError(f"config file {file}: {where} at the top level is not read; {hint}")
    plugins = loaded.get("plugins", {})
    if not isinstance(plugins, Mapping):
        raise ConfigError(f"config file {file}: plugins must be a table, [plugins]")
    for key, value in plugins.items():
        if key == "enabled" or key in known:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"config file {file}: [plugins] {key} is not read; [plugins] holds only "
                f"enabled, and one table per plugin (did you mean [plugins.{PLUGIN_NAME}]?)"
            )
        _unknown(file, f"[plugins.{key}]", key, known)
    enabled = plugins.get("enabled")
    if isinstance(enabled, list):
        for name in enabled:
            if isinstance(name, str) and name not in known:
                _unknown(file, f"[plugins] enabled = [{name!r}]", name, known)


def _unknown(file: Path, where: str, name: str, known: list[str]) -> None:
    """A plugin name no installed plugin has: an error when it misspells one."""
    close = _close(name, known)
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


def _close(name: str, candidates: list[str]) -> str | None:
    found = difflib.get_close_matches(name.lower(), candidates, n=1, cutoff=0.7)
    return found[0] if found else None


def _installed_plugins() -> list[str]:
    return [point.name for point in entry_points(group=PROJECT_NAME)]
