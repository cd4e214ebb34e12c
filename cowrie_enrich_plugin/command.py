"""The ``cowrie-enrich`` process itself: what only the command does, around :func:`.cli.main`.

For ``cowrie-enrich enrich``, a filter started once per pipeline and whose start a
short input feels, the worker process starts before anything else (its own start,
SQLAlchemy above all, is the longer one and overlaps this process's), and the
process leaves without tearing the interpreter down once everything is written.
Running :func:`.cli.main` in-process (tests, other programs) does neither.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

__all__ = ["run"]


def run() -> NoReturn:
    """The console script: ``cowrie-enrich``."""
    filtering = sys.argv[1:2] == ["enrich"] and not {"-h", "--help"} & set(sys.argv[2:])
    if filtering:
        from .worker_start import start_early

        start_early()
    from .cli import main

    try:
        main()
    except SystemExit as done:
        if filtering:
            _leave(done)
        raise
    raise SystemExit(0)  # pragma: no cover - click's main always exits


def _leave(done: SystemExit) -> None:
    """Exit at once with ``done``'s status: the exit handlers run, the streams are flushed.

    The interpreter's teardown (freeing every module and object: some 20-30 ms) is
    skipped. Returns, for the usual exit, when a thread other than daemons is still
    running (it must be waited for), the status is not a number, or a flush fails.
    """
    code = 0 if done.code is None else done.code
    if not isinstance(code, int):
        return
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(code)
