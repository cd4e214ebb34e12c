"""The host-side collector: the fast path over plain dicts agrees with the careful one.

The collector is driven with a transport that records what would go to the engine
(our own seam, not an outside system): what is compared is which addresses are handed
on, in which order, and which events are refused with which reason.
"""

from __future__ import annotations

import datetime as dt
import pickle
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowrie_enrich_plugin import clock
from cowrie_enrich_plugin.channel import NewAddresses, Records, SkippedAddresses, ToEngine
from cowrie_enrich_plugin.classification import (
    LABEL_KEYS,
    Classification,
)
from cowrie_enrich_plugin.collect import Collector
from cowrie_enrich_plugin.config import EnrichConfig
from cowrie_enrich_plugin.record import format_time
from cowrie_enrich_plugin.sightings import REMEMBER_SECONDS
from cowrie_enrich_plugin.transport import Transport


class Recording(Transport):
    """Keeps every message instead of sending it to a worker."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[ToEngine] = []

    def send(self, message: ToEngine) -> None:
        self.sent.append(message)


def pipeline() -> tuple[Collector, Recording]:
    transport = Recording()
    return Collector(EnrichConfig(), lambda records: None, transport), transport


VALUES = st.sampled_from(
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "10.0.0.1",
        "::ffff:8.8.4.4",
        "8.8.4.4",  # handed on already when its mapped spelling came first
        "9.9.9.9",
        "08.8.8.8",
        "8.8.8.8:22",
        "not an ip",
        "",
        None,
        7,
        1.5,
        True,
    ]
)
EVENT = st.one_of(
    st.fixed_dictionaries({"src_ip": VALUES}),
    st.just({"eventid": "cowrie.session.closed"}),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(EVENT, max_size=30), max_size=6))
def test_fast_path_equals_event_by_event(chunks: list[list[dict[str, Any]]]) -> None:
    fast, fast_sent = pipeline()
    careful, careful_sent = pipeline()
    for chunk in chunks:
        # The careful path (one event at a time), through the same Collector steps.
        refused, usable, skipped = careful._sightings._take_each(chunk)
        careful._collected(len(chunk), refused, usable, skipped)
        assert fast.ingest(chunk) == refused
    # New addresses are held back and sent on a timer, so how they are grouped into
    # messages depends on the machine's speed; which go, in which order, does not.
    fast._send_held()
    careful._send_held()
    for kind in (NewAddresses, SkippedAddresses):
        assert _in_order(fast_sent, kind) == _in_order(careful_sent, kind)
    assert fast.stats() == careful.stats()
    assert len(fast._sightings) == len(careful._sightings)


def test_the_run_remembers_each_address_once_whatever_its_family_or_range() -> None:
    # What a long-lived run's working_set bounds: an address handed on counts once,
    # IPv6 and non-global ones too; only a value that is not an address's own text
    # (another spelling, a refused value) is remembered beside the addresses.
    pipe, _ = pipeline()
    addresses = ["8.8.8.8", "2606:4700:4700::1111", "10.0.0.1", "fe80::1"]
    for _ in range(2):
        assert pipe.ingest([{"src_ip": ip} for ip in addresses]) is None
        assert len(pipe._sightings) == len(addresses)
    pipe.ingest([{"src_ip": "::ffff:8.8.4.4"}, {"src_ip": "8.8.4.4"}, {"src_ip": "8.8.8.8:22"}])
    assert len(pipe._sightings) == len(addresses) + 3  # 8.8.4.4, and two other texts


def _in_order(transport: Recording, kind: type[NewAddresses | SkippedAddresses]) -> list[str]:
    return [ip for message in transport.sent if isinstance(message, kind) for ip in message.ips]


def test_refusals_repeat_in_later_chunks_and_name_each_event() -> None:
    pipe, transport = pipeline()
    first = [{"src_ip": "8.8.8.8"}, {"src_ip": "8.8.8.8:22"}, {"eventid": "x"}]
    refused = pipe.ingest(first)
    assert refused is not None
    (one, port), (two, missing) = refused
    assert (one, two, missing) == (1, 2, "event has no src_ip")
    assert "port" in port
    second = [{"src_ip": "8.8.8.8:22"}, {"src_ip": "1.1.1.1"}, {"src_ip": "8.8.8.8:22"}]
    assert pipe.ingest(second) == [(0, port), (2, port)]
    assert pipe.ingest([{"src_ip": "8.8.8.8"}]) is None
    pipe.checkpoint()  # what a burst of chunks held back goes before the flush
    sent = [ip for m in transport.sent if isinstance(m, NewAddresses) for ip in m.ips]
    assert sent == ["8.8.8.8", "1.1.1.1"]


def test_events_that_are_not_plain_dicts_take_the_careful_path() -> None:
    pipe, transport = pipeline()
    events: list[Any] = [{"src_ip": "8.8.8.8"}, ["src_ip"], {"src_ip": ["8.8.8.8"]}]
    refused = pipe.ingest(events)
    assert refused is not None and [index for index, _ in refused] == [1, 2]
    assert transport.sent == [NewAddresses(["8.8.8.8"])]


def test_events_given_as_an_iterator_keep_their_refusals() -> None:
    pipe, transport = pipeline()
    events = iter([{"src_ip": "8.8.8.8"}, {"src_ip": "nope"}, {"src_ip": "1.1.1.1"}])
    refused = pipe.ingest(events)  # type: ignore[arg-type]
    assert refused is not None and [index for index, _ in refused] == [1]
    assert transport.sent == [NewAddresses(["8.8.8.8", "1.1.1.1"])]


def _record(ip: str, expires_in: float) -> dict[str, Any]:
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=expires_in)
    return {"ip": ip, "status": "enriched", "expires_at": format_time(expires)}


def _handed_on(transport: Recording) -> list[str]:
    handed = [ip for m in transport.sent if isinstance(m, NewAddresses) for ip in m.ips]
    transport.sent.clear()
    return handed


def test_a_long_lived_run_asks_again_for_a_record_that_expired_on_its_way() -> None:
    """A sighting while the answer was in transit was taken for it: the host asks again.

    News or a repeat alike (the engine served it fresh; it expired before the host had
    it). A record the engine says it served stale (its refresh waits out its backoff)
    is not asked again at once: the address waits ``retry_interval``.
    """
    transport = Recording()
    collector = Collector(EnrichConfig(lifecycle="long-lived"), lambda records: None, transport)
    ips = ["8.8.8.8", "1.1.1.1", "2.2.2.2", "9.9.9.9"]
    collector.ingest([{"src_ip": ip} for ip in ips])
    collector.checkpoint()
    assert _handed_on(transport) == ips
    fresh, news, repeat, stale = (
        _record("8.8.8.8", 3600),
        _record("1.1.1.1", -1),
        _record("2.2.2.2", -1),
        _record("9.9.9.9", -1),
    )
    transport.incoming.put(Records([fresh, news, repeat], None, repeats=("2.2.2.2",)))
    transport.incoming.put(Records([stale], None, repeats=("9.9.9.9",), stale=True))
    collector.ingest([{"src_ip": ip} for ip in ips])
    collector.checkpoint()
    assert sorted(_handed_on(transport)) == ["1.1.1.1", "2.2.2.2"]


def test_an_answer_that_keeps_arriving_expired_is_asked_again_only_once() -> None:
    """A TTL shorter than the way to the host: the second expired answer waits retry_interval."""
    transport = Recording()
    collector = Collector(EnrichConfig(lifecycle="long-lived"), lambda records: None, transport)
    collector.ingest([{"src_ip": "1.1.1.1"}])
    collector.checkpoint()
    assert _handed_on(transport) == ["1.1.1.1"]
    # two answers, each news (another expiry), each expired on arrival
    for ago, expected in ((20, ["1.1.1.1"]), (10, [])):
        record = _record("1.1.1.1", -ago)
        transport.incoming.put(Records([record], None))
        collector.ingest([{"src_ip": "1.1.1.1"}])
        collector.checkpoint()
        assert _handed_on(transport) == expected


def test_a_record_delivered_as_it_is_is_forgotten_at_its_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handed on again after the host forgot it, the same record comes back (no repeat
    named: ``redeliver``, or the store unreachable): its expiry still counts.
    """
    now = [time.time()]
    monkeypatch.setattr(clock, "wall", lambda: now[0])
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    transport = Recording()
    collector = Collector(EnrichConfig(lifecycle="long-lived"), lambda records: None, transport)
    record = _record("1.1.1.1", 2 * REMEMBER_SECONDS)
    for _ in range(2):  # the first sighting, and one after the host forgot everything
        collector.ingest([{"src_ip": "1.1.1.1"}])
        collector.checkpoint()
        assert _handed_on(transport) == ["1.1.1.1"]
        transport.incoming.put(Records([record], None))
        collector.checkpoint()
        now[0] += REMEMBER_SECONDS + 10
    now[0] -= 15  # past the record's expiry, not yet time to forget everything again
    collector.ingest([{"src_ip": "1.1.1.1"}])
    collector.checkpoint()
    assert _handed_on(transport) == ["1.1.1.1"]


