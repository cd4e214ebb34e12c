"""A fleet's mirror: each installed feed file under a name that stays, ``dir/mirror/<feed>/<key>``.

The installed bodies are named by their content, so their names change with every
version. The mirror names them by feed and URL key instead, so that a fleet's sensors
can point their URLs at one host's ``mirror`` folder, served as it is by a static web
server or shared as ``file://`` URLs. Each file keeps its body's modification time (a
hard link, or a copy given that time where the file system has no hard links), so a
web server's ``Last-Modified`` and ``ETag`` change only with the content, and the
sensors' downloads stay conditional.

The mirror is a convenience beside the install: nothing here fails an install. What
cannot be published is said in a warning, and the next install tries again.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = ["publish"]

logger = logging.getLogger(__name__)


def publish(installed: Path, folder: Path, files: Mapping[str, str]) -> None:
    """Make ``folder`` hold each URL key's body (``files``: key to file name in ``installed``).

    A key no longer installed leaves the folder. Never raises.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        present = {path.name: path for path in folder.iterdir()}
    except OSError as exc:
        logger.warning("feeds: cannot publish %s: %s", folder, exc)
        return
    for key, file in files.items():
        try:
            _link(installed / file, folder / key)
        except OSError as exc:
            logger.warning("feeds: cannot publish %s in %s: %s", key, folder, exc)
    for name, path in present.items():
        if name in files or path.is_dir():
            continue
        try:  # a key the installed version has no more, or a copy left half made
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("feeds: cannot remove %s: %s", path, exc)


def _link(body: Path, target: Path) -> None:
    """Put ``body`` at ``target`` at once (readers see the old file or the new one)."""
    if _same(body, target):
        return
    temporary = target.with_name(f".{target.name}.new")
    temporary.unlink(missing_ok=True)
    try:
        os.link(body, temporary)
    except OSError:  # another file system, or one without hard links: a copy, same mtime
        shutil.copy2(body, temporary)
    os.replace(temporary, target)


def _same(body: Path, target: Path) -> bool:
    """Whether ``target`` is ``body`` already: the same file, or a copy of it with its mtime."""
    try:
        if os.path.samefile(body, target):
            return True
        mine, theirs = body.stat(), target.stat()
    except OSError:
        return False
    if (mine.st_size, mine.st_mtime_ns) != (theirs.st_size, theirs.st_mtime_ns):
        return False
    return body.read_bytes() == target.read_bytes()
