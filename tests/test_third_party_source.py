"""A third-party source, installed as a real distribution, used with no line changed here."""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin.sources.plugin import discover
from cowrie_enrich_plugin.testing import BulkWhoisServer

from .helpers import clean_env, cowrie_enrich, global_ips, pip_installed, write_config, write_log

EXAMPLE = Path(__file__).parent / "example_source"


@pytest.fixture(scope="module")
def parity_installed() -> Iterator[None]:
    """``pip install`` the example into this environment for the module's tests."""
    with pip_installed(EXAMPLE, "cowrie-enrich-parity", discover.cache_clear):
        yield


def run(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cowrie_enrich(), *args, "--config", str(config)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def parity(ip: str) -> str:
    return "even" if ipaddress.ip_address(ip).packed[-1] % 2 == 0 else "odd"


def test_an_installed_source_is_asked_cached_exported_and_checked(
    parity_installed: None, server: BulkWhoisServer, tmp_path: Path
) -> None:
    ips = global_ips(300, seed=301, v6_share=0.2)
    log = write_log(tmp_path / "cowrie.json", [*ips, "10.1.2.3"])
    db_file = tmp_path / "p.db"
    config = write_config(tmp_path / "host.toml", server, f"sqlite:///{db_file}")
    config.write_text(
        config.read_text() + '\n[plugins.enrich.parity]\nttl_hours = 12\nlabel = "x"\n'
    )
    first = run("ingest", str(log), config=config)
    assert first.returncode == 0, first.stdout + first.stderr

    exported = run("export", config=config)
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(records) == len(ips) + 1
    for record in records:
        if record["status"] == "skipped":
            assert "parity" not in record  # never sent anywhere
            continue
        section = record["parity"]
        assert section["parity"] == parity(record["ip"]) and section["label"] == "x"
        assert section["pending"] is False and section["fetched_at"]
    table = list(
        csv.DictReader(io.StringIO(run("export", "--format", "csv", config=config).stdout))
    )
    for row in table:
        if row["status"] == "skipped":
            assert row["parity"] == ""
        else:
            assert json.loads(row["parity"])["parity"] == parity(row["ip"])

    # its own TTL: 12 hours, not Cymru's 30 days
    engine = sa.create_engine(f"sqlite:///{db_file}")
    with engine.connect() as conn:
        spans = conn.execute(
            sa.text("SELECT fetched_at, expires_at FROM source_answer WHERE source = 'parity'")
        ).all()
    engine.dispose()
    assert len(spans) == len(ips)
    for fetched, expires in spans:
        span = dt.datetime.fromisoformat(str(expires)) - dt.datetime.fromisoformat(str(fetched))
        assert span == dt.timedelta(hours=12)

    doctor = run("doctor", config=config)
    assert "OK    source parity: answers from memory, fresh for 12 h" in doctor.stdout
    stats = run("cache", "stats", config=config)
    assert f"parity: {len(ips)} answered" in stats.stdout

    # a second run asks nothing: whois and the source are both served from the store
    server.reset_log()
    again = run("ingest", str(log), "-v", config=config)
    assert again.returncode == 0 and not server.requests
    assert "0 resolved by whois" in again.stdout


def test_a_section_for_a_source_that_is_not_installed_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    config.write_text("[plugins.enrich.nosuch]\nx = 1\n")
    done = run("ingest", "-", config=config)
    assert done.returncode == 2
    assert "no installed enrichment source is called 'nosuch'" in done.stderr