def test_a_listed_section_crosses_as_its_text_and_is_delivered_as_values() -> None:
    """The engine sends a feed-listed address's section as it is; the host exports it."""
    label = {key: f"{key}-1" for key in LABEL_KEYS}
    section = Classification(["cloud"], [label])
    unlisted = Classification([], [])
    records = [
        {**_record(ip, 3600), "classification": value}
        for ip, value in (("8.8.8.8", section), ("1.1.1.1", unlisted.to_dict()))
    ]
    wire = pickle.dumps(Records(records, None))
    assert section.text.encode() in wire  # one string, not the labels value by value
    delivered: list[dict[str, Any]] = []
    transport = Recording()
    collector = Collector(EnrichConfig(lifecycle="long-lived"), delivered.extend, transport)
    collector.ingest([{"src_ip": "8.8.8.8"}, {"src_ip": "1.1.1.1"}])
    transport.incoming.put(pickle.loads(wire))
    collector.checkpoint()
    assert [r["classification"] for r in delivered] == [
        {"kinds": ["cloud"], "labels": [label]},
        {"kinds": [], "labels": []},
    ]
    assert all(type(r["classification"]) is dict for r in delivered)


@pytest.mark.parametrize("lifecycle", ["batch", "long-lived"])
def test_a_damaged_stored_section_is_delivered_empty_and_said(
    lifecycle: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored text that is not a section (a damaged row) fails no one: no labels, a warning."""
    delivered: list[dict[str, Any]] = []
    transport = Recording()
    collector = Collector(EnrichConfig(lifecycle=lifecycle), delivered.extend, transport)
    collector.ingest([{"src_ip": "8.8.8.8"}, {"src_ip": "1.1.1.1"}])
    damaged = ['{"kinds":["x"],"lab', "[]", '{"kinds":5,"labels":[]}', '{"kinds":[],"labels":[7]}']
    ips = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "8.8.4.4"]
    collector.ingest([{"src_ip": ip} for ip in ips[2:]])
    records = [
        {**_record(ip, 3600), "classification": Classification.from_text(text)}
        for ip, text in zip(ips, damaged, strict=True)
    ]
    transport.incoming.put(pickle.loads(pickle.dumps(Records(records, None))))
    collector.checkpoint()
    assert [r["classification"] for r in delivered] == [{"kinds": [], "labels": []}] * 4
    warned = [r.getMessage() for r in caplog.records if "not a section" in r.getMessage()]
    assert [message.split(":")[0] for message in warned] == ips
