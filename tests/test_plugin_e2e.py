"""The plugin as users get it: installed entry point, a real PluginManager, the loopback server."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pluggy
import pytest

import cowrie_enrich_plugin.hookspecs as hookspecs
from cowrie_enrich_plugin.hookspecs import hookimpl
from cowrie_enrich_plugin.hosts.reference import make_plugin_manager, run_ingest
from cowrie_enrich_plugin.plugin import EnrichPlugin
from cowrie_enrich_plugin.record import parse_time
from cowrie_enrich_plugin.testing import BulkWhoisServer

from .helpers import global_ips, host_config, write_log
from .mmdb import write_asn, write_city


class Host:
    """A host's own hook implementation, recording what it receives and on which thread."""

    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []
        self.calls = 0
        self.threads: set[int] = set()

    @hookimpl
    def cowrie_enrichment_ready(self, records: Sequence[Mapping[str, Any]]) -> None:
        import threading

        self.calls += 1
        self.threads.add(threading.get_ident())
        self.records.extend(records)


def raw_plugin_manager() -> pluggy.PluginManager:
    """Exactly what docs/hooks.rst tells a host to do, nothing from our host module."""
    pm = pluggy.PluginManager("cowrieprocessor")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints("cowrieprocessor")
    pm.check_pending()
    return pm


def test_entry_point_is_installed() -> None:
    eps = importlib.metadata.entry_points(group="cowrieprocessor")
    assert "enrich" in {ep.name for ep in eps}
    pm = raw_plugin_manager()
    plugin = pm.get_plugin("enrich")
    assert isinstance(plugin, EnrichPlugin)


def check_record(record: Mapping[str, Any], server: BulkWhoisServer) -> None:
    """Every Cymru field of ``record`` is exactly what ``server`` answers for its IP."""
    expected = server.expected(record["ip"])
    assert expected is not None
    cymru = record["cymru"]
    assert cymru is not None, record
    for key, value in expected.items():
        assert cymru[key] == value, (record["ip"], key, cymru[key], value)
    assert record["status"] == ("enriched" if expected["asn"] is not None else "unannounced")
    fetched = parse_time(cymru["fetched_at"])
    expires = parse_time(record["expires_at"])
    assert fetched is not None and expires is not None
    ttl = dt.timedelta(days=30) if expected["asn"] is not None else dt.timedelta(hours=24)
    assert expires - fetched == ttl
    assert record["asn"] == expected["asn"]
    assert record["as_name"] == (expected["as_name"] if expected["asn"] is not None else None)


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_end_to_end_through_entry_point(
    server: BulkWhoisServer, tmp_path: Path, worker: str
) -> None:
    ips = global_ips(1200, seed=11, v6_share=0.2)
    non_global = [
        "10.1.2.3",
        "192.168.0.9",
        "127.0.0.1",
        "198.51.100.7",
        "2001:db8::1",
        "fe80::1",
        "224.0.0.5",
    ]
    config = host_config(server, f"sqlite:///{tmp_path / 'e.db'}", worker=worker)

    pm = raw_plugin_manager()
    host = Host()
    pm.register(host)
    pm.hook.cowrie_ingest_start(config=config, pluginmanager=pm)
    events = [{"eventid": "cowrie.session.connect", "src_ip": ip} for ip in ips + non_global]
    events += [{"eventid": "cowrie.login.failed", "src_ip": ip} for ip in ips[:100]]
    for start in range(0, len(events), 250):
        pm.hook.cowrie_ingest_events(events=events[start : start + 250])
    results = pm.hook.cowrie_ingest_end()

    by_ip = {record["ip"]: record for record in host.records}
    assert len(host.records) == len(by_ip) == len(ips) + len(non_global)  # each once
    for ip in ips:
        check_record(by_ip[ip], server)
    for ip in non_global:
        assert by_ip[ip]["status"] == "skipped"
        assert by_ip[ip]["cymru"] is None and by_ip[ip]["expires_at"] is None
    asked = server.asked()
    assert set(asked) == set(ips)  # non-global never sent
    assert all(count == 1 for count in asked.values())
    assert not any(request.not_addresses for request in server.requests)
    stats = results[0]
    assert stats["resolved"] == len(ips) and stats["pending"] == 0
    assert stats["batches_sent"] == len(server.requests) == 3  # 1200 / 500, rounded up

    # A second run over the same events asks the network for nothing.
    server.reset_log()
    pm2 = raw_plugin_manager()
    host2 = Host()
    pm2.register(host2)
    pm2.hook.cowrie_ingest_start(config=config, pluginmanager=pm2)
    pm2.hook.cowrie_ingest_events(events=events)
    pm2.hook.cowrie_ingest_end()
    assert server.connections == 0 and server.requests == []
    assert {r["ip"]: r for r in host2.records} == by_ip


def test_records_are_delivered_on_the_host_thread(server: BulkWhoisServer, tmp_path: Path) -> None:
    import threading

    pm = raw_plugin_manager()
    host = Host()
    pm.register(host)
    pm.hook.cowrie_ingest_start(
        config=host_config(server, f"sqlite:///{tmp_path / 't.db'}"), pluginmanager=pm
    )
    pm.hook.cowrie_ingest_events(events=[{"src_ip": ip} for ip in global_ips(50)])
    pm.hook.cowrie_ingest_checkpoint()
    pm.hook.cowrie_ingest_end()
    assert host.threads == {threading.get_ident()}
    assert len(host.records) == 50


