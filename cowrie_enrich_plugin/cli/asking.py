"""Asking now, from the command line (``lookup``, ``cache retry``): stopped by a signal.

The engine runs on a thread of its own while the main thread waits; Ctrl-C, SIGTERM
or SIGHUP stops it asking (whois's connections are shut at once) and the command
ends within ``shutdown_timeout`` with what it has: the records made so far (those
not answered ``pending``, asked again by the next run or ``cache retry``). An engine
still busy then (another source's request that waits out a rate limit) is left
behind: the command says so and leaves at once (:func:`end_interrupted`), as a
killed run would, which loses nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..hosts.kit import STOPPING_SIGNALS
from .options import EX_INTERRUPTED

if TYPE_CHECKING:
    from ..engine.steps import Enricher

__all__ = ["Asked", "ask_now", "end_interrupted"]


@dataclass
class Asked:
    """What :func:`ask_now` got."""

    #: the records, in no set order (with ``interrupted``, those made so far)
    records: list[dict[str, Any]]
    #: a signal stopped it
    interrupted: bool
    #: the engine was still busy when the command had to end: do not close it, leave
    abandoned: bool


def ask_now(enricher: Enricher, usable: Iterable[str], skipped: Iterable[str] = ()) -> Asked:
    """Enrich the addresses now; a signal stops it within ``shutdown_timeout``."""
    from ..engine.serve import enrich_now

    stopping, finished = threading.Event(), threading.Event()
    found: list[dict[str, Any]] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            enrich_now(enricher, usable, skipped, stopping, found)
        except BaseException as exc:  # raised on the main thread
            failed.append(exc)
        finally:
            finished.set()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        if not finished.is_set():  # a signal after the work is done stops nothing
            stopping.set()
            enricher.stop_asking()

    thread = threading.Thread(target=work, name="cowrie-enrich-now", daemon=True)
    previous = {sig: signal.signal(sig, on_signal) for sig in STOPPING_SIGNALS}
    try:
        thread.start()
        while thread.is_alive() and not stopping.is_set():
            thread.join(0.1)
        thread.join(enricher.config.shutdown_timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise failed[0]
    return Asked(list(found), stopping.is_set(), thread.is_alive())


def end_interrupted(asked: Asked, pending: int) -> NoReturn:
    """Say how many addresses a stopped command leaves pending, and exit 130.

    An engine still busy is not waited for: the process leaves at once, its output
    flushed, without closing it.
    """
    click.echo(f"interrupted: {pending} address(es) pending, run again to finish", err=True)
    if asked.abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EX_INTERRUPTED)
    sys.exit(EX_INTERRUPTED)
