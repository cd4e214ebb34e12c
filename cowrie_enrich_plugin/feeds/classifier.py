"""The feeds as an offline source of the engine: classify addresses, follow new versions.

:class:`Classifier` answers from the compiled index and, at most every few seconds,
looks whether the installed versions changed (a ``feeds update``, or its own
:class:`Keeper`); a new index is used from the next address on, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Final

from ..record import Classification
from .index import Index
from .installed import Busy, ensure_index
from .settings import FeedsConfig
from .update import update_feeds

__all__ = ["Classifier", "Keeper"]

logger = logging.getLogger(__name__)

#: How often the installed versions are looked at, in seconds.
CHECK_EVERY: Final = 5.0
#: How often a long-lived host's keeper looks for due feeds, in seconds.
KEEP_EVERY: Final = 60.0


class Classifier:
    """The feeds as an offline source: thread-safe; ``None`` while no feed is installed.

    :param keep: download due feeds in the background (a long-lived host's
        :class:`Keeper`), until :meth:`close`.
    """

    #: the record field its section fills
    field: Final = "classification"

    def __init__(
        self, config: FeedsConfig, check_every: float = CHECK_EVERY, *, keep: bool = False
    ) -> None:
        self.config = config
        self._check_every = check_every
        self._checked = float("-inf")
        self._index: Index | None = None
        self._path: Path | None = None
        self._lock = threading.Lock()
        self.refresh(wait=True)
        self._keeper = Keeper(self) if keep else None

    def refresh(self, force: bool = False, wait: bool = False) -> None:
        """Switch to the index of what is installed now, if it changed (compiled if need be).

        Without ``wait``, while another process (or this one's keeper) holds the feeds
        folder, the index in use stays: the engine never waits on a download.
        """
        now = time.monotonic()
        if not force and now - self._checked < self._check_every:
            return
        if not self._lock.acquire(blocking=wait):
            return
        try:
            self._checked = now
            try:
                path = ensure_index(self.config, wait=wait)
            except Busy:
                return
            except (OSError, ValueError) as exc:
                logger.warning("the feeds in %s cannot be compiled: %s", self.config.dir, exc)
                return
            if path == self._path:
                return
            index = None
            if path is not None:
                try:
                    index = Index(path)
                except (OSError, ValueError) as exc:
                    logger.warning("%s", exc)
                    return
            # The old index is not closed: a thread may be reading it; its pages go
            # when the last reference does.
            self._index, self._path = index, path
        finally:
            self._lock.release()

    @property
    def index(self) -> Index | None:
        """The index in use (``None``: no enabled feed is installed)."""
        return self._index

    def classify(self, ip: str) -> Classification | None:
        """The address's ``classification`` (``None`` while no feed is installed)."""
        index = self._index
        return index.classify(ip) if index is not None else None

    section = classify

    def close(self) -> None:
        """Stop the background downloads, if any (the index's pages go with the last reader)."""
        if self._keeper is not None:
            self._keeper.close()


class Keeper:
    """A long-lived host's background downloads: due feeds, one machine-wide at a time."""

    def __init__(self, classifier: Classifier, every: float | None = None) -> None:
        self._classifier = classifier
        config = classifier.config
        shortest = min((config.refresh(name) for name in config.enabled), default=KEEP_EVERY)
        # a quarter of the shortest refresh: a due feed waits at most that long
        self._every = every if every is not None else max(1.0, min(KEEP_EVERY, shortest / 4))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cowrie-enrich-feeds", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                outcomes = update_feeds(self._classifier.config, only_due=True, wait=False)
            except OSError as exc:  # the folder: not writable, full
                logger.warning(
                    "the feeds cannot be updated in %s: %s", self._classifier.config.dir, exc
                )
                continue
            except Exception:  # a bug here must not end the host; the next round tries again
                logger.exception("updating the feeds failed")
                continue
            for outcome in outcomes:
                if outcome.result == "failed":
                    logger.warning("feed %s: %s", outcome.feed, outcome.message)
                elif outcome.result == "installed":
                    logger.info("feed %s: %s", outcome.feed, outcome.message)
            if outcomes:
                self._classifier.refresh(force=True)

    def close(self) -> None:
        """Stop looking (a download under way finishes in its own time; the thread is a daemon)."""
        self._stop.set()
