"""The reference host: builds the plugin manager, reads logs, drives the hooks.

It is what ``cowrie-enrich ingest`` runs, and a complete example of a host: it
adopts the hook specifications, loads plugins from the ``cowrieprocessor``
entry-point group (blocking those that ``[plugins] enabled`` does not list), and
implements ``cowrie_enrichment_ready`` itself.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import pluggy

from . import hookspecs
from .config import PLUGIN_NAME, plugin_enabled
from .hookspecs import PROJECT_NAME, hookimpl
from .logreader import LogProblem, LogReader

__all__ = ["IngestSummary", "RecordSink", "make_plugin_manager", "run_ingest"]

#: How often, in seconds, the reference host "commits" (calls ``cowrie_ingest_checkpoint``),
#: as a database-backed host commits on a timer.
CHECKPOINT_SECONDS = 10.0


def make_plugin_manager(host_config: Mapping[str, Any]) -> pluggy.PluginManager:
    """A plugin manager with the specs added and the enabled entry-point plugins loaded."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if not plugin_enabled(host_config):
        pm.set_blocked(PLUGIN_NAME)
    pm.load_setuptools_entrypoints(PROJECT_NAME)
    pm.check_pending()
    return pm


class RecordSink:
    """The host's own ``cowrie_enrichment_ready``: counts records and writes them as JSON lines."""

    def __init__(self, output: IO[str] | None = None) -> None:
        self.output = output
        self.count = 0
        self.by_status: dict[str, int] = {}

    @hookimpl
    def cowrie_enrichment_ready(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Count and (optionally) write the records."""
        self.count += len(records)
        for record in records:
            status = str(record["status"])
            self.by_status[status] = self.by_status.get(status, 0) + 1
        if self.output is not None:
            self.output.write("".join(json.dumps(record) + "\n" for record in records))


@dataclass
class IngestSummary:
    """What one ingest run did."""

    events: int = 0
    lines: int = 0
    bad_lines: int = 0
    bad_files: int = 0
    problems: list[LogProblem] = field(default_factory=list)
    plugin_stats: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    #: from start to the last event handed to the plugins (the ingest loop itself)
    read_seconds: float = 0.0
    #: the whole run, including ``cowrie_ingest_end`` waiting for the last batches
    seconds: float = 0.0

    @property
    def pending(self) -> int:
        """Addresses left pending (the network source failed for them)."""
        return int(self.plugin_stats.get("pending", 0))


Progress = Callable[[IngestSummary, Mapping[str, int]], None]


def run_ingest(
    paths: Iterable[str],
    host_config: Mapping[str, Any],
    *,
    pm: pluggy.PluginManager | None = None,
    output: IO[str] | None = None,
    progress: Progress | None = None,
    progress_every: float = 0.5,
) -> IngestSummary:
    """Ingest Cowrie logs through the hooks and return the summary.

    The plugin's refusals (``cowrie_ingest_events`` return values) are mapped back to
    their file and line. ``cowrie_ingest_end`` is called even when reading fails.
    """
    started = time.monotonic()
    manager = pm or make_plugin_manager(host_config)
    sink = RecordSink(output)
    manager.register(sink, name="reference-host")
    summary = IngestSummary()
    reader = LogReader(paths)
    hook = manager.hook
    try:
        hook.cowrie_ingest_start(config=host_config)
        next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
        next_progress = time.monotonic() + progress_every
        try:
            for chunk in reader:
                for refused in hook.cowrie_ingest_events(events=chunk.events):
                    for index, reason in refused or ():
                        reader.problem(chunk.path, chunk.lines[index], reason)
                summary.events += len(chunk.events)
                if time.monotonic() >= next_checkpoint:
                    hook.cowrie_ingest_checkpoint()
                    next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
                if progress is not None and time.monotonic() >= next_progress:
                    summary.delivered = sink.count
                    progress(summary, _live_stats(manager))
                    next_progress = time.monotonic() + progress_every
        finally:
            summary.read_seconds = time.monotonic() - started
            with _progress_while(progress, progress_every, summary, sink, manager):
                results = hook.cowrie_ingest_end()
            for stats in results:
                if isinstance(stats, Mapping):
                    summary.plugin_stats.update(stats)
    finally:
        manager.unregister(sink)
    summary.lines = reader.lines
    summary.bad_lines = reader.bad_lines
    summary.bad_files = reader.bad_files
    order = {
        path: index for index, path in enumerate(dict.fromkeys(p.path for p in reader.problems))
    }
    summary.problems = sorted(reader.problems, key=lambda p: (order[p.path], p.line))
    summary.delivered = sink.count
    summary.by_status = dict(sink.by_status)
    summary.seconds = time.monotonic() - started
    return summary


@contextlib.contextmanager
def _progress_while(
    progress: Progress | None,
    every: float,
    summary: IngestSummary,
    sink: RecordSink,
    pm: pluggy.PluginManager,
) -> Iterator[None]:
    """Keep the progress display moving while a blocking call (the end) runs."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every):
            summary.delivered = sink.count
            progress(summary, _live_stats(pm))

    thread = threading.Thread(target=tick, name="cowrie-enrich-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _live_stats(pm: pluggy.PluginManager) -> Mapping[str, int]:
    """The enrichment plugin's counters mid-run, when it is loaded."""
    from .plugin import EnrichPlugin

    for candidate in pm.get_plugins():
        if isinstance(candidate, EnrichPlugin):
            return candidate.live_stats(pm)
    return {}
