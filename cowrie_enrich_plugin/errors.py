"""The errors an operator can act on, in a module light enough for the host's process."""

from __future__ import annotations

import logging
import sys

__all__ = ["ConfigError", "GeoDatabaseError", "StoreError", "WorkerError", "configure_logging"]


class ConfigError(ValueError):
    """A configuration value is unusable; the message names it and says what is allowed."""


class GeoDatabaseError(ValueError):
    """A GeoIP file is unusable; the message names the file and what is wrong."""


class StoreError(Exception):
    """The database could not be opened or used; the message says what to do."""


class WorkerError(RuntimeError):
    """The enrichment worker process failed; the message says how."""


def configure_logging(level: int) -> None:
    """Send the package's log to standard error as ``cowrie-enrich: LEVEL: message``.

    The command line and the worker process share it, so their lines look alike.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cowrie-enrich: %(levelname)s: %(message)s"))
    root = logging.getLogger("cowrie_enrich_plugin")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
