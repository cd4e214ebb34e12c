"""Who holds a lease: owner ids, and whether the process behind one still runs.

An owner id is ``host#space/pid@start/tag``: the host name, the process-id space the
process lives in, the process id, the process's start time (clock ticks since boot,
from ``/proc``, where there is one) and a random tag. The start time tells a process
from a later one that reuses its pid; a zombie (a dead process nobody reaped) counts
as gone. The space tells containers apart that share a host name but not their
process ids (Docker with host networking, ``hostNetwork`` pods, ``unshare --pid``):
both may have a worker with pid 2, and neither can see the other's, so a lease is
judged only by a process in the same space on the same boot of the same host; any
other holder's lease is left to expire. Ids written without a space or a start time
(``host/pid/tag``) name another space: they are never judged here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

__all__ = ["forget_owner", "make_owner_id", "owner_is_dead_here", "remember_owner", "this_host"]

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


def _space() -> str:
    """The pid namespace of this process and the machine's boot, as one short word.

    Empty where neither can be read (no ``/proc``): then the host name alone says it.
    """
    parts = []
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as handle:
        parts.append(handle.read().strip().replace("-", "")[:12])
    return ".".join(parts)


def this_host() -> str:
    """The first field of this process's owner ids: host name, and pid space where known."""
    space = _space()
    name = socket.gethostname().replace("/", "_").replace("#", "_")[:80]
    return f"{name}#{space}" if space else name


def make_owner_id(announced: bool = False) -> str:
    """An id for this process's leases: host and pid space, pid, start time, a random tag.

    ``announced``: the tag starts with ``p`` (never a hex digit): the store's sessions
    carry it as their name, so that others can tell when they are gone (:mod:`.presence`).
    """
    pid = os.getpid()
    start = _start_time(pid)
    who = f"{pid}@{start}" if start is not None else str(pid)
    tag = "p" + uuid.uuid4().hex[:7] if announced else uuid.uuid4().hex[:8]
    return f"{this_host()}/{who}/{tag}"


def remember_owner(owner: str) -> None:
    """Note that a store of this process holds leases as ``owner``."""
    _LIVE_OWNERS.add(owner)


def forget_owner(owner: str) -> None:
    """Note that the store holding leases as ``owner`` was closed."""
    _LIVE_OWNERS.discard(owner)


def owner_is_dead_here(owner: str) -> bool:
    """Whether ``owner`` names a process of this host's pid space that no longer runs.

    Gone means: no such process, a zombie, or another process under the same pid
    (its start time differs). An owner on another host, in another pid space (a
    container), or from before this boot is never judged here.
    """
    try:
        host, who, _tag = owner.split("/")
        pid_text, _, start = who.partition("@")
        pid = int(pid_text)
    except ValueError:
        return False
    if host != this_host():
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
