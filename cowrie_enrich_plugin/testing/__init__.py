"""Test helpers shipped for hosts' own tests: a loopback bulk whois server and pytest fixtures."""

from __future__ import annotations

from .whois_server import BulkWhoisServer, Faults, Row, WhoisRequest, expected_cymru, synthetic_rows

__all__ = ["BulkWhoisServer", "Faults", "Row", "WhoisRequest", "expected_cymru", "synthetic_rows"]
