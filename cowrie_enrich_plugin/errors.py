"""The errors an operator can act on, in a module light enough for the host's process."""

from __future__ import annotations

__all__ = ["ConfigError", "GeoDatabaseError", "StoreError", "WorkerError"]


class ConfigError(ValueError):
    """A configuration value is unusable; the message names it and says what is allowed."""


class GeoDatabaseError(ValueError):
    """A GeoIP file is unusable; the message names the file and what is wrong."""


class StoreError(Exception):
    """The database could not be opened or used; the message says what to do."""


class WorkerError(RuntimeError):
    """The enrichment worker process failed; the message says how."""
