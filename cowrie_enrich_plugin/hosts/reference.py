"""The reference host: builds the plugin manager, reads logs, drives the hooks.

It is what ``cowrie-enrich ingest`` runs, and a complete example of a host: it
adopts the hook specifications, loads plugins from the ``cowrieprocessor``
entry-point group (blocking those that ``[plugins] enabled`` does not list), and
implements ``cowrie_enrichment_ready`` itself.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

import pluggy

from .. import hookspecs
from ..config import PLUGIN_NAME, plugin_enabled
from ..counters import RunCounters
from ..hookspecs import PROJECT_NAME, hookimpl
from .discovery import load_entry_points
from .logreader import LogProblem, LogReader

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


def make_plugin_manager(host_config: Mapping[str, Any]) -> pluggy.PluginManager:
    """A plugin manager with the specs added and the enabled entry-point plugins loaded."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if not plugin_enabled(host_config):
        pm.set_blocked(PLUGIN_NAME)
    load_entry_points(pm, PROJECT_NAME)
    pm.check_pending()
    return pm


class RecordSink:
    """The host's own ``cowrie_enrichment_ready``: counts records and writes them as JSON lines."""

    def __init__(self, output: IO[str] | None = None) -> None:
        self.output = output
        self.count = 0
        self.by_status: dict[str, int] = {}

    def fill(self, summary: IngestSummary, started: float) -> None:
        """Put what was delivered, and the run's length, in ``summary``."""
        summary.delivered = self.count
        summary.by_status = dict(self.by_status)
        summary.seconds = time.monotonic() - started

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
    #: the enrichment plugin's counters (zero when it is not loaded)
    plugin: RunCounters = field(default_factory=RunCounters)
    delivered: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    #: from start to the last event handed to the plugins (the ingest loop itself)
    read_seconds: float = 0.0
    #: the whole run, including ``cowrie_ingest_end`` waiting for the last batches
    seconds: float = 0.0
    #: the run was cut short by SIGINT or SIGTERM
    interrupted: bool = False
    #: what the reader skipped in folders (not a log, unreadable), with why
    skipped_paths: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Addresses left pending (the network source failed for them, or the run stopped)."""
        return self.plugin.pending


Progress = Callable[[IngestSummary, RunCounters], None]


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised on the host's thread as Ctrl-C's ``KeyboardInterrupt`` is."""


#: The signals that stop a run: Ctrl-C, a service manager's stop, and a closing
#: terminal (or ``systemctl reload`` without an ``ExecReload``), which would otherwise
#: kill the process with nothing flushed.
STOPPING_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class SignalState:
    """Whether a stopping signal came, and whether the run is already ending."""

    came: bool = False
    ending: bool = False


@contextlib.contextmanager
def stopping_on_signals(pm: pluggy.PluginManager, *, cut: bool = True) -> Iterator[SignalState]:
    """While inside, SIGINT, SIGTERM and SIGHUP stop the run: the plugins are told at once.

    With ``cut``, reading is cut short with :class:`KeyboardInterrupt`; without, the
    host watches :attr:`SignalState.came` itself (a filter that must not lose a line
    half-written). A signal that comes once the run is ending (``cowrie_ingest_end``)
    only tells the plugins to hurry. Signals are handled only on the main thread.
    """
    state = SignalState()

    def on_signal(signum: int, _frame: object) -> None:
        state.came = True
        pm.hook.cowrie_ingest_interrupted()
        if cut and not state.ending:
            state.ending = True  # a second signal does not cut the end short again
            raise KeyboardInterrupt() if signum == signal.SIGINT else Interrupted()

    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {sig: signal.signal(sig, on_signal) for sig in STOPPING_SIGNALS}
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
            try:
                if read_all and not stop.came:
                    hook.cowrie_ingest_finish()
            finally:
                summary.plugin = end_run(manager)


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


def end_run(pm: pluggy.PluginManager) -> RunCounters:
    """Call ``cowrie_ingest_end``; the plugins' counters, added up."""
    return _added_up(pm.hook.cowrie_ingest_end())


def live_stats(pm: pluggy.PluginManager) -> RunCounters:
    """The plugins' counters mid-run, through the progress hook."""
    return _added_up(pm.hook.cowrie_ingest_progress())


def _added_up(results: Iterable[object]) -> RunCounters:
    total = RunCounters()
    for stats in results:
        if isinstance(stats, Mapping):
            total = total + RunCounters.from_mapping(stats)
    return total
