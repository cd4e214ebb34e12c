"""The ECS mapping against Elastic's own field definitions: names, types, and every value."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cowrie_enrich_plugin.ecs import ECS_FIELDS, NAMESPACE, to_ecs
from cowrie_enrich_plugin.record import CymruAnswer, EnrichmentRecord, GeoAnswer, Status, utc_now

DEFINITIONS = yaml.safe_load(
    (Path(__file__).parent / "data" / "ecs" / "ecs_source_fields.yml").read_text()
)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "ecs.rst"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf fields of nested ECS objects; a geo_point stays whole."""
    if isinstance(value, dict) and set(value) != {"lat", "lon"}:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


def valid(kind: str, value: Any) -> bool:
    if kind == "ip":
        return isinstance(value, str) and bool(ipaddress.ip_address(value))
    if kind == "long":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if kind == "keyword":
        return isinstance(value, str)
    if kind == "geo_point":
        return (
            isinstance(value, dict)
            and set(value) == {"lat", "lon"}
            and all(isinstance(v, float) for v in value.values())
            and -90 <= value["lat"] <= 90
            and -180 <= value["lon"] <= 180
        )
    raise AssertionError(f"no check for ECS type {kind}")


def records() -> list[dict[str, Any]]:
    now = utc_now()
    answer = CymruAnswer(
        (64500, 64501), "EXAMPLE-AS, US", "81.2.69.0/24", "GB", "ripencc", "2001-05-01", now
    )
    geo = GeoAnswer(
        "GB", "United Kingdom", "London", 51.5142, -0.0931, 10, 64500, "Example", now, now
    )
    return [
        EnrichmentRecord("81.2.69.142", Status.ENRICHED, answer, geo, now).to_dict(),
        EnrichmentRecord("2001:db8::1", Status.SKIPPED).to_dict(),
        EnrichmentRecord("8.8.8.8", Status.PENDING, maxmind=GeoAnswer(asn=15169)).to_dict(),
        EnrichmentRecord(
            "1.1.1.1", Status.UNANNOUNCED, CymruAnswer((), None, None, "AU", "apnic", None, now)
        ).to_dict(),
        {"ip": "9.9.9.9", "status": "pending"},  # the filter's placeholder
    ]


def test_every_mapped_field_is_an_ecs_field() -> None:
    for field, _extract, _origin in ECS_FIELDS:
        assert field in DEFINITIONS, field


@pytest.mark.parametrize("record", records(), ids=lambda r: r["ip"])
def test_every_value_written_fits_its_ecs_type(record: dict[str, Any]) -> None:
    document = to_ecs(record)
    assert set(document) <= {"source", NAMESPACE}
    for field, value in flatten(document.get("source", {}), "source").items():
        assert field in DEFINITIONS, field
        assert valid(DEFINITIONS[field]["type"], value), (field, value)
    assert document["source"]["ip"] == record["ip"]
    assert document[NAMESPACE]["status"] == record["status"]


def test_what_ecs_has_no_field_for_is_kept_in_the_namespace() -> None:
    document = to_ecs(records()[0])
    custom = document[NAMESPACE]
    assert custom["asns"] == [64500, 64501] and custom["prefix"] == "81.2.69.0/24"
    assert custom["registry"] == "ripencc" and custom["allocated"] == "2001-05-01"
    assert document["source"]["as"]["number"] == 64500
    assert document["source"]["geo"]["location"] == {"lat": 51.5142, "lon": -0.0931}


def test_the_docs_table_is_the_code_table() -> None:
    text = DOCS.read_text()
    rows = re.findall(r"\* - ``(source\.[a-z_.]+)``\n\s+- ([a-z_]+)", text)
    assert rows == [(field, DEFINITIONS[field]["type"]) for field, _e, _o in ECS_FIELDS]


def test_every_exported_record_validates(tmp_path: Path) -> None:
    """A real run (loopback whois, a GeoIP file written here), then ``export --format ecs``."""
    import json

    from click.testing import CliRunner

    from cowrie_enrich_plugin.cli import main
    from cowrie_enrich_plugin.testing import BulkWhoisServer

    from .helpers import global_ips, write_log
    from .mmdb import write_asn, write_city

    ips = [*global_ips(300, seed=601, v6_share=0.2), "81.2.69.142", "10.0.0.1"]
    log = write_log(tmp_path / "cowrie.json", ips)
    options = ["--db", f"sqlite:///{tmp_path / 'e.db'}"]
    options += ["--geoip-city", str(write_city(tmp_path / "c.mmdb"))]
    options += ["--geoip-asn", str(write_asn(tmp_path / "a.mmdb"))]
    with BulkWhoisServer(seed=5) as server:
        host, port = server.address
        runner = CliRunner()
        done = runner.invoke(main, ["ingest", str(log), "--cymru", f"{host}:{port}", *options])
        assert done.exit_code == 0, done.output
    exported = runner.invoke(main, ["export", "--format", "ecs", *options])
    documents = [json.loads(line) for line in exported.output.splitlines() if line.startswith("{")]
    assert len(documents) == len(ips)
    located = 0
    for document in documents:
        for field, value in flatten(document.get("source", {}), "source").items():
            assert field in DEFINITIONS and valid(DEFINITIONS[field]["type"], value), (field, value)
        located += "location" in document["source"].get("geo", {})
    assert located >= 1  # the MaxMind test database places some of them
