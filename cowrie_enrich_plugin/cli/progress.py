"""The one status line a long ingest shows on a terminal, rewritten in place."""

from __future__ import annotations

import time

import click

from ..counters import RunCounters
from ..hosts.reference import IngestSummary

__all__ = ["TerminalProgress"]


class TerminalProgress:
    """Called by the reference host about twice a second; :meth:`clear` at the end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.width = 0

    def __call__(self, summary: IngestSummary, stats: RunCounters) -> None:
        """Rewrite the line with the run so far."""
        rate = summary.events / max(1e-9, time.monotonic() - self.started)
        line = (
            f"{summary.events} events ({rate:,.0f}/s), {stats.new_ips} distinct IPs, "
            f"{stats.cache_hits} cached, {stats.batches_sent} batches sent, "
            f"{stats.in_flight_batches} in flight, {summary.delivered} delivered"
        )
        self.width = max(self.width, len(line))
        click.echo("\r" + line.ljust(self.width), nl=False, err=True)

    def clear(self) -> None:
        """Erase the line."""
        if self.width:
            click.echo("\r" + " " * self.width + "\r", nl=False, err=True)
