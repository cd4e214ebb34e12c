"""``--status-file`` and ``--metrics-file``: a run's state where other programs can read it.

The status file is JSON, rewritten (atomically: a temporary file, then a rename)
about once a second while the run goes on, and a last time at its end, for people
without Prometheus. The metrics file is Prometheus's textfile-collector format,
written atomically at the end of the run and, for long-lived runs, every 15 seconds.
Both are side outputs: one that cannot be written (a full disk, a folder the user
may not write) is said once on standard error and tried again next time; the run
itself goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click

from ..counters import RunCounters
from ..files import process_umask, replace_whole
from .options import Failure

__all__ = ["RunFiles"]

_STATUS_EVERY: Final = 1.0
_METRICS_EVERY: Final = 15.0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunFiles:
    """The status and metrics files of one run (either may be ``None``)."""

    def __init__(self, command: str, status_file: str | None, metrics_file: str | None) -> None:
        self.command = command
        self.status_file = status_file
        self.metrics_file = metrics_file
        self.started_at = _now()
        self._next_status = 0.0
        self._next_metrics = time.monotonic() + _METRICS_EVERY
        #: the files whose last write failed (said once, until one succeeds again)
        self._failing: set[str] = set()
        for path in (status_file, metrics_file):
            if path is not None and not Path(path).resolve().parent.is_dir():
                raise Failure(f"cannot write {path}: its folder does not exist")

    def update(self, facts: dict[str, Any], counters: RunCounters) -> None:
        """While the run goes on (called often; writes about once a second)."""
        now = time.monotonic()
        if self.status_file is not None and now >= self._next_status:
            self._next_status = now + _STATUS_EVERY
            self._write_status("running", facts, counters)
        if self.metrics_file is not None and now >= self._next_metrics:
            self._next_metrics = now + _METRICS_EVERY
            self._write_metrics(counters)

    def finish(self, state: str, facts: dict[str, Any], counters: RunCounters) -> None:
        """At the end: ``done``, ``pending`` or ``interrupted``."""
        if self.status_file is not None:
            self._write_status(state, facts, counters)
        if self.metrics_file is not None:
            self._write_metrics(counters)

    def _write_status(self, state: str, facts: dict[str, Any], counters: RunCounters) -> None:
        path = self.status_file
        assert path is not None
        self._side_output(path, lambda: _replace(path, self._status(state, facts, counters)))

    def _status(self, state: str, facts: dict[str, Any], counters: RunCounters) -> str:
        document = {
            "command": self.command,
            "pid": os.getpid(),
            "state": state,
            "started_at": self.started_at,
            "updated_at": _now(),
            **facts,
            "pending_now": counters.pending_now,
            "counters": counters.to_dict(),
        }
        return json.dumps(document, indent=1) + "\n"

    def _write_metrics(self, counters: RunCounters) -> None:
        path = self.metrics_file
        assert path is not None
        from ..metrics import metrics_text

        self._side_output(path, lambda: _replace(path, metrics_text(counters)))

    def _side_output(self, path: str, write: Callable[[], None]) -> None:
        """Write one side output; a failure is said once and never ends the run."""
        try:
            write()
        except OSError as exc:
            if path not in self._failing:
                self._failing.add(path)
                click.echo(
                    f"warning: cannot write {path} ({exc.strerror or exc}); "
                    "the run goes on, and tries again",
                    err=True,
                )
        else:
            if path in self._failing:
                self._failing.discard(path)
                click.echo(f"{path} written again", err=True)


def _replace(path: str, text: str) -> None:
    """Replace ``path`` with ``text``, readable as any new file of the user's is.

    (``0666`` less the umask: the node_exporter that reads the metrics file often
    runs as another user, and neither file holds a secret.)
    """
    replace_whole(path, text.encode(), mode=0o666 & ~process_umask())
