"""Asking now, from the command line (``lookup``, ``cache retry``): stopped by a signal.

The engine runs on a thread of its own while the main thread waits; Ctrl-C, SIGTERM
or SIGHUP stops it asking (whois's connections are shut at once) and the command
ends within ``shutdown_timeout`` with what it has: every address it was given has a
record, those not answered ``pending`` (asked again by the next run or ``cache
retry``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..hosts.kit import STOPPING_SIGNALS

if TYPE_CHECKING:
    from ..engine.steps import Enricher

__all__ = ["ask_now"]


def ask_now(
    enricher: Enricher, usable: Iterable[str], skipped: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], bool]:
    """The records of the addresses (in no set order), and whether a signal stopped it."""
    from ..engine.serve import enrich_now

    stopping, finished = threading.Event(), threading.Event()
    found: list[list[dict[str, Any]]] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            found.append(enrich_now(enricher, usable, skipped, stopping))
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
    return (found[0] if found else []), stopping.is_set()
