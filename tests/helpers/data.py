"""Test data the suite writes and reads: addresses, Cowrie logs, host configurations."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.cli.options import settings
from cowrie_enrich_plugin.settings import EnrichConfig
from cowrie_enrich_plugin.testing import BulkWhoisServer

__all__ = [
    "SHARED_DATA",
    "Disguised",
    "global_ips",
    "host_config",
    "refused_whois_config",
    "shared_data",
    "write_log",
]

#: The workplace's shared data (real Cowrie logs, MaxMind's test databases).
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path


def host_config(server: BulkWhoisServer, db_url: str, **extra: Any) -> dict[str, Any]:
    """A host configuration pointing the plugin at ``server`` and ``db_url``."""
    host, port = server.address
    section: dict[str, Any] = {
        "db": db_url,
        "cymru_host": host,
        "cymru_port": port,
        "flush_interval": 0.2,
        "timeout": 5,
        "retries": 3,
    }
    section.update(extra)
    return {"plugins": {"enabled": ["enrich"], "enrich": section}}


def global_ips(count: int, seed: int = 7, v6_share: float = 0.0) -> list[str]:
    """Distinct globally routable addresses, deterministic for a seed."""
    from cowrie_enrich_plugin.addresses import Usable, classify

    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        if rng.random() < v6_share:
            text = f"2a0{rng.randint(0, 9)}:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
        else:
            text = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        verdict = classify(text)
        if isinstance(verdict, Usable):
            found[verdict.ip] = None
    return list(found)


def write_log(
    path: Path, ips: list[str], events_per_ip: int = 3, extra_lines: list[str] | None = None
) -> Path:
    """Write a Cowrie-like log (gzip when the name ends in .gz) with events for ``ips``."""
    lines = []
    for n, ip in enumerate(ips):
        for k in range(events_per_ip):
            lines.append(
                json.dumps(
                    {
                        "eventid": "cowrie.session.connect" if k == 0 else "cowrie.login.failed",
                        "src_ip": ip,
                        "session": f"{n:08x}",
                        "timestamp": "2026-11-28T20:00:00.000000Z",
                    }
                )
            )
    lines.extend(extra_lines or [])
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def refused_whois_config(tmp_path: Path) -> EnrichConfig:
    """A long-lived run's settings on SQLite, whois at a port nothing listens on."""
    with socket.socket() as sock:  # bound, never listening: every connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    section = {
        "db": f"sqlite:///{tmp_path / 'c.db'}",
        "cymru_host": "127.0.0.1",
        "cymru_port": port,
        "retries": 1,
        "timeout": 1.0,
        "retry_interval": 300.0,
    }
    config = settings({"plugins": {"enabled": ["enrich"], "enrich": section}})
    return dataclasses.replace(config, lifecycle="long-lived")


class Disguised(str):
    """A string that prints, formats and slices as something else (a hostile log value)."""

    def __str__(self) -> str:
        return "10.0.0.1\nsmuggled"

    def __format__(self, spec: str) -> str:
        return "192.168.1.1"

    def __getitem__(self, key: object) -> str:
        return "8."
