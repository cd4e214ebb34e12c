"""The fixtures shipped for hosts' own tests, loaded through the pytest11 entry point."""

from __future__ import annotations

from typing import Any

from cowrie_enrich_plugin.testing import BulkWhoisServer

from .docs_example import run_example_host


def test_shipped_fixtures_drive_a_host(
    enrich_config: dict[str, Any], whois_server: BulkWhoisServer, tmp_path: Any
) -> None:
    log = tmp_path / "cowrie.json"
    log.write_text('{"src_ip": "8.8.8.8"}\n{"src_ip": "8.8.8.8"}\n{"src_ip": "192.168.0.1"}\n')
    records = run_example_host(str(log), enrich_config)
    assert records["8.8.8.8"]["cymru"]["asn"] == whois_server.expected("8.8.8.8")["asn"]  # type: ignore[index]
    assert records["192.168.0.1"]["status"] == "skipped"
    assert whois_server.asked_count("8.8.8.8") == 1
