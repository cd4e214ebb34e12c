"""Test helpers shipped for hosts' own tests: loopback servers, a simulated clock, fixtures."""

from __future__ import annotations

from .clock import SimulatedClock
from .feed_server import FeedServer, feeds_table, sample_feeds
from .greynoise_server import GreyNoiseServer, HttpFaults, HttpRequest, expected_greynoise
from .whois_server import BulkWhoisServer, Faults, Row, WhoisRequest, expected_cymru, synthetic_rows

__all__ = [
    "BulkWhoisServer",
    "Faults",
    "FeedServer",
    "GreyNoiseServer",
    "HttpFaults",
    "HttpRequest",
    "Row",
    "SimulatedClock",
    "WhoisRequest",
    "expected_cymru",
    "expected_greynoise",
    "feeds_table",
    "sample_feeds",
    "synthetic_rows",
]
