"""Starting the worker process (see :mod:`.transport`), kept light enough to do first thing.

The worker's own start (its imports, SQLAlchemy above all) takes longer than a host's;
a command that will need one (``cowrie-enrich enrich``) can start it before anything
else with :func:`start_early`, so that both starts overlap. The first
:class:`~.transport.ProcessTransport` with the default command adopts it; if none
does, it exits when this process does (its input closes before the settings come).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Final

__all__ = ["Restarts", "discard_early", "spawn", "start_early", "take_early", "worker_command"]

#: How the worker starts: isolated (``-I``: no current directory, no environment paths),
#: then given the host's own ``sys.path`` (less the current directory), so that it runs
#: exactly the code the host runs, installed however it was (``--user``, PYTHONPATH).
_BOOT: Final = (
    "import json, runpy, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "runpy.run_module('cowrie_enrich_plugin.engine', run_name='__main__')"
)

_early: tuple[tuple[str, ...], subprocess.Popen[bytes]] | None = None
#: How long a worker let go may take to see its input closed (it may still be importing).
_LET_GO_SECONDS: Final = 30.0


def worker_command() -> tuple[str, ...]:
    """The worker's command after the interpreter."""
    # ``python -m``/``-c`` put the current directory first; a PYTHONPATH entry that
    # happens to name it too is the user's choice, and kept.
    first = {"", ".", os.getcwd()}
    paths = [p for i, p in enumerate(sys.path) if p not in {"", "."} and (i or p not in first)]
    return ("-I", "-c", _BOOT, json.dumps(paths))


def _ignore_sigint() -> None:
    """In the worker from its first instruction: Ctrl-C and a closing terminal are the host's.

    Both reach the whole process group; the host tells the worker what to do (and a
    worker whose host is gone sees its input close).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def spawn(command: Sequence[str]) -> subprocess.Popen[bytes]:
    """The worker process, its stdin and stdout pipes to this one.

    :raises OSError: when it cannot be started.
    """
    return subprocess.Popen(
        [sys.executable, *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        close_fds=True,
        preexec_fn=_ignore_sigint,
    )


def start_early() -> None:
    """Start the default worker now, for the first transport to adopt (once; best effort)."""
    global _early
    if _early is not None:
        return
    command = worker_command()
    with contextlib.suppress(OSError):  # the transport tries again, and reports it
        _early = (command, spawn(command))


def take_early(command: Sequence[str]) -> subprocess.Popen[bytes] | None:
    """The worker started early, if it runs ``command`` and is still there; else ``None``."""
    global _early
    if _early is None:
        return None
    (started, proc), _early = _early, None
    if tuple(command) == started and proc.poll() is None:
        return proc
    _let_go(proc)
    return None


def discard_early() -> None:
    """No transport will adopt the worker started early (a thread runs the engine): let it go."""
    global _early
    if _early is not None:
        (_command, proc), _early = _early, None
        _let_go(proc)


def _let_go(proc: subprocess.Popen[bytes]) -> None:
    """Its input closes before the settings came: the worker exits (status 2), and is reaped.

    A thread waits for it, so that a long-lived host keeps no zombie behind (where no
    thread can be started, it is reaped with the host's next subprocess, as before).
    """
    with contextlib.suppress(OSError):
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()
    if proc.returncode is not None:  # reaped already (its exit was seen)
        return
    reaper = threading.Thread(target=_reap, args=(proc,), name="cowrie-enrich-let-go", daemon=True)
    with contextlib.suppress(RuntimeError):
        reaper.start()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a worker let go; one still there after :data:`_LET_GO_SECONDS` is killed."""
    try:
        proc.wait(timeout=_LET_GO_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


class Restarts:
    """How many new workers a long-lived run may still start: a few a window, then none.

    A worker that keeps dying ends the run after all, rather than being replaced for
    ever. The window is on the system's clock: it is about processes, not the
    simulated day.
    """

    def __init__(self, most: int = 5, window: float = 600.0) -> None:
        self._most = most
        self._window = window
        self._times: list[float] = []

    def take(self) -> bool:
        """Whether one more may start now (and count it if so)."""
        now = time.monotonic()
        self._times = [t for t in self._times if now - t < self._window]
        if len(self._times) >= self._most:
            return False
        self._times.append(now)
        return True
