"""The record's summary fields follow the documented precedence in every combination."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowrie_enrich_plugin import classification
from cowrie_enrich_plugin.classification import LABEL_KEYS, section_kinds
from cowrie_enrich_plugin.record import (
    Classification,
    CymruAnswer,
    EnrichmentRecord,
    GeoAnswer,
    Status,
    parse_time,
)

NOW = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.timezone.utc)
CYMRU = (
    None,
    CymruAnswer((), None, None, "NL", "ripencc", None, NOW),  # unannounced
    CymruAnswer((64500, 64501), "EXAMPLE, US", "198.51.0.0/16", "US", "arin", None, NOW),
)
GEO = (
    None,
    GeoAnswer(),
    GeoAnswer(country_iso_code="DE", asn=3320, as_org="Deutsche Telekom AG"),
)


def test_summary_fields_equal_the_merge_properties() -> None:
    for cymru, geo in itertools.product(CYMRU, GEO):
        record = EnrichmentRecord("198.51.100.7", Status.ENRICHED, cymru, geo, NOW)
        out = record.to_dict()
        assert (out["asn"], out["as_name"], out["country"]) == (
            record.merged_asn,
            record.merged_as_name,
            record.merged_country,
        )
        assert out["status"] == "enriched"
        assert out["expires_at"] == "2026-11-29T03:00:00Z"
    announced = EnrichmentRecord("198.51.100.7", Status.ENRICHED, CYMRU[2], GEO[2]).to_dict()
    assert (announced["asn"], announced["as_name"], announced["country"]) == (
        64500,
        "EXAMPLE, US",
        "DE",
    )
    assert announced["cymru"]["asn"] == 64500 and announced["cymru"]["asns"] == [64500, 64501]


def test_row_values_are_in_column_order_and_read_back_whole() -> None:
    from cowrie_enrich_plugin.store.rows import RECORD_COLUMNS, naive, record_values, row_record

    built = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    geo = GeoAnswer("DE", "Germany", "Berlin", 52.5, 13.4, 20, 3320, "DTAG", built, built)
    record = EnrichmentRecord("198.51.100.7", Status.ENRICHED, CYMRU[2], geo, NOW)
    row = dict(zip(RECORD_COLUMNS, record_values(record, naive(NOW), naive), strict=True))
    assert row["mm_city"] == "Berlin" and row["cymru_prefix"] == "198.51.0.0/16"
    assert row_record(row) == record


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-04T13:00:00Z",
        "2024-02-29T23:59:59Z",
        "2024-W01-1T00:00:00Z",
        "2024-01-01T00+01:00Z",
        "2024-01-01T000000.5Z",
        "2024-01- 1T00:00:00Z",
        "\uff12\uff10\uff12\uff14-01-01T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01 00:00:00Z",
    ],
)
def test_parse_time_reads_exactly_what_its_format_says(text: str) -> None:
    def strptime(value: str) -> dt.datetime | str:
        try:
            parsed = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return "refused"
        return parsed.replace(tzinfo=dt.timezone.utc)

    try:
        got: dt.datetime | str | None = parse_time(text)
    except ValueError:
        got = "refused"
    assert got == strptime(text)


def test_a_stored_classification_says_the_same_as_the_live_one_until_a_label_changes() -> None:
    label = {
        "feed": "aws",
        "kind": "cloud",
        "provider": "aws",
        "prefix": "18.2.0.0/16",
        "service": "EC2",
        "region": "eu-west-1",
        "id": None,
        "version": "1764892802",
        "fetched_at": "2026-12-05T00:00:00Z",
    }
    live = Classification(("cloud",), (label,))
    stored = Classification.from_text(live.text)
    assert stored is not live and stored.same_labels(live) and live.same_labels(stored)
    renewed = Classification(("cloud",), ({**label, "version": "1764979202"},))
    assert not stored.same_labels(renewed)  # same prefix, a newer version: relabelled
    assert not stored.same_labels(Classification((), ()))
    assert Classification((), ()).to_dict() == {"kinds": [], "labels": []}
    exported = live.to_dict()
    exported["labels"][0]["region"] = "changed by a hook"
    assert label["region"] == "eu-west-1"  # a consumer's copy, not the shared label


def test_a_listed_section_can_leave_as_it_is_an_unlisted_one_leaves_as_values() -> None:
    """What the engine sends: the listed section as it is (its text crosses), the rest dicts."""
    label = {key: "x" for key in LABEL_KEYS}
    listed = EnrichmentRecord(
        "8.8.8.8", Status.SKIPPED, classification=Classification(["x"], [label])
    )
    unlisted = EnrichmentRecord("1.1.1.1", Status.SKIPPED, classification=Classification([], []))
    stored = EnrichmentRecord(
        "1.1.1.2",
        Status.SKIPPED,
        classification=Classification.from_text('{"kinds":[],"labels":[]}'),
    )
    sent = listed.to_dict(classification_as_is=True)
    assert sent["classification"] is listed.classification
    assert section_kinds(sent["classification"]) == ("x",)
    assert listed.to_dict()["classification"] == {"kinds": ["x"], "labels": [label]}
    for record in (unlisted, stored):
        section = record.to_dict(classification_as_is=True)["classification"]
        assert section == {"kinds": [], "labels": []} and section_kinds(section) == []


@given(st.lists(st.lists(st.one_of(st.none(), st.text()), min_size=9, max_size=9), max_size=4))
def test_a_section_parses_to_what_the_standard_library_reads(
    values: list[list[str | None]],
) -> None:
    """The parser (orjson with the ``fast`` extra) reads our text as ``json`` does."""
    labels = [dict(zip(LABEL_KEYS, row, strict=True)) for row in values]
    text = Classification(sorted({str(label["kind"]) for label in labels}), labels).text
    assert Classification.from_text(text).to_dict() == json.loads(text)


def test_a_record_pickles_as_a_frozen_dataclass_does() -> None:
    """Its state is its fields' values in order, as a frozen slotted dataclass's is.

    A host and a worker on either side of the change from frozen read each other's.
    """

    @dataclasses.dataclass(frozen=True, slots=True)
    class Frozen:
        ip: str
        status: Status
        cymru: CymruAnswer | None = None
        maxmind: GeoAnswer | None = None
        expires_at: dt.datetime | None = None
        sections: tuple[tuple[str, object], ...] = ()
        classification: Classification | None = None

    record = EnrichmentRecord("192.0.2.1", Status.ENRICHED, CYMRU[2], None, NOW, (), None)
    old = Frozen("192.0.2.1", Status.ENRICHED, CYMRU[2], None, NOW, (), None)
    assert [f.name for f in dataclasses.fields(Frozen)] == [
        f.name for f in dataclasses.fields(EnrichmentRecord)
    ]
    assert record.__reduce_ex__(2)[2] == old.__reduce_ex__(2)[2]
    read = Frozen.__new__(Frozen)
    read.__setstate__(record.__reduce_ex__(2)[2])  # type: ignore[attr-defined]
    assert read == old
    back = EnrichmentRecord.__new__(EnrichmentRecord)
    back.__setstate__(old.__reduce_ex__(2)[2])  # type: ignore[attr-defined]
    assert back == record
    assert pickle.loads(pickle.dumps(record)) == record


def test_a_section_nested_too_deeply_is_damaged_with_either_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """orjson refuses it with a ValueError, the standard library with a RecursionError."""
    deep = '{"kinds":' + "[" * 200_000
    for parser in (classification.json_loads, json.loads):
        monkeypatch.setattr(classification, "json_loads", parser)
        section = Classification.from_text(deep)
        assert section.to_dict() == {"kinds": [], "labels": []} and section.damaged