def test_refused_src_ip_are_reported_by_index(server: BulkWhoisServer, tmp_path: Path) -> None:
    pm = raw_plugin_manager()
    pm.register(Host())
    pm.hook.cowrie_ingest_start(
        config=host_config(server, f"sqlite:///{tmp_path / 'r.db'}"), pluginmanager=pm
    )
    events: list[Any] = [
        {"src_ip": "8.8.8.8"},
        {"src_ip": "8.8.8.8:22"},
        {"eventid": "no address"},
        {"src_ip": ["8.8.8.8"]},
        {"src_ip": "8.8.8.8\nbegin"},
        {"src_ip": 134744072},
    ]
    (refused,) = pm.hook.cowrie_ingest_events(events=events)
    pm.hook.cowrie_ingest_end()
    assert [index for index, _ in refused] == [1, 2, 3, 4, 5]
    assert server.asked() == {"8.8.8.8": 1}


def test_plugin_blocked_when_not_enabled(server: BulkWhoisServer, tmp_path: Path) -> None:
    config = host_config(server, f"sqlite:///{tmp_path / 'b.db'}")
    config["plugins"]["enabled"] = []
    pm = make_plugin_manager(config)
    assert pm.get_plugin("enrich") is None
    log = write_log(tmp_path / "cowrie.json", global_ips(10))
    summary = run_ingest([str(log)], config, pm=pm)
    assert summary.events == 30 and summary.delivered == 0
    assert server.connections == 0


def test_bad_settings_are_refused_at_start(server: BulkWhoisServer, tmp_path: Path) -> None:
    config = host_config(server, f"sqlite:///{tmp_path / 'x.db'}", batch_size=501)
    pm = raw_plugin_manager()
    with pytest.raises(ValueError, match="batch_size"):
        pm.hook.cowrie_ingest_start(config=config, pluginmanager=pm)


def test_maxmind_merged_for_every_ip(server: BulkWhoisServer, tmp_path: Path) -> None:
    city = write_city(tmp_path / "city.mmdb")
    asn = write_asn(tmp_path / "asn.mmdb")
    config = host_config(
        server, f"sqlite:///{tmp_path / 'm.db'}", geoip_city=str(city), geoip_asn=str(asn)
    )
    pm = raw_plugin_manager()
    host = Host()
    pm.register(host)
    pm.hook.cowrie_ingest_start(config=config, pluginmanager=pm)
    pm.hook.cowrie_ingest_events(events=[{"src_ip": "81.2.69.142"}, {"src_ip": "1.128.0.1"}])
    pm.hook.cowrie_ingest_end()
    by_ip = {r["ip"]: r for r in host.records}
    london = by_ip["81.2.69.142"]["maxmind"]
    assert (london["city"], london["country_iso_code"], london["asn"]) == ("London", "GB", 20712)
    assert london["latitude"] == pytest.approx(51.5142)
    assert by_ip["1.128.0.1"]["maxmind"]["as_org"] == "Telstra Pty Ltd"
    assert by_ip["81.2.69.142"]["country"] == "GB"


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_wrong_geoip_file_and_missing_sqlite_folder_are_refused_at_start(
    server: BulkWhoisServer, tmp_path: Path, worker: str
) -> None:
    from cowrie_enrich_plugin.errors import StoreError

    asn = write_asn(tmp_path / "asn.mmdb")
    pm = raw_plugin_manager()
    config = host_config(
        server, f"sqlite:///{tmp_path / 'g.db'}", geoip_city=str(asn), worker=worker
    )
    with pytest.raises(ValueError, match=r"geoip_city file .*asn\.mmdb is a GeoLite2-ASN database"):
        pm.hook.cowrie_ingest_start(config=config, pluginmanager=pm)
    config = host_config(server, f"sqlite:///{tmp_path / 'no' / 'such' / 'g.db'}", worker=worker)
    with pytest.raises(StoreError, match="cannot open the database"):
        pm.hook.cowrie_ingest_start(config=config, pluginmanager=pm)


def test_a_batch_runs_end_returns_within_shutdown_timeout_whatever_whois_does(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """DESIGN: ``cowrie_ingest_end`` returns "in any case within shutdown_timeout"."""
    import time

    from cowrie_enrich_plugin.store.opening import open_store

    server.faults.hang_rate = 1.0  # every batch hangs until the client gives up
    pm = raw_plugin_manager()
    host = Host()
    pm.register(host)
    db = f"sqlite:///{tmp_path / 't.db'}"
    config = host_config(server, db, timeout=30, retries=4, shutdown_timeout=2)
    pm.hook.cowrie_ingest_start(config=config, pluginmanager=pm)
    ips = global_ips(300, seed=31)
    pm.hook.cowrie_ingest_events(events=[{"src_ip": ip} for ip in ips])
    started = time.monotonic()
    (stats,) = pm.hook.cowrie_ingest_end()
    took = time.monotonic() - started
    assert took < 2 + 1.5, took
    assert stats["pending"] == len(ips)
    with open_store(db) as store:  # durably pending: the next run asks again
        assert store.pending_count() == len(ips)


def test_the_reference_host_waits_for_batches_in_flight_before_its_end(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """Slow batches, a short shutdown_timeout: a batch run still gets every answer."""
    server.faults.latency_per_batch = 2.5
    log = write_log(tmp_path / "cowrie.json", global_ips(1_200, seed=32), events_per_ip=1)
    config = host_config(
        server, f"sqlite:///{tmp_path / 't.db'}", shutdown_timeout=1, batch_size=200
    )
    summary = run_ingest([str(log)], config)
    assert summary.pending == 0
    assert sum(summary.by_status.values()) == 1_200
    assert "pending" not in summary.by_status
