"""What every host of the plugin needs: its plugin manager, signals, the end, the counters.

The reference batch host (:mod:`.reference`), the follower (:mod:`.follow`), the
``enrich`` filter (:mod:`.stream`) and the Cowrie output plugin
(:mod:`..cowrie_output`) are all built from these, so a new host is its reading loop
and little else:

    pm = make_plugin_manager(host_config, own={"my-host": MySink()})
    read_all = False
    with stopping_on_signals(pm) as stop:
        try:
            pm.hook.cowrie_ingest_start(config=host_config, pluginmanager=pm)
            for chunk in chunks:
                pm.hook.cowrie_ingest_events(events=chunk)
            read_all = True
        finally:
            stop.ending = True  # a signal now only hurries the end
            # Always end; a batch host that read everything first takes every answer.
            counters = end_run(pm, finish=read_all and not stop.came)
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

import pluggy

from .. import hookspecs
from ..config import PLUGIN_NAME, plugin_enabled
from ..counters import RunCounters, added_up
from ..hookspecs import PROJECT_NAME, hookimpl
from .discovery import load_entry_points
from .logreader import LogProblem

__all__ = [
    "STOPPING_SIGNALS",
    "IngestSummary",
    "Interrupted",
    "RecordSink",
    "SignalState",
    "end_run",
    "live_stats",
    "make_plugin_manager",
    "stopping_on_signals",
]


def make_plugin_manager(
    host_config: Mapping[str, Any],
    *,
    own: Mapping[str, object] | None = None,
    entry_points: bool = True,
) -> pluggy.PluginManager:
    """A plugin manager with the specs added and the plugins loaded.

    With ``entry_points``, the installed plugins (those ``[plugins] enabled`` lists);
    without, this package's own plugin alone (a host that must not load others, such
    as the Cowrie daemon). ``own``: the host's own hook implementations, by name.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    enabled = plugin_enabled(host_config)
    if not enabled:
        pm.set_blocked(PLUGIN_NAME)
    if entry_points:
        load_entry_points(pm, PROJECT_NAME)
    elif enabled:
        from ..plugin import EnrichPlugin  # the engine's side, only for hosts that run it

        pm.register(EnrichPlugin(), name=PLUGIN_NAME)
    for name, plugin in (own or {}).items():
        pm.register(plugin, name=name)
    pm.check_pending()
    return pm


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


def end_run(pm: pluggy.PluginManager, *, finish: bool = False) -> RunCounters:
    """Call ``cowrie_ingest_end``; the plugins' counters, added up.

    With ``finish`` (a batch host that read everything), ``cowrie_ingest_finish``
    first: the plugins deliver every answer the network gives before the end.
    """
    try:
        if finish:
            pm.hook.cowrie_ingest_finish()
    finally:
        counters = added_up(pm.hook.cowrie_ingest_end())
    return counters


def live_stats(pm: pluggy.PluginManager) -> RunCounters:
    """The plugins' counters mid-run, through the progress hook."""
    return added_up(pm.hook.cowrie_ingest_progress())
