"""The benchmarks' stand-in worker speaks the worker's messages, so ``host-floor`` is real.

``benchmarks/floor_worker.py`` replaces the enrichment worker to measure what the
host's thread pays alone. These tests run the reference host with it behind the
plugin, through the same process transport the real worker uses.
"""

from __future__ import annotations

import json
from pathlib import Path

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
