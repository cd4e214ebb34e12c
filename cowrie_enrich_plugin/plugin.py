"""The enrichment plugin's hook implementations: thin, each delegates to the pipeline.

Registered under the ``cowrieprocessor`` entry-point group as ``enrich``, so a host
finds it with ``PluginManager("cowrieprocessor").load_setuptools_entrypoints(...)``.

The plugin hands records back by calling ``cowrie_enrichment_ready`` on the plugin
manager that called it. The host contract passes only the configuration to
``cowrie_ingest_start``, so the plugin finds that manager on the call stack (pluggy
calls every hook implementation from ``PluginManager._hookexec``); a host that calls
the hooks some other way can name it with :meth:`EnrichPlugin.bind`.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

import pluggy

from .config import cli_flags, plugin_section, resolve_config
from .hookspecs import hookimpl
from .pipeline import IngestPipeline

__all__ = ["EnrichPlugin", "plugin"]

logger = logging.getLogger(__name__)


def _calling_plugin_manager(depth: int = 12) -> pluggy.PluginManager | None:
    """The :class:`pluggy.PluginManager` whose hook call is running this code, if any."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, pluggy.PluginManager):
            return candidate
        frame = frame.f_back
    return None


class EnrichPlugin:
    """The ``enrich`` plugin: one run per plugin manager at a time."""

    def __init__(self) -> None:
        self._runs: weakref.WeakKeyDictionary[pluggy.PluginManager, IngestPipeline] = (
            weakref.WeakKeyDictionary()
        )
        self._bound: pluggy.PluginManager | None = None

    def bind(self, pm: pluggy.PluginManager) -> None:
        """Name the plugin manager to deliver through, for hosts that call hooks directly."""
        self._bound = pm

    def _manager(self) -> pluggy.PluginManager:
        pm = _calling_plugin_manager() or self._bound
        if pm is None:
            raise RuntimeError(
                "cowrie-enrich hooks must be called through a pluggy PluginManager "
                "(or name it with plugin.bind(pm))"
            )
        return pm

    def _run(self) -> IngestPipeline:
        run = self._runs.get(self._manager())
        if run is None:
            raise RuntimeError("cowrie_ingest_start was not called for this run")
        return run

    @hookimpl
    def cowrie_ingest_start(self, config: Mapping[str, Any]) -> None:
        """Read ``[plugins.enrich]``, open the store and GeoIP files, start the flusher."""
        pm = self._manager()
        previous = self._runs.pop(pm, None)
        if previous is not None:
            previous.end()
        settings = resolve_config(plugin_section(config), os.environ, cli_flags(config))

        def deliver(records: list[dict[str, Any]]) -> None:
            pm.hook.cowrie_enrichment_ready(records=records)

        pipeline = IngestPipeline(settings, deliver)
        pipeline.start()
        self._runs[pm] = pipeline

    @hookimpl
    def cowrie_ingest_events(
        self, events: Sequence[Mapping[str, Any]]
    ) -> list[tuple[int, str]] | None:
        """Collect source addresses; report events whose ``src_ip`` was refused."""
        return self._run().ingest(events)

    @hookimpl
    def cowrie_ingest_checkpoint(self) -> None:
        """Flush partly filled batches and deliver what is ready."""
        self._run().checkpoint()

    @hookimpl
    def cowrie_ingest_end(self) -> dict[str, int]:
        """Finish every batch, deliver, release leases, close; return the counters."""
        pm = self._manager()
        run = self._runs.get(pm)
        if run is None:
            raise RuntimeError("cowrie_ingest_start was not called for this run")
        try:
            return run.end().to_dict()
        finally:  # kept until here so that progress displays can follow the last batches
            self._runs.pop(pm, None)

    def live_stats(self, pm: pluggy.PluginManager) -> dict[str, int]:
        """The counters of the run on ``pm`` so far (empty when none runs), for progress."""
        run = self._runs.get(pm)
        return run.stats().to_dict() if run is not None else {}


#: The instance the entry point names.
plugin = EnrichPlugin()
