"""The interface every enrichment source implements, and how sources are found.

A source is found through the entry-point group ``cowrie_enrich.sources``: the
entry point's name is the source's name, its key in the record and its config
section ``[plugins.enrich.<name>]``; it names a :class:`SourcePlugin` (usually a
module-level instance). A source is enabled when its section is present (an empty
one will do). Team Cymru and MaxMind register the same way; they are configured by
the top-level keys (``cymru_host``, ``geoip_city``, ...) for compatibility, and
their answers keep columns of their own in the store. Every other source is asked,
cached, retried and exported by the engine through this interface alone.

A minimal source, in a package of its own::

    class Blocklist:
        name = "blocklist"
        settings = {"path": Setting(str, "/etc/blocklist.txt")}

        def open(self, settings):
            return BlocklistLookup(settings["path"])

    # pyproject.toml
    [project.entry-points."cowrie_enrich.sources"]
    blocklist = "my_package:SOURCE"
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Final, Protocol, runtime_checkable

from ..checks import Setting

__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "Lookup",
    "Setting",
    "Source",
    "SourcePlugin",
    "discover",
]

ENTRY_POINT_GROUP: Final = "cowrie_enrich.sources"
#: The sources whose data has columns of its own and top-level keys.
BUILT_IN: Final = frozenset({"cymru", "maxmind"})


@dataclass
class Lookup:
    """What one request (or a few) of a source said.

    ``answers``: the answer per address (a JSON-ready mapping, the address's section
    of the record). ``not_found``: addresses the source knows nothing about; also an
    answer, kept for the negative TTL. ``pending``: addresses left unanswered, with
    why; asked again on a later flush or run.
    """

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_found: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    #: requests made, for the counters
    requests: int = 0


@runtime_checkable
class Source(Protocol):
    """An open source, in the engine: thread-safe, asked from up to ``concurrency`` threads."""

    #: how many addresses one call of :meth:`lookup` takes at most
    batch_size: int
    #: how many calls of :meth:`lookup` may run at once
    concurrency: int
    #: how long an answer stays fresh
    ttl: dt.timedelta
    #: how long a "not found" stays fresh
    negative_ttl: dt.timedelta

    def lookup(self, ips: Sequence[str]) -> Lookup:
        """Ask about canonical, globally routable addresses; never raise for the network.

        Its own retry policy applies inside (backoff, ``Retry-After``, quotas); what
        it gives up on goes to :attr:`Lookup.pending`.
        """

    def close(self) -> None:
        """Release connections and files."""


class SourcePlugin(Protocol):
    """What an entry point of ``cowrie_enrich.sources`` names."""

    #: the keys of ``[plugins.enrich.<name>]``
    settings: Mapping[str, Setting]

    def open(self, settings: Mapping[str, Any]) -> Source:
        """Open the source with its checked settings (in the engine, not the host)."""


@functools.cache
def discover() -> Mapping[str, Any]:
    """Every installed source's entry point, by name (loaded only when used)."""
    found: dict[str, Any] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, point)
    return found


def load(name: str) -> SourcePlugin:
    """The plugin object of the installed source ``name``.

    :raises KeyError: when no installed source has that name.
    """
    plugin: SourcePlugin = discover()[name].load()
    return plugin
