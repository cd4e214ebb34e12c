"""MaxMind readers against .mmdb files written at test time, and MaxMind's own test databases."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cowrie_enrich_plugin.cli import main
from cowrie_enrich_plugin.record import CymruAnswer, EnrichmentRecord, GeoAnswer, Status, utc_now
from cowrie_enrich_plugin.sources.maxmind.lookup import GeoDatabase, GeoDatabaseError, GeoLookup

from .helpers import shared_data
from .mmdb import CITY_NETWORKS, write_asn, write_city, write_mmdb


def test_every_field_from_written_databases(tmp_path: Path) -> None:
    geo = GeoLookup(str(write_city(tmp_path / "c.mmdb")), str(write_asn(tmp_path / "a.mmdb")))
    london = geo.lookup("81.2.69.142")
    assert london is not None
    assert (london.country_iso_code, london.country_name, london.city) == (
        "GB",
        "United Kingdom",
        "London",
    )
    assert (london.latitude, london.longitude, london.accuracy_radius) == (51.5142, -0.0931, 10)
    assert (london.asn, london.as_org) == (20712, "Andrews & Arnold Ltd")
    assert london.city_db_built_at is not None and london.asn_db_built_at is not None
    oslo = geo.lookup("2a02:cf40::1")
    assert oslo is not None and oslo.city == "Oslo" and oslo.asn is None
    germany = geo.lookup("5.6.7.8")
    assert germany is not None and germany.city is None and germany.country_iso_code == "DE"
    nowhere = geo.lookup("9.9.9.9")
    assert nowhere == GeoAnswer(
        city_db_built_at=nowhere.city_db_built_at, asn_db_built_at=nowhere.asn_db_built_at
    )  # type: ignore[union-attr]
    geo.close()


def test_country_database_in_the_city_slot(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "country.mmdb",
        "GeoLite2-Country",
        {"81.2.69.0/24": {"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}}}},
    )
    geo = GeoLookup(str(path), None)
    answer = geo.lookup("81.2.69.1")
    assert answer is not None and answer.country_iso_code == "GB" and answer.city is None


def test_no_database_configured_gives_no_section() -> None:
    assert GeoLookup(None, None).lookup("81.2.69.142") is None


def test_missing_file_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        geo = GeoLookup(str(tmp_path / "nope.mmdb"), None)
    assert geo.city is None and "does not exist" in caplog.text


def test_wrong_type_and_corrupt_files_are_refused_by_name(tmp_path: Path) -> None:
    asn = write_asn(tmp_path / "asn.mmdb")
    with pytest.raises(
        GeoDatabaseError, match=r"geoip_city file .*asn\.mmdb is a GeoLite2-ASN database"
    ):
        GeoLookup(str(asn), None)
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(GeoDatabaseError, match=r"junk\.mmdb is not a readable MaxMind database"):
        GeoLookup(None, str(junk))


def test_replaced_file_is_used_at_the_next_refresh(tmp_path: Path) -> None:
    path = write_city(tmp_path / "c.mmdb")
    geo = GeoLookup(str(path), None)
    assert geo.lookup("81.2.69.1").city == "London"  # type: ignore[union-attr]
    replacement = write_city(
        tmp_path / "new.mmdb",
        {
            "81.2.69.0/24": {
                "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
                "city": {"names": {"en": "Croydon"}},
            }
        },
    )
    os.replace(replacement, path)  # what geoipupdate does
    geo.refresh()
    assert geo.lookup("81.2.69.1").city == "Croydon"  # type: ignore[union-attr]
    # a broken replacement keeps the old file in use
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"garbage")
    os.replace(broken, path)
    geo.refresh()
    assert geo.lookup("81.2.69.1").city == "Croydon"  # type: ignore[union-attr]


def test_merge_precedence() -> None:
    now = utc_now()
    geo = GeoAnswer(country_iso_code="GB", asn=20712, as_org="AAISP")
    announced = CymruAnswer((64500,), "EXAMPLE", "81.2.69.0/24", "US", "ripencc", None, now)
    unannounced = CymruAnswer((), None, None, "US", "ripencc", None, now)
    rec = EnrichmentRecord("81.2.69.1", Status.ENRICHED, announced, geo).to_dict()
    assert (rec["asn"], rec["as_name"], rec["country"]) == (64500, "EXAMPLE", "GB")
    rec = EnrichmentRecord("81.2.69.1", Status.UNANNOUNCED, unannounced, geo).to_dict()
    assert (rec["asn"], rec["as_name"], rec["country"]) == (20712, "AAISP", "GB")
    rec = EnrichmentRecord("81.2.69.1", Status.UNANNOUNCED, unannounced, GeoAnswer()).to_dict()
    assert (rec["asn"], rec["as_name"], rec["country"]) == (None, None, "US")
    rec = EnrichmentRecord("81.2.69.1", Status.PENDING).to_dict()
    assert (rec["asn"], rec["as_name"], rec["country"], rec["cymru"], rec["maxmind"]) == (None,) * 5


# -- MaxMind's own test databases ---------------------------------------------------------


def _source(folder: Path, name: str) -> dict[str, dict[str, object]]:
    merged: dict[str, dict[str, object]] = {}
    for entry in json.loads((folder / name).read_text()):
        merged.update(entry)
    return merged


def test_maxmind_test_databases_agree_with_their_source() -> None:
    folder = shared_data("maxmind")
    geo = GeoLookup(str(folder / "GeoLite2-City-Test.mmdb"), str(folder / "GeoLite2-ASN-Test.mmdb"))
    london = geo.lookup("81.2.69.142")
    assert london is not None and (london.city, london.country_iso_code) == ("London", "GB")
    assert london.latitude is not None and london.longitude is not None
    telstra = geo.lookup("1.128.0.1")
    assert (
        telstra is not None
        and telstra.asn == 1221
        and telstra.as_org
        and "Telstra" in telstra.as_org
    )
    import ipaddress

    checked = 0
    for network, data in _source(folder, "GeoLite2-ASN-Test.source.json").items():
        first = ipaddress.ip_network(network)[0]
        answer = geo.lookup(str(first))
        assert answer is not None and answer.asn == data.get("autonomous_system_number"), network
        checked += 1
    assert checked > 10


def test_maxmind_broken_and_wrong_type_files_are_refused() -> None:
    folder = shared_data("maxmind")
    with pytest.raises(GeoDatabaseError):
        GeoDatabase(folder / "GeoLite2-ASN-Test.mmdb", "city")
    with pytest.raises(GeoDatabaseError):
        GeoDatabase(folder / "GeoLite2-City-Test.mmdb", "asn")
    for broken in (
        "MaxMind-DB-test-broken-search-tree-24.mmdb",
        "GeoIP2-City-Test-Broken-Double-Format.mmdb",
    ):
        try:
            database = GeoDatabase(folder / broken, "city")
        except GeoDatabaseError:
            continue
        # opened: lookups in the broken part give nulls, never an exception
        for ip in ("1.1.1.1", "81.2.69.142", "2001:218::1", "::1.1.1.0"):
            answer = database.lookup_city(ip)
            assert answer.city_db_built_at is not None


def test_lookup_command_offline_with_maxmind_test_databases(tmp_path: Path) -> None:
    folder = shared_data("maxmind")
    city = tmp_path / "GeoLite2-City-Test.mmdb"
    asn = tmp_path / "GeoLite2-ASN-Test.mmdb"
    shutil.copy(folder / city.name, city)
    shutil.copy(folder / asn.name, asn)
    env = {"COWRIE_ENRICH_RETRIES": "1", "COWRIE_ENRICH_TIMEOUT": "2"}
    result = CliRunner().invoke(
        main,
        [
            "lookup",
            "81.2.69.142",
            "1.128.0.1",
            "--geoip-city",
            str(city),
            "--geoip-asn",
            str(asn),
            "--cymru",
            "127.0.0.1:1",
            "--db",
            f"sqlite:///{tmp_path / 'l.db'}",
        ],
        env=env,
    )
    assert result.exit_code == 75, result.output
    assert "Traceback" not in result.output
    # (click before 8.2 mixes standard error into the runner's output)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    london, telstra = records
    assert london["status"] == "pending" and london["maxmind"]["city"] == "London"
    assert london["maxmind"]["country_iso_code"] == "GB" and london["country"] == "GB"
    assert london["maxmind"]["latitude"] is not None
    assert telstra["maxmind"]["asn"] == 1221 and telstra["asn"] == 1221
    assert "Telstra" in telstra["as_name"]


def test_maxmind_added_later_reaches_cached_records_and_removed_erases_nothing(
    tmp_path: Path,
) -> None:
    """Files added after a first run: every cached record gets its section when its
    address is seen again (``lookup``, ``ingest``), stored; a run without the files
    (``cache retry``, ``ingest``) keeps what an earlier run found. A file replaced by
    a newer build makes the section again."""
    from cowrie_enrich_plugin.testing import BulkWhoisServer

    from .helpers import write_log

    city, asn = write_city(tmp_path / "city.mmdb"), write_asn(tmp_path / "asn.mmdb")
    geo = ["--geoip-city", str(city), "--geoip-asn", str(asn)]
    ips = ["81.2.69.142", "1.128.0.1", "5.6.7.8"]
    log = write_log(tmp_path / "cowrie.json", ips)
    db = ["--db", f"sqlite:///{tmp_path / 's.db'}"]

    def run(server: BulkWhoisServer, *args: str) -> list[dict[str, object]]:
        out = tmp_path / "out.jsonl"
        where = ["--cymru", f"{server.address[0]}:{server.address[1]}", *db]
        to_file = ["--output", str(out)] if args[0] == "ingest" else []
        result = CliRunner().invoke(main, [*args, *where, *to_file])
        assert result.exit_code in (0, 75), result.output
        text = out.read_text() if to_file else result.stdout
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def exported() -> dict[str, dict[str, object]]:
        result = CliRunner().invoke(main, ["export", *db])
        return {r["ip"]: r for r in map(json.loads, result.stdout.splitlines())}

    with BulkWhoisServer() as server:
        first = run(server, "ingest", str(log))
        assert {r["ip"]: r["maxmind"] for r in first} == dict.fromkeys(ips)
        again = run(server, "ingest", str(log), *geo)
        assert {r["ip"]: r["maxmind"]["country_iso_code"] for r in again} == {  # type: ignore[index]
            "81.2.69.142": "GB",
            "1.128.0.1": None,
            "5.6.7.8": "DE",
        }
        assert exported()["1.128.0.1"]["maxmind"]["asn"] == 1221  # type: ignore[index]
        assert len(server.asked()) == len(ips)  # from the cache: whois not asked again
        # With one file only: what the other gave stays.
        only_city = run(server, "lookup", "1.128.0.1", "81.2.69.142", "--geoip-city", str(city))
        assert [r["maxmind"]["asn"] for r in only_city] == [1221, 20712]  # type: ignore[index]
        assert exported()["1.128.0.1"]["maxmind"]["asn"] == 1221  # type: ignore[index]
        # Without the files: served as stored, and a whois answer erases nothing.
        assert all(r["maxmind"] for r in run(server, "ingest", str(log)))
    # whois down: pending, with its MaxMind section stored
    env = {"COWRIE_ENRICH_RETRIES": "1", "COWRIE_ENRICH_TIMEOUT": "2"}
    result = CliRunner().invoke(
        main, ["lookup", "5.6.9.9", *geo, *db, "--cymru", "127.0.0.1:1"], env=env
    )
    assert result.exit_code == 75, result.output
    assert exported()["5.6.9.9"]["maxmind"]["country_iso_code"] == "DE"  # type: ignore[index]
    with BulkWhoisServer() as server:
        result = CliRunner().invoke(
            main, ["cache", "retry", *db, "--cymru", f"{server.address[0]}:{server.address[1]}"]
        )
        assert result.exit_code == 0, result.output
        stored = exported()
        assert stored["5.6.9.9"]["status"] == "enriched"
        assert stored["5.6.9.9"]["maxmind"]["country_iso_code"] == "DE"  # type: ignore[index]
        # A newer build of the city file: the section is made again from it.
        os.utime(city, None)
        newer = dict(CITY_NETWORKS)
        newer["81.2.69.0/24"] = {
            **CITY_NETWORKS["81.2.69.0/24"],
            "city": {"names": {"en": "Camden"}},
        }
        time.sleep(1.1)  # a build time is in whole seconds
        write_city(city, newer)
        later = run(server, "lookup", "81.2.69.142", *geo)
        assert later[0]["maxmind"]["city"] == "Camden"  # type: ignore[index]
        assert exported()["81.2.69.142"]["maxmind"]["city"] == "Camden"  # type: ignore[index]
