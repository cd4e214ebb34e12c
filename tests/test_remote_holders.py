"""A lease holder on another host that is gone: PostgreSQL tells, by its sessions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin.store import open_store
from cowrie_enrich_plugin.store.source_sections import claim_sections

IPS = ["11.0.3.1", "11.0.3.2"]

# A sensor on another host (its owner ids name it), holding leases for an hour.
_HOLDER = """
import sys, time
from cowrie_enrich_plugin.store import leases
leases.this_host = lambda: "another-host#1.2"
from cowrie_enrich_plugin.store import open_store
from cowrie_enrich_plugin.store.source_sections import claim_sections
store = open_store(sys.argv[1])
won = sorted(store.claim(sys.argv[2:], 3600)) + sorted(claim_sections(store, "gn", sys.argv[2:], 3600))
print(" ".join(won), flush=True)
time.sleep(600)
"""


def _holder(url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, *IPS],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == IPS + IPS
    return proc


def _both(url: str) -> tuple[set[str], set[str]]:
    store = open_store(url)
    try:
        return store.claim(IPS, 60), claim_sections(store, "gn", IPS, 60)
    finally:
        store.close()


@pytest.mark.postgres
def test_the_leases_of_a_holder_whose_sessions_are_gone_are_taken_at_once(pg_url: str) -> None:
    holder = _holder(pg_url)
    try:
        assert _both(pg_url) == (set(), set())  # alive elsewhere: its leases hold
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 20  # the server ends its sessions once it sees them close
    while (found := _both(pg_url)) != (set(IPS), set(IPS)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert found == (set(IPS), set(IPS))


@pytest.mark.postgres
def test_a_holder_through_a_pooler_is_not_judged_by_its_sessions(pg_url: str) -> None:
    """With ``prepare_threshold=none`` (pgbouncer) a sensor is not announced: an idle
    client there has no session, so its leases run their time even once it is gone."""
    pooled = sa.engine.make_url(pg_url).update_query_dict({"prepare_threshold": "none"})
    holder = _holder(pooled.render_as_string(hide_password=False))
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    time.sleep(1)
    assert _both(pg_url) == (set(), set())
