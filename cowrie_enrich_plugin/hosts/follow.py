"""The reference host as a long-lived host: ``cowrie-enrich ingest --follow PATH``.

It follows one growing ``cowrie.json`` across rotation (:mod:`.tail`), hands each
new line's event to the plugins as it is written, lets them deliver whenever records
are ready (a delivery is an upsert by ``ip``: a pending record that resolves comes
again), and runs until SIGINT or SIGTERM; then the plugins have ``shutdown_timeout``
seconds to finish, and what is unanswered stays pending for the next start.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import IO, Any, Final

import pluggy

from .kit import RecordSink, end_run, live_stats, stopping_on_signals
from .logreader import CHUNK_EVENTS, LogProblem, parse_event
from .reference import IngestSummary, Progress
from .tail import FollowedFile, Line

__all__ = ["follow"]

_IDLE_SECONDS: Final = 0.2
#: Problems kept for the summary (the counts are kept for all).
_PROBLEMS_KEPT: Final = 100


def follow(
    path: str,
    host_config: Mapping[str, Any],
    *,
    pm: pluggy.PluginManager,
    output: IO[str] | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    """Follow ``path`` until a signal; return what the run did.

    ``host_config`` should ask the plugins for the long-lived lifecycle.
    """
    started = time.monotonic()
    sink = RecordSink(output)
    pm.register(sink, name="reference-host")
    summary = IngestSummary()
    followed = FollowedFile(path)
    hook = pm.hook
    try:
        with stopping_on_signals(pm) as stop:
            try:
                hook.cowrie_ingest_start(config=host_config, pluginmanager=pm)
                _loop(followed, pm, summary, sink, output, progress)
            except KeyboardInterrupt:
                pass  # the way a follower is stopped
            finally:
                stop.ending = True
                summary.read_seconds = time.monotonic() - started
                summary.plugin = end_run(pm)
    except KeyboardInterrupt:
        pass  # a second signal while ending
    finally:
        followed.close()
        pm.unregister(sink)
    sink.fill(summary, started)
    return summary


def _loop(
    followed: FollowedFile,
    pm: pluggy.PluginManager,
    summary: IngestSummary,
    sink: RecordSink,
    output: IO[str] | None,
    progress: Progress | None,
) -> None:
    hook = pm.hook
    # No checkpoint on a timer: this host commits nothing of its own, and a forced
    # flush every few seconds would send a trickle in small batches, whatever
    # flush_interval says (the engine sends a partial batch once it has waited that long).
    while True:
        events: list[dict[str, Any]] = []
        lines: list[Line] = []
        for line in followed.read():
            summary.lines += 1
            event = parse_event(line.text)
            if isinstance(event, str):
                _problem(summary, LogProblem(line.path, line.number, event))
                continue
            events.append(event)
            lines.append(line)
            if len(events) >= CHUNK_EVENTS:
                _hand_on(hook, events, lines, summary)
                events, lines = [], []
        # An empty chunk still lets the plugins deliver what became ready.
        _hand_on(hook, events, lines, summary)
        if output is not None:
            output.flush()
        if progress is not None:
            summary.delivered = sink.count
            progress(summary, live_stats(pm))
        if not lines and not any(hook.cowrie_ingest_idle(seconds=_IDLE_SECONDS)):
            time.sleep(_IDLE_SECONDS)


def _hand_on(
    hook: Any, events: list[dict[str, Any]], lines: list[Line], summary: IngestSummary
) -> None:
    for refused in hook.cowrie_ingest_events(events=events):
        for index, reason in refused or ():
            line = lines[index]
            _problem(summary, LogProblem(line.path, line.number, reason))
    summary.events += len(events)


def _problem(summary: IngestSummary, problem: LogProblem) -> None:
    summary.bad_lines += 1
    if len(summary.problems) < _PROBLEMS_KEPT:
        summary.problems.append(problem)
