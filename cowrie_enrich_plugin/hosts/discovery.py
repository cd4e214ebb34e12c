"""The reference host's plugin discovery: entry points read where they lie on ``sys.path``.

It does what pluggy's ``load_setuptools_entrypoints`` does (every installed
distribution in ``importlib.metadata``'s order, each entry point of the group loaded
and registered under its name unless that name is blocked or taken), without
importing ``importlib.metadata``: that import (the ``email`` package, ``zipfile``,
``csv``) costs more than the rest of the discovery, and ``cowrie-enrich enrich``, a
filter started once per pipeline, feels every millisecond of its start. Each
distribution's ``entry_points.txt`` is read in its ``.dist-info`` or ``.egg-info``
folder.

Where only ``importlib.metadata`` can see the distributions (a zip archive or an
``.egg`` on ``sys.path``, an import finder that provides distributions of its own),
pluggy's loader does the work. Unlike it, a malformed ``entry_points.txt`` of a
distribution that does not name the group is passed over rather than fatal.
``PluginManager.list_plugin_distinfo`` stays empty.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from importlib import import_module
from importlib.machinery import PathFinder
from typing import Final

import pluggy

__all__ = ["entry_points", "load_entry_points", "load_value"]

#: ``importlib.metadata.EntryPoint``'s own pattern for a value.
_VALUE: Final = re.compile(
    r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$"
)
_METADATA_DIRS: Final = (".dist-info", ".egg-info")


def load_entry_points(pm: pluggy.PluginManager, group: str) -> int:
    """Load and register ``group``'s plugins; return how many were registered."""
    found = entry_points(group)
    if found is None:
        return pm.load_setuptools_entrypoints(group)
    count = 0
    for name, value in found:
        if pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue
        pm.register(load_value(value), name=name)
        count += 1
    return count


def entry_points(group: str, path: Sequence[str] | None = None) -> list[tuple[str, str]] | None:
    """``group``'s entry points (name, value), every distribution's, in ``path`` order.

    Several can share a name (a distribution installed twice): the first is loaded.

    ``None`` when a ``path`` entry is a file or an ``.egg`` (a zip archive, an egg) or
    not a string, or when an import finder other than the standard one provides
    distributions.
    """
    entries = sys.path if path is None else path
    if path is None and any(
        hasattr(finder, "find_distributions") and finder is not PathFinder
        for finder in sys.meta_path
    ):
        return None
    found: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, str) or entry.endswith(".egg") or os.path.isfile(entry):
            return None
        for text in _entry_point_files(entry or "."):
            found.extend(_section(text, group))
    return found


def _entry_point_files(folder: str) -> Iterator[str]:
    """The ``entry_points.txt`` of each distribution in ``folder``, in directory order.

    Directory order is ``importlib.metadata``'s (``os.listdir``): of two copies of one
    plugin in a folder, the same one wins.
    """
    try:
        with os.scandir(folder) as children:
            names = [c.name for c in children if c.name.lower().endswith(_METADATA_DIRS)]
    except OSError:  # absent or unreadable: nothing is installed there
        return
    for name in names:
        try:
            with open(os.path.join(folder, name, "entry_points.txt"), encoding="utf-8") as f:
                yield f.read()
        except (OSError, UnicodeDecodeError):  # none, or not a folder (an old egg-info file)
            continue


def _section(text: str, group: str) -> Iterator[tuple[str, str]]:
    """The ``name = value`` pairs of ``[group]`` in an ``entry_points.txt``."""
    if f"[{group}]" not in text:  # the usual case, without a line-by-line read
        return
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line.strip("[]")  # as importlib.metadata reads a section's name
        elif current == group and "=" in line:
            name, _, value = line.partition("=")
            yield name.strip(), value.strip()


def load_value(value: str) -> object:
    """The object an entry point's value names (``module:attr.attr``)."""
    match = _VALUE.match(value)
    if match is None:
        raise ValueError(f"entry point value {value!r} is not module:attribute")
    module = import_module(match.group("module"))
    attrs = filter(None, (match.group("attr") or "").split("."))
    return functools.reduce(getattr, attrs, module)
