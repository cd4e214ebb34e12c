"""Who holds a lease: owner ids, and whether the process behind one still runs.

An owner id is ``host/pid@start/tag``: the host name, the process id, the
process's start time (clock ticks since boot, from ``/proc``, where there is one) and
a random tag. The start time tells a process from a later one that reuses its pid;
a zombie (a dead process nobody reaped) counts as gone. Ids written without a start
time (``host/pid/tag``) are still understood.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["forget_owner", "make_owner_id", "owner_is_dead_here", "remember_owner"]

#: The lease owners of the stores open in this process.
_LIVE_OWNERS: set[str] = set()


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from ``/proc``; ``None`` when it does not exist.

    :raises OSError: when there is no ``/proc`` to ask.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        if not os.path.isdir("/proc/self"):
            raise
        return None
    except ProcessLookupError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")".
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def _start_time(pid: int) -> str | None:
    try:
        stat = _proc_stat(pid)
    except OSError:
        return None
    return stat[1] if stat is not None else None


def make_owner_id() -> str:
    """An id for this process's leases: host, pid, start time and a random tag."""
    pid = os.getpid()
    start = _start_time(pid)
    who = f"{pid}@{start}" if start is not None else str(pid)
    return f"{socket.gethostname()}/{who}/{uuid.uuid4().hex[:8]}"


def remember_owner(owner: str) -> None:
    """Note that a store of this process holds leases as ``owner``."""
    _LIVE_OWNERS.add(owner)


def forget_owner(owner: str) -> None:
    """Note that the store holding leases as ``owner`` was closed."""
    _LIVE_OWNERS.discard(owner)


def owner_is_dead_here(owner: str) -> bool:
    """Whether ``owner`` names a process on this host that no longer runs.

    Gone means: no such process, a zombie, or another process under the same pid
    (its start time differs). An owner on another host is never judged here.
    """
    try:
        host, who, _tag = owner.split("/")
        pid_text, _, start = who.partition("@")
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if pid == os.getpid():  # an earlier store of this process (a host that runs many times)
        return owner not in _LIVE_OWNERS
    try:
        stat = _proc_stat(pid)
    except OSError:  # no /proc: ask the kernel whether the pid exists at all
        return _pid_missing(pid)
    if stat is None:
        # Not in /proc: gone, unless /proc hides other users' processes (hidepid).
        return _pid_missing(pid)
    state, started = stat
    return state in ("Z", "X", "x") or (bool(start) and started != start)


def _pid_missing(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
