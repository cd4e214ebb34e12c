"""A lease holder on another host that is gone: PostgreSQL tells, by its sessions."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
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


class _Proxy:
    """A TCP proxy on loopback to ``target``: the server sees the proxy's end, as behind a pooler."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
                for one, other in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(one, other), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _sessions(url: str) -> int:
    with sa.create_engine(url, poolclass=sa.pool.NullPool).connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        return int(conn.exec_driver_sql(query).scalar_one())


@pytest.mark.postgres
@pytest.mark.parametrize("between", ["pgbouncer's URL", "a proxy"])
def test_a_holder_the_server_cannot_see_as_it_is_is_not_judged_by_its_sessions(
    pg_url: str, between: str
) -> None:
    """Through a pooler (``prepare_threshold=none``) an idle client has no session of its
    own, and behind a proxy the server cannot tell whose a session is: such a sensor is
    not announced, and its leases run their time even once it is gone."""
    url = sa.engine.make_url(pg_url)
    if between == "a proxy":
        proxy = _Proxy((url.host or "127.0.0.1", url.port or 5432))
        url = url.set(host="127.0.0.1", port=proxy.port)
    else:
        url = url.update_query_dict({"prepare_threshold": "none"})
    before = _sessions(pg_url)
    holder = _holder(url.render_as_string(hide_password=False))
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 20
    while _sessions(pg_url) > before and time.monotonic() < deadline:
        time.sleep(0.2)  # its sessions are gone: a judge by sessions would take its leases now
    assert _sessions(pg_url) <= before
    assert _both(pg_url) == (set(), set())
