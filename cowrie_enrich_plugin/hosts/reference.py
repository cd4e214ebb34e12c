"""The reference host: builds the plugin manager, reads logs, drives the hooks.

It is what ``cowrie-enrich ingest`` runs, and a complete example of a host: it
adopts the hook specifications, loads plugins from the ``cowrieprocessor``
entry-point group (blocking those that ``[plugins] enabled`` does not list), and
implements ``cowrie_enrichment_ready`` itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

import pluggy

from ..counters import RunCounters
from .kit import (
    IngestSummary,
    RecordSink,
    SignalState,
    end_run,
    live_stats,
    make_plugin_manager,
    stopping_on_signals,
)
from .logreader import LogReader

__all__ = [
    "IngestSummary",
    "RecordSink",
    "SignalState",
    "make_plugin_manager",
    "run_ingest",
    "stopping_on_signals",
]

#: How often, in seconds, the reference host "commits" (calls ``cowrie_ingest_checkpoint``),
#: as a database-backed host commits on a timer.
CHECKPOINT_SECONDS = 10.0


Progress = Callable[[IngestSummary, RunCounters], None]


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

    The plugins' refusals (``cowrie_ingest_events`` return values) are mapped back
    to their file and line. ``cowrie_ingest_end`` is called even when reading fails
    or a signal stops the run; SIGINT and SIGTERM (on the main thread) end the run
    early, within the plugins' shutdown time, and the summary says so.
    """
    started = time.monotonic()
    manager = pm or make_plugin_manager(host_config)
    sink = RecordSink(output)
    manager.register(sink, name="reference-host")
    summary = IngestSummary()
    reader = LogReader(paths)
    try:
        with stopping_on_signals(manager) as stop:
            _ingest(reader, manager, sink, summary, progress, progress_every, host_config, stop)
        summary.interrupted = stop.came
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        manager.unregister(sink)
    summary.lines = reader.lines
    summary.bad_lines = reader.bad_lines
    summary.bad_files = reader.bad_files
    summary.skipped_paths = list(reader.skipped_paths)
    order = {
        path: index for index, path in enumerate(dict.fromkeys(p.path for p in reader.problems))
    }
    summary.problems = sorted(reader.problems, key=lambda p: (order[p.path], p.line))
    sink.fill(summary, started)
    return summary


def _ingest(
    reader: LogReader,
    manager: pluggy.PluginManager,
    sink: RecordSink,
    summary: IngestSummary,
    progress: Progress | None,
    progress_every: float,
    host_config: Mapping[str, Any],
    stop: SignalState,
) -> None:
    """The ingest loop: start, events in chunks with checkpoints, and always the end."""
    started = time.monotonic()
    hook = manager.hook
    read_all = False
    try:
        hook.cowrie_ingest_start(config=host_config, pluginmanager=manager)
        next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
        next_progress = time.monotonic() + progress_every
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
                progress(summary, live_stats(manager))
                next_progress = time.monotonic() + progress_every
        read_all = True
    finally:
        stop.ending = True  # a signal from now on only tells the plugins to hurry
        summary.read_seconds = time.monotonic() - started
        with _progress_while(progress, progress_every, summary, sink, manager):
            summary.plugin = end_run(manager, finish=read_all and not stop.came)


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
            progress(summary, live_stats(pm))

    thread = threading.Thread(target=tick, name="cowrie-enrich-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
