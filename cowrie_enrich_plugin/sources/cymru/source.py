"""Team Cymru as the built-in network source: the entry point's plugin.

Its keys are the plugin's top-level ``cymru_*`` and batch keys. The engine drives the
client it opens (:class:`~.client.BulkWhoisClient`) itself: Cymru's answer has columns
of its own and fills the record's summary fields, and the lease, batch and retry
policy of the whole record hang on it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any

from ...checks import Setting
from ...settings import rules_of
from .client import BulkWhoisClient

__all__ = ["SOURCE", "CymruPlugin"]


class CymruPlugin:
    """The entry point's object."""

    @property
    def settings(self) -> Mapping[str, Setting]:
        """The top-level keys Cymru reads."""
        return rules_of(
            "cymru_host",
            "cymru_port",
            "batch_size",
            "concurrency",
            "timeout",
            "retries",
            "ttl_days",
            "negative_ttl_hours",
        )

    def open(self, settings: Mapping[str, Any]) -> BulkWhoisClient:
        """A client for one run."""
        return BulkWhoisClient(
            str(settings["cymru_host"]),
            int(settings["cymru_port"]),
            timeout=float(settings["timeout"]),
            retries=int(settings["retries"]),
            batch_size=int(settings["batch_size"]),
        )

    def check(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        """Whether the whois server takes a connection (nothing is asked)."""
        host, port = str(settings["cymru_host"]), int(settings["cymru_port"])
        started = time.monotonic()
        try:
            with socket.create_connection(
                (host, port), timeout=min(10.0, float(settings["timeout"]))
            ):
                pass
        except OSError as exc:
            return "FAIL", (
                f"whois: cannot reach {host}:{port} ({exc}); outbound TCP port {port} must be "
                "open. Without it, addresses stay pending and are retried on the next run"
            )
        return (
            "OK",
            f"whois: {host}:{port} reachable ({(time.monotonic() - started) * 1000:.0f} ms)",
        )


#: The instance the entry point names.
SOURCE = CymruPlugin()
