"""Pytest fixtures, registered through the ``pytest11`` entry point.

- ``whois_server``: a started :class:`~cowrie_enrich_plugin.testing.BulkWhoisServer`
  on loopback, stopped after the test.
- ``enrich_config``: a host configuration whose ``[plugins.enrich]`` section points at
  that server and at a SQLite file in the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .whois_server import BulkWhoisServer


@pytest.fixture
def whois_server() -> Iterator[BulkWhoisServer]:
    """A bulk whois server on loopback that answers with synthetic rows."""
    with BulkWhoisServer() as server:
        yield server


@pytest.fixture
def enrich_config(whois_server: BulkWhoisServer, tmp_path: Path) -> dict[str, Any]:
    """A host config enabling the plugin against ``whois_server`` and a temporary SQLite file."""
    host, port = whois_server.address
    return {
        "plugins": {
            "enabled": ["enrich"],
            "enrich": {
                "db": f"sqlite:///{tmp_path / 'cowrie-enrich.db'}",
                "cymru_host": host,
                "cymru_port": port,
                "flush_interval": 0.2,
                "timeout": 5,
                "retries": 3,
                "feeds": {"dir": str(tmp_path / "feeds")},
            },
        }
    }
