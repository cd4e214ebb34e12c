"""Team Cymru as a source plugin: registered like any other, asked through the interface.

The engine keeps Cymru's answers in columns of their own and merges them into the
record's summary fields, so it drives the client directly; this adapter is what
the entry point names, for the registry, ``doctor`` and any host that wants Cymru
through the same interface as the other sources. Its keys are the plugin's
top-level ``cymru_*`` keys.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from ...checks import Setting
from ..plugin import Lookup

__all__ = ["SOURCE", "CymruSource"]


class CymruSource:
    """:class:`~.client.BulkWhoisClient` behind the source interface."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        from .client import BulkWhoisClient

        self.batch_size = int(settings["batch_size"])
        self.concurrency = int(settings["concurrency"])
        self.ttl = dt.timedelta(days=float(settings["ttl_days"]))
        self.negative_ttl = dt.timedelta(hours=float(settings["negative_ttl_hours"]))
        self._client = BulkWhoisClient(
            str(settings["cymru_host"]),
            int(settings["cymru_port"]),
            timeout=float(settings["timeout"]),
            retries=int(settings["retries"]),
            batch_size=self.batch_size,
        )

    def lookup(self, ips: Sequence[str]) -> Lookup:
        """One bulk batch: announced answers, ``NA`` as not found, the rest pending."""
        result = self._client.query_batch(ips)
        lookup = Lookup(pending=dict(result.unresolved), requests=result.attempts)
        for ip, answer in result.answers.items():
            target = lookup.answers if answer.announced else lookup.not_found
            target[ip] = answer.to_dict()
        return lookup

    def close(self) -> None:
        """Nothing stays open between batches."""


class CymruPlugin:
    """The entry point's object."""

    @property
    def settings(self) -> Mapping[str, Setting]:
        """The top-level keys Cymru reads."""
        from ...config import source_rules_of

        return source_rules_of(
            "cymru_host",
            "cymru_port",
            "batch_size",
            "concurrency",
            "timeout",
            "retries",
            "ttl_days",
            "negative_ttl_hours",
        )

    def open(self, settings: Mapping[str, Any]) -> CymruSource:
        """A client for one run."""
        return CymruSource(settings)


#: The instance the entry point names.
SOURCE = CymruPlugin()
