"""The offline sources (MaxMind, the feeds): every record the engine builds carries both."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cowrie_enrich_plugin.cli.doctor import run_checks
from cowrie_enrich_plugin.cli.options import settings
from cowrie_enrich_plugin.engine.offline import OfflineSources
from cowrie_enrich_plugin.engine.steps import Enricher
from cowrie_enrich_plugin.feeds.update import update_feeds
from cowrie_enrich_plugin.record import CymruAnswer, Status
from cowrie_enrich_plugin.sources.plugin import OfflineSource, load
from cowrie_enrich_plugin.testing import BulkWhoisServer, FeedServer, feeds_table, sample_feeds

from .mmdb import CITY_NETWORKS, write_city

#: In the sample AWS feed and, below, in the test City database.
AWS_IP = "3.5.141.7"


@pytest.fixture
def host_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.delenv("COWRIE_ENRICH_FEEDS_ENABLED")
    city = write_city(
        tmp_path / "city.mmdb", {**CITY_NETWORKS, "3.5.0.0/16": CITY_NETWORKS["5.6.0.0/16"]}
    )
    with FeedServer(sample_feeds()) as server:
        table = feeds_table(server, tmp_path / "feeds")
        section = {"db": f"sqlite:///{tmp_path / 'c.db'}", "geoip_city": str(city), "feeds": table}
        config = {"plugins": {"enabled": ["enrich"], "enrich": section}}
        update_feeds(settings(config).feeds)
    return config


def test_every_kind_of_record_has_every_offline_section(host_config: dict[str, object]) -> None:
    """Pending, skipped and answered records are built in one place, with the same sections."""
    config = settings(host_config)
    offline = OfflineSources.open(config)
    assert all(isinstance(source, OfflineSource) for source in offline.sources)
    assert [source.field for source in offline.sources] == ["maxmind", "classification"]
    now = dt.datetime.now(dt.timezone.utc)
    answer = CymruAnswer((16509,), "AMAZON-02, US", "3.5.0.0/16", "US", "arin", "", now)
    with Enricher.open(config) as enricher:
        built = {
            "pending": enricher.pending_record(AWS_IP),
            "skipped": enricher.skipped_record(AWS_IP),
            "answered": enricher.record_for(AWS_IP, answer),
        }
    for kind, record in built.items():
        assert record.classification is not None, kind
        assert "cloud" in record.classification.kinds, kind
        # the GeoIP files hold nothing for an address never sent anywhere
        assert (record.maxmind is None) == (kind == "skipped"), kind
        assert record.maxmind is None or record.maxmind.country_iso_code == "DE", kind
    assert built["answered"].status is Status.ENRICHED
    offline.close()


def test_doctor_asks_each_built_in_source_its_own_check(
    host_config: dict[str, object], whois_server: BulkWhoisServer
) -> None:
    host, port = whois_server.address
    enrich = host_config["plugins"]["enrich"]  # type: ignore[index]
    enrich.update(cymru_host=host, cymru_port=port)
    lines = dict(
        (line.split(":")[0], level) for level, line in run_checks(lambda: host_config, None)
    )
    assert lines["geoip_city"] == "OK" and lines["whois"] == "OK"
    for name in ("maxmind", "cymru"):
        assert callable(load(name).check)


def test_the_built_in_sources_load_without_installed_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkout on PYTHONPATH has no entry points; another package's "cymru" is not used."""
    from cowrie_enrich_plugin.sources import plugin

    monkeypatch.setattr(plugin, "discover", lambda: {})
    assert load("cymru").settings and load("maxmind").settings
    with pytest.raises(KeyError):
        load("greynoise")
