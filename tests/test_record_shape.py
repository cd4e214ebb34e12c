"""The record's shape is declared once (``record.RECORD_KEYS``...): what makes, stores,
flattens and documents a record agrees with the declaration."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from cowrie_enrich_plugin.cli.writers import CSV_COLUMNS, flatten
from cowrie_enrich_plugin.ecs import ECS_FIELDS
from cowrie_enrich_plugin.feeds.formats import Entry
from cowrie_enrich_plugin.feeds.index import FeedContent, Index, compile_index
from cowrie_enrich_plugin.record import (
    LABEL_KEYS,
    RECORD_KEYS,
    SECTION_KEYS,
    CymruAnswer,
    EnrichmentRecord,
    GeoAnswer,
    Status,
)
from cowrie_enrich_plugin.store.rows import RECORD_COLUMNS, naive, record_values, row_record

DOCS = Path(__file__).resolve().parents[1] / "docs"
NOW = dt.datetime(2026, 12, 5, tzinfo=dt.timezone.utc)


def full_record(tmp_path: Path) -> EnrichmentRecord:
    """A record with every section filled, its labels from a real compiled index."""
    feed = FeedContent(
        "aws",
        "cloud",
        "aws",
        "1764892800",
        "2026-12-05T00:00:00Z",
        [Entry("198.51.100.0/24", "EC2", "us-east-1", None)],
    )
    compile_index([feed], tmp_path / "index")
    labels = Index(tmp_path / "index").classify("198.51.100.7")
    cymru = CymruAnswer((64500,), "EXAMPLE, US", "198.51.100.0/24", "US", "arin", "2001-05-01", NOW)
    geo = GeoAnswer("DE", "Germany", "Berlin", 52.5, 13.4, 20, 3320, "DTAG", NOW, NOW)
    return EnrichmentRecord("198.51.100.7", Status.ENRICHED, cymru, geo, NOW, (), labels)


def test_a_full_record_has_exactly_the_declared_keys(tmp_path: Path) -> None:
    out = full_record(tmp_path).to_dict()
    assert tuple(out) == RECORD_KEYS
    for section, keys in SECTION_KEYS.items():
        assert tuple(out[section]) == keys, section
    assert [tuple(label) for label in out["classification"]["labels"]] == [LABEL_KEYS]


def test_the_store_keeps_every_declared_field(tmp_path: Path) -> None:
    record = full_record(tmp_path)
    row = dict(zip(RECORD_COLUMNS, record_values(record, naive(NOW), naive), strict=True))
    assert row_record(row).to_dict() == record.to_dict()


def test_the_csv_columns_flatten_every_declared_field(tmp_path: Path) -> None:
    flat = flatten(full_record(tmp_path))
    assert tuple(flat) == CSV_COLUMNS
    assert all(flat[column] not in (None, "") for column in CSV_COLUMNS), flat


def test_the_docs_show_and_explain_the_declared_shape() -> None:
    text = (DOCS / "records.rst").read_text()
    example = text.split(".. code-block:: json", 1)[1].split("\n\n")[1]
    shown = json.loads(example)
    assert tuple(shown) == RECORD_KEYS
    for section, keys in SECTION_KEYS.items():
        assert tuple(shown[section]) == keys, section
    assert [tuple(label) for label in shown["classification"]["labels"]] == [LABEL_KEYS]
    explained = set(re.findall(r"^``([a-z_]+)``", text, flags=re.M))
    assert set(RECORD_KEYS) - {"as_name", "country"} <= explained  # those two with asn


def test_the_ecs_mapping_reads_only_declared_fields() -> None:
    for _field, _extract, where in ECS_FIELDS:
        for section, key in re.findall(r"\b([a-z]+)\.([a-z_]+)", where):
            assert key in SECTION_KEYS[section], where
        first = re.match(r"[a-z_]+", where)
        assert first is not None and first.group() in RECORD_KEYS, where
