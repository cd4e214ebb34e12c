"""The two kinds of enrichment source, the interfaces they implement, and how they are found.

**Network sources** answer over the network, in batches: asked after the cache, leased
across processes, cached per address with a TTL, retried, and shown ``pending`` until
they answer. Team Cymru is the built-in one (its answer has columns of its own and
fills the record's summary fields); every other, GreyNoise included, implements
:class:`NetworkSource` and is asked, cached, retried and exported by the engine
through that interface alone.

**Offline sources** answer from local files: asked inline whenever a record is built
(fresh, pending or served from the cache), never pending, no network per address.
MaxMind and the offline feeds are the built-in ones; each implements
:class:`OfflineSource`. Offline data of your own joins as a feed (the entry-point
group ``cowrie_enrich.feeds``, see :mod:`cowrie_enrich_plugin.feeds`).

A source is found through the entry-point group ``cowrie_enrich.sources``: the entry
point's name is the source's name, its key in the record and its config section
``[plugins.enrich.<name>]``; it names a :class:`SourcePlugin` (usually a module-level
instance). A source is enabled when its section is present (an empty one will do).
Team Cymru and MaxMind register the same way; they are configured by the top-level
keys (``cymru_host``, ``geoip_city``, ...) for compatibility.

A minimal network source, in a package of its own::

    class Blocklist:
        settings = {"path": Setting(str, "/etc/blocklist.txt")}

        def open(self, settings):
            return BlocklistLookup(settings["path"])

        def check(self, settings):
            return "OK", f"reads {settings['path']}"

    # pyproject.toml
    [project.entry-points."cowrie_enrich.sources"]
    blocklist = "my_package:SOURCE"
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ..checks import Setting

if TYPE_CHECKING:
    from ..settings import EnrichConfig

__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "Lookup",
    "NetworkSource",
    "OfflineSource",
    "Setting",
    "Source",
    "SourcePlugin",
    "discover",
    "load",
    "settings_of",
]

ENTRY_POINT_GROUP: Final = "cowrie_enrich.sources"
#: Where the built-in sources' plugins live: loaded from here whatever the installed
#: metadata says (a checkout on ``PYTHONPATH`` has none, and another package's entry
#: point of the same name must not replace them).
_BUILT_IN_MODULES: Final = {
    "cymru": "cowrie_enrich_plugin.sources.cymru.source",
    "maxmind": "cowrie_enrich_plugin.sources.maxmind.source",
}
#: The sources whose data has columns of its own and top-level keys.
BUILT_IN: Final = frozenset(_BUILT_IN_MODULES)


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
    #: a failure only the operator can mend (a refused key), once the source says it
    #: first; the run counts it among its errors (a batch run exits 1)
    refusal: str | None = None
    #: why the source asks no more today (its daily quota is spent); reported, and the
    #: sections stay pending until the quota resets
    exhausted: str | None = None


@runtime_checkable
class NetworkSource(Protocol):
    """An open network source, in the engine: thread-safe, asked from ``concurrency`` threads."""

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

    # Optional: ``count_in(ledger)``. A source that has it is handed the store's ledger of
    # its requests a day (``ledger.take(limit) -> bool``, ``ledger.spend()``, see
    # :class:`~.pacing.DailyQuota`), so that its quota is one for every process on the
    # database. Not a member of the protocol: sources written before it stay sources.
    # Optional: ``quota_spent() -> bool``, whether the day's quota is spent now; without
    # it, the engine goes by what the source's last call said (``Lookup.exhausted``).


#: The name network sources had before offline ones joined.
Source = NetworkSource


@runtime_checkable
class OfflineSource(Protocol):
    """An open offline source, in the engine: answers one address at once, from local files.

    Thread-safe; asked for every record built, so :meth:`section` must be cheap
    (microseconds: a memory-mapped lookup, no I/O beyond page faults).
    """

    @property
    def field(self) -> str:
        """The record field its section fills (``maxmind``, ``classification``)."""

    def section(self, ip: str) -> Any:
        """Its section of ``ip``'s record (``None``: nothing to say, or no data yet)."""

    def refresh(self) -> None:
        """Use files replaced since they were opened (cheap; called at every flush)."""

    def close(self) -> None:
        """Release the files."""


class SourcePlugin(Protocol):
    """What an entry point of ``cowrie_enrich.sources`` names."""

    #: the keys of ``[plugins.enrich.<name>]``
    settings: Mapping[str, Setting]

    def open(self, settings: Mapping[str, Any]) -> Any:
        """Open the source with its checked settings (in the engine, not the host).

        A third-party plugin returns a :class:`NetworkSource`.
        """

    def check(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        """What ``doctor`` says of it: ``("OK" | "WARN" | "FAIL", one line)``.

        Cheap and read-only (a file opened, a server reached); the line says how to
        fix what is wrong. Plugins written before ``check`` was asked for are shown
        as enabled.
        """


@functools.cache
def discover() -> Mapping[str, Any]:
    """Every installed source's entry point, by name (loaded only when used)."""
    found: dict[str, Any] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, point)
    return found


def load(name: str) -> SourcePlugin:
    """The plugin object of the source ``name`` (built in, or installed).

    :raises KeyError: when no installed source has that name.
    """
    if name in _BUILT_IN_MODULES:
        built_in: SourcePlugin = importlib.import_module(_BUILT_IN_MODULES[name]).SOURCE
        return built_in
    plugin: SourcePlugin = discover()[name].load()
    return plugin


def settings_of(config: EnrichConfig, name: str) -> dict[str, Any]:
    """The checked settings of the enabled source ``name`` (a built-in's: its top-level keys)."""
    if name in BUILT_IN:
        return {key: getattr(config, key) for key in load(name).settings}
    return config.source_settings(name)
