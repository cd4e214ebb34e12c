"""The benchmarks' stand-in worker speaks the worker's messages, so ``host-floor`` is real.

``benchmarks/floor_worker.py`` replaces the enrichment worker to measure what the
host's thread pays alone. These tests run the reference host with it behind the
plugin, through the same process transport the real worker uses.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.hosts.reference import make_plugin_manager, run_ingest
from cowrie_enrich_plugin.plugin import EnrichPlugin
from cowrie_enrich_plugin.transport import ProcessTransport

from .helpers import global_ips, write_log

FLOOR_WORKER = Path(__file__).resolve().parents[1] / "benchmarks" / "floor_worker.py"


@pytest.mark.skipif(not FLOOR_WORKER.exists(), reason="benchmarks/ is not in this tree")
def test_stand_in_worker_delivers_every_address_once(tmp_path: Path) -> None:
    ips = global_ips(1_234, seed=3)
    log = write_log(tmp_path / "cowrie.json", ips, events_per_ip=2)
    config = {
        "plugins": {
            "enabled": ["enrich"],
            # never opened: the stand-in does no database or network work
            "enrich": {"db": f"sqlite:///{tmp_path}/unused.db", "cymru_port": 9},
        }
    }
    output = tmp_path / "records.jsonl"
    with output.open("w") as sink:
        pm = make_plugin_manager(config)
        # The host's own seam: its plugin instance, with the stand-in as the engine.
        pm.unregister(name="enrich")
        pm.register(
            EnrichPlugin(lambda settings: ProcessTransport(settings, command=(str(FLOOR_WORKER),))),
            name="enrich",
        )
        summary = run_ingest([str(log)], config, pm=pm, output=sink)
    assert summary.events == 2 * len(ips)
    assert summary.delivered == len(ips)
    assert summary.by_status == {"enriched": len(ips)}
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(record["ip"] for record in records) == sorted(ips)
    assert {record["cymru"]["asn"] for record in records} == {64500}
    assert not (tmp_path / "unused.db").exists()


@pytest.mark.skipif(not FLOOR_WORKER.exists(), reason="benchmarks/ is not in this tree")
def test_the_readme_table_is_written_from_a_report() -> None:
    """``run.py --markdown``: one row per scenario, each ratio against its workload's own run."""
    tables = _benchmark_module("tables")

    def row(work: str, scenario: str, wall: float, **more: object) -> dict[str, object]:
        return {"workload": work, "scenario": scenario, "wall": wall, "connections": 0,
                "ips_sent": 0, "peak_rss_mb": 20.0, **more}  # fmt: skip

    report = {
        "profile": "default",
        "runs": 3,
        "rows": [
            row("real logs, cost model", "ours-cold", 2.4, connections=4, ips_sent=1583),
            row("real logs, cost model", "whois-alone", 2.0, connections=4, ips_sent=1583),
            row("real", "ingest-off", 0.5, events=100_000, loop=0.45),
            row("real", "ingest-on", 0.6, events=100_000, loop=0.5),
        ],
    }
    text = tables.markdown_table(report, "2026-12-06", "abc1234")
    lines = text.splitlines()
    assert lines[0].startswith("Measured on 2026-12-06 at commit abc1234 ")
    body = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert len(body) == 4
    assert "| 2.00 | 0.83 |" in body[1]  # the bound, against the cold run
    assert body[2].startswith("| real logs (100,000 events) | reference host, plugin off |")
    assert "| 0.50 | 0.83 | 0.45 |" in body[2] and body[2].endswith("| 200,000 |")
    assert tables.real_cold_over_whois(report["rows"]) == pytest.approx(1.2)


def _benchmark_module(name: str) -> Any:
    """``benchmarks/<name>.py``, loaded as the benchmarks run it (it is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, FLOOR_WORKER.with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_until(sock: socket.socket, received: bytearray, wanted: bytes) -> None:
    while wanted not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed before answering {wanted!r}"
        received += chunk


@pytest.mark.skipif(not FLOOR_WORKER.exists(), reason="benchmarks/ is not in this tree")
def test_the_benchmark_server_answers_a_line_before_it_waits_for_the_next() -> None:
    """A client may wait for answers before it sends more (``cymruwhois`` sends up to a
    hundred addresses and reads their answers first): every answer reaches it, a line seen
    before (the server's own shortcut) is answered as the first time, and options still count.
    """
    workloads = _benchmark_module("workloads")
    ips = global_ips(6, seed=31)
    server = workloads.Server(0.0, 0.0, prime=ips[:3])  # half of them known beforehand
    host, port = server.hostport.rsplit(":", 1)
    try:
        answers = []
        for _ in range(2):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                received = bytearray()
                sock.sendall(b"begin\nverbose\n")
                for ip in ips:
                    sock.sendall(f"{ip}\n".encode())
                    _read_until(sock, received, f"| {ip} ".encode())
                sock.sendall(b"end\n")
                while chunk := sock.recv(65536):
                    received += chunk
            answers.append(received.split(b"\n", 1)[1])  # after the banner (it has the time)
        assert answers[0] == answers[1]
        header, *rows = answers[0].decode().splitlines()  # verbose: the column header first
        assert header.split("|")[1].strip() == "IP"
        assert [row.split("|")[1].strip() for row in rows] == ips
        assert all(len(row.split("|")) == 7 for row in rows)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"begin\n{ips[0]}\nnot an address\nend\n".encode())
            plain = bytearray()
            while chunk := sock.recv(65536):
                plain += chunk
        rows = plain.decode().splitlines()[1:]
        assert len(rows[0].split("|")) == 3 and rows[0].split("|")[1].strip() == ips[0]
        assert rows[1] == "Error: unable to parse line"
    finally:
        server.close()
