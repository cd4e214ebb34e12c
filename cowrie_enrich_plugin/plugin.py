"""The enrichment plugin's hook implementations: thin, each delegates to the run's collector.

Registered under the ``cowrieprocessor`` entry-point group as ``enrich``. The host
passes its :class:`pluggy.PluginManager` to ``cowrie_ingest_start``; the plugin
keeps it for the run and delivers records through its ``cowrie_enrichment_ready``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pluggy

from .collect import Collector
from .config import EnrichConfig, cli_flags, plugin_section, resolve_config
from .counters import added_up
from .dburl import check_db_location
from .hookspecs import hookimpl
from .transport import Transport, open_transport

__all__ = ["EnrichPlugin", "check_files", "plugin"]

logger = logging.getLogger(__name__)

OpenTransport = Callable[[EnrichConfig], Transport]


def check_files(config: EnrichConfig) -> None:
    """Refuse, before any work, GeoIP files of the wrong kind and a SQLite folder that is absent.

    The worker opens them itself; checking here names the problem at start.

    :raises GeoDatabaseError: for a corrupt or wrong-type GeoIP file.
    :raises StoreError: for a SQLite path whose directory does not exist.
    """
    from .sources.maxmind.geofile import check_file

    for path, kind in ((config.geoip_city, "city"), (config.geoip_asn, "asn")):
        if path and os.path.exists(path):
            check_file(path, kind)  # type: ignore[arg-type]
    check_db_location(config.db)


class EnrichPlugin:
    """The ``enrich`` plugin: one run at a time.

    :param open_transport: how a run reaches its engine (default: a worker process,
        or a thread with ``worker = "thread"``). Hosts' tests and the benchmarks pass
        their own, and register this instance instead of the entry point's.
    """

    def __init__(self, open_transport: OpenTransport = open_transport) -> None:
        self._open_transport = open_transport
        self._run: Collector | None = None

    def _current(self) -> Collector:
        if self._run is None:
            raise RuntimeError("cowrie_ingest_start was not called for this run")
        return self._run

    @hookimpl
    def cowrie_ingest_start(
        self, config: Mapping[str, Any], pluginmanager: pluggy.PluginManager
    ) -> None:
        """Read ``[plugins.enrich]``, check the files, start the engine."""
        if self._run is not None:
            self._run.end()
            self._run = None
        settings = resolve_config(plugin_section(config), os.environ, cli_flags(config))
        check_files(settings)
        hook = pluginmanager.hook

        def deliver(records: list[dict[str, Any]]) -> None:
            hook.cowrie_enrichment_ready(records=records)

        progress = pluginmanager.subset_hook_caller("cowrie_ingest_progress", [self])

        transport = self._open_transport(settings)
        try:
            self._run = Collector(
                settings,
                deliver,
                transport,
                reopen=lambda: self._open_transport(settings),
                others=lambda: added_up(progress()),
            )
        except BaseException:
            transport.abandon(1.0)
            raise

    @hookimpl
    def cowrie_ingest_events(
        self, events: Sequence[Mapping[str, Any]]
    ) -> list[tuple[int, str]] | None:
        """Collect source addresses; report events whose ``src_ip`` was refused."""
        return self._current().ingest(events)

    @hookimpl
    def cowrie_ingest_checkpoint(self) -> None:
        """Flush partly filled batches and deliver what is ready."""
        self._current().checkpoint()

    @hookimpl
    def cowrie_ingest_finish(self) -> None:
        """Deliver while the run's batches are out; return when all is in or nothing moves."""
        if self._run is not None:
            self._run.finish()

    @hookimpl
    def cowrie_ingest_idle(self, seconds: float) -> bool | None:
        """Wait on the engine for at most ``seconds``, delivering what arrives."""
        return self._run.idle(seconds) if self._run is not None else None

    @hookimpl
    def cowrie_ingest_interrupted(self) -> None:
        """The host is stopping: the end waits at most ``shutdown_timeout``."""
        if self._run is not None:
            self._run.interrupt()

    @hookimpl
    def cowrie_ingest_progress(self) -> Mapping[str, int] | None:
        """The counters of the run so far (``None`` when no run is going)."""
        return self._run.stats().to_dict() if self._run is not None else None

    @hookimpl
    def cowrie_ingest_end(self) -> dict[str, int] | None:
        """Finish every batch, deliver, release leases, close; return the counters.

        Ending a run twice (a host's ``finally``) is harmless: the second call returns
        the same counters.
        """
        return self._current().end().to_dict() if self._run is not None else None


#: The instance the entry point names.
plugin = EnrichPlugin()
