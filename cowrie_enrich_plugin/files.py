"""Replacing a file so that a reader sees the old one or the new one, whole.

The new content goes to a temporary file beside the old one (same folder, so the
rename cannot cross file systems), which is then renamed over it. Used for the
batch ``--output``, the status and metrics files, and the feeds' files.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
from collections.abc import Iterable

__all__ = ["beside", "process_umask", "replace_whole"]


@functools.cache
def process_umask() -> int:
    """The process's umask, read once (reading it sets it for an instant)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def beside(path: str | os.PathLike[str], mode: int | None = None) -> tuple[int, str]:
    """A new temporary file next to ``path``: its descriptor and name.

    Its mode is ``mode``; without one, the old file's mode and owner (as far as this
    user may give them), or, for a new file, what any new file of the user's gets
    (``0666`` less the umask).

    :raises OSError: when the folder cannot take a file.
    """
    import tempfile  # a run that replaces no file does not pay for it

    folder, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
            return fd, temporary
        try:
            old = os.stat(path)
        except FileNotFoundError:
            os.fchmod(fd, 0o666 & ~process_umask())
        else:
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            with contextlib.suppress(OSError):
                os.fchown(fd, old.st_uid, old.st_gid)
    except BaseException:
        os.close(fd)
        os.unlink(temporary)
        raise
    return fd, temporary


def replace_whole(
    path: str | os.PathLike[str],
    data: bytes | Iterable[bytes | memoryview],
    *,
    mode: int | None = None,
    sync: bool = False,
) -> None:
    """Write ``data`` (bytes, or pieces of it in order) beside ``path``, rename it over ``path``.

    ``sync``: on disk before the rename (a file other runs build on, not a report
    rewritten every few seconds). The temporary file goes if anything fails.
    """
    fd, temporary = beside(path, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, bytes):
                out.write(data)
            else:
                for piece in data:
                    out.write(piece)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
