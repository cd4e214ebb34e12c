"""The filter's loop in-process: every line once, in order, enriched as one line at a time would be.

A stand-in plugin answers at once (or never, for some addresses), so the output is
known whatever the chunks the input arrives in: the batch-at-a-time path and the
careful line-by-line one must write the same bytes.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pluggy
import pytest

from cowrie_enrich_plugin import hookspecs
from cowrie_enrich_plugin.addresses import InvalidAddress, classify
from cowrie_enrich_plugin.hookspecs import PROJECT_NAME, hookimpl
from cowrie_enrich_plugin.hosts import stream
from cowrie_enrich_plugin.hosts.stream import StreamSummary, enrich_stream


class _Answering:
    """Records at once but for the ``silent`` addresses (canonical); refuses ``refused`` values."""

    def __init__(self, silent: set[str], refused: set[str]) -> None:
        self.silent, self.refused = silent, refused
        self.pm: pluggy.PluginManager | None = None

    @hookimpl
    def cowrie_ingest_start(self, config: Mapping[str, Any], pluginmanager: Any) -> None:
        self.pm = pluginmanager

    @hookimpl
    def cowrie_ingest_events(self, events: Sequence[Mapping[str, Any]]) -> Any:
        records, refused = [], []
        for index, event in enumerate(events):
            value = event["src_ip"]
            if value in self.refused:
                refused.append((index, "refused"))
            elif classify(value).ip not in self.silent:  # type: ignore[union-attr]
                records.append({"ip": classify(value).ip, "status": "enriched"})  # type: ignore[union-attr]
        if records:
            assert self.pm is not None
            self.pm.hook.cowrie_enrichment_ready(records=records)
        return refused or None

    @hookimpl
    def cowrie_ingest_end(self) -> Mapping[str, int]:
        return {}


def _expected(lines: list[bytes], silent: set[str], refused: set[str]) -> tuple[bytes, int]:
    """What the filter writes, one line at a time, and how many lines go out pending."""
    out, pending = [], 0
    for line in lines:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            event = None
        value = event.get("src_ip") if isinstance(event, dict) else None
        verdict = classify(value) if isinstance(value, str) else None
        if verdict is None or isinstance(verdict, InvalidAddress) or value in refused:
            out.append(line + b"\n")
            continue
        record = {"ip": verdict.ip, "status": "pending" if verdict.ip in silent else "enriched"}
        pending += verdict.ip in silent
        fragment = b'"enrich":' + json.dumps(record).encode()
        body = line.rstrip()  # the record goes after the last member, spaces kept before it
        if body.endswith(b"}") and "enrich" not in event:
            inner = line[:-1] if line.endswith(b"}") else body[:-1].rstrip()
            joiner = b"" if inner.rstrip().endswith(b"{") else b","
            out.append(inner + joiner + fragment + b"}\n")
        else:  # rebuilt whole: the event has the member already
            event.update(json.loads(b"{" + fragment + b"}"))
            out.append(json.dumps(event).encode() + b"\n")
    return b"".join(out), pending


def _lines(rng: random.Random, count: int, clean: bool) -> tuple[list[bytes], list[str]]:
    ips = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.9" for _ in range(20)
    ]
    ips += ["10.0.0.1", "::ffff:8.8.8.8", "2001:DB8::1", "2606:4700::1111"]
    odd = [
        b"not json",
        b"",
        b"[1, {}]",
        b'{"n": 1}',
        b'{"src_ip": 5}',
        b'{"src_ip": [1]}',
        b'{"src_ip": "not an address"}',
        b'{"src_ip": "8.8.8.8", "enrich": 1}',
        b'{"src_ip": "8.8.8.8", "\\u0065nrich": 1}',  # the same member, its name escaped
        b'{"src_ip": "8.8.8.8", "message": "enrich"}',
        b'{"src_ip": "8.8.8.8"}\r',
        b'{"src_ip": "8.8.8.8"}  ',
        b'{ "src_ip" : "8.8.4.4" , "a":{} }',
        b"{}",
        b"[" * 1500,  # too deep for either parser (the standard one raises RecursionError)
        b'{"src_ip": "8.8.8.8", "a": ' + b"[" * 1500 + b"]" * 1500 + b"}",
    ]
    lines = []
    for n in range(count):
        if not clean and rng.random() < 0.1:
            lines.append(rng.choice(odd))
        else:
            lines.append(json.dumps({"eventid": "e", "src_ip": rng.choice(ips), "n": n}).encode())
    return lines, ips


def _run(
    data: bytes, pieces: list[int], silent: set[str], refused: set[str], fmt: str = "native"
) -> Any:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(_Answering(silent, refused), name="answering")
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    got: list[bytes] = []

    def feed() -> None:
        offset = 0
        for size in pieces:
            os.write(source_w, data[offset : offset + size])
            offset += size
        os.write(source_w, data[offset:])
        os.close(source_w)

    def drain() -> None:
        got.append(b"".join(iter(lambda: os.read(sink_r, 1 << 20), b"")))

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for thread in threads:
        thread.start()
    with os.fdopen(source_r, "rb", buffering=0) as source, os.fdopen(sink_w, "wb") as sink:
        summary: StreamSummary = enrich_stream(source, sink, {}, pm=pm, hold=0.05, fmt=fmt)
    for thread in threads:
        thread.join()
    os.close(sink_r)
    return got[0], summary


@pytest.mark.parametrize("seed", range(12))
def test_the_output_is_each_line_once_as_one_at_a_time_would_write_it(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    lines, ips = _lines(rng, rng.choice([50, 3000, 20000]), clean=seed % 2 == 0)
    silent = {classify(ip).ip for ip in rng.sample(ips, rng.choice([0, 2]))}  # type: ignore[union-attr]
    refused = set(rng.sample(ips, rng.choice([0, 1])))
    if seed % 3 == 0:  # the oldest lines go out as they are when too many wait
        monkeypatch.setattr(stream, "MAX_WAITING", rng.choice([7, 500]))
    if seed % 4 >= 2:  # the standard library's parser, as without the fast extra
        monkeypatch.setattr(stream, "json_loads", json.loads)
    data = b"\n".join(lines) + b"\n"
    if seed % 4 == 1:  # the last line has no newline: it goes out with one
        data = data[:-1]
    pieces = [rng.choice([1, 5, 300, 5000, 70_000]) for _ in range(200)]
    out, summary = _run(data, pieces, silent, refused)
    expected, pending = _expected(lines, silent, refused)
    assert out == expected
    assert summary.lines == len(lines)
    assert summary.pending == pending
    assert summary.enriched + summary.pending + summary.passed_through == len(lines)


@pytest.mark.parametrize("seed", range(6))
def test_a_runaway_line_goes_through_whole_and_the_rest_is_enriched(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line longer than the limit goes out as it came (no newline put into it), in order."""
    rng = random.Random(seed)
    limit = rng.choice([64, 1000])
    monkeypatch.setattr(stream, "_MAX_LINE", limit)
    lines, _ips = _lines(rng, 400, clean=True)
    for _ in range(5):  # a long line that is JSON with an address, and one that is not
        at = rng.randrange(len(lines))
        long = (
            json.dumps({"src_ip": "8.8.8.8", "pad": "x" * rng.randint(limit, 5 * limit)}).encode()
            if rng.random() < 0.5
            else b"A" * rng.randint(limit, 5 * limit)
        )
        lines.insert(at, long)
    data = b"\n".join(lines) + b"\n"
    if seed % 2:
        data = data[:-1]  # the last line without its newline
    pieces = [rng.choice([1, 7, 300, 5000]) for _ in range(300)]
    out, summary = _run(data, pieces, set(), set())
    got = out.split(b"\n")[:-1]
    assert len(got) == len(lines)
    for line, written in zip(lines, got, strict=True):
        enriched = _expected([line], set(), set())[0][:-1]
        if len(line) > limit:  # through as it is, or enriched when it was read whole
            assert written in (line, enriched)
        else:
            assert written == enriched
    assert summary.lines == len(lines)
    assert summary.enriched + summary.pending + summary.passed_through == len(lines)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _value in pairs]
    assert len(names) == len(set(names)), f"duplicate member in {names}"
    return dict(pairs)


def test_ecs_never_writes_a_member_twice_and_keeps_the_events_own_source_fields() -> None:
    """#23 item 15 and #26 item 17: an escaped ``source`` name, and ``source.port``."""
    lines = [
        b'{"src_ip": "8.8.8.8", "\\u0073ource": {"port": 22}}',
        b'{"src_ip": "8.8.4.4", "source": {"port": 2222, "ip": "1.2.3.4"}}',
        b'{"src_ip": "1.1.1.1", "cowrie_enrich": 5}',
        b'{"src_ip": "9.9.9.9"}',
    ]
    out, _summary = _run(b"\n".join(lines) + b"\n", [1 << 20], set(), set(), fmt="ecs")
    events = [json.loads(line, object_pairs_hook=_no_duplicates) for line in out.splitlines()]
    assert [e["source"]["ip"] for e in events] == ["8.8.8.8", "8.8.4.4", "1.1.1.1", "9.9.9.9"]
    assert events[0]["source"]["port"] == 22 and events[1]["source"]["port"] == 2222
    assert events[2]["cowrie_enrich"]["status"] == "enriched"


def test_a_long_last_line_without_newline_gets_one_and_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream, "_MAX_LINE", 16)
    data = b'{"src_ip": "8.8.8.8"}\n' + b"A" * 40  # the last line: long, no newline
    out, summary = _run(data, [22, 10, 10, 10, 10], set(), set())
    assert out.endswith(b"\n" + b"A" * 40 + b"\n")
    assert summary.lines == 2 == summary.enriched + summary.passed_through


def test_a_line_too_deep_to_rebuild_goes_through_as_it_is() -> None:
    """An event that has ``enrich`` already is rebuilt; one nested too deep to write
    again goes out as it came, and the filter carries on."""
    deep = b'{"src_ip": "8.8.8.8", "enrich": 1, "a": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    data = deep + b'\n{"src_ip": "8.8.4.4"}\n'
    out, summary = _run(data, [len(data)], set(), set())
    lines = out.splitlines()
    assert len(lines) == 2 == summary.lines
    assert json.loads(lines[1])["enrich"]["ip"] == "8.8.4.4"
    assert lines[0] == deep or json.loads(lines[0])["enrich"]["ip"] == "8.8.8.8"


class _Down(_Answering):
    """Whois down: every address gets a pending record at once."""

    @hookimpl
    def cowrie_ingest_events(self, events: Sequence[Mapping[str, Any]]) -> Any:
        records = [{"ip": classify(e["src_ip"]).ip, "status": "pending"} for e in events]  # type: ignore[union-attr]
        assert self.pm is not None
        self.pm.hook.cowrie_enrichment_ready(records=records)


@pytest.mark.parametrize("plain", [True, False])
def test_events_with_a_pending_record_are_counted_pending_not_enriched(plain: bool) -> None:
    """With whois down the summary said most events were enriched: all went out pending."""
    ips = [f"198.51.{n // 250}.{n % 250 + 1}" for n in range(600)]
    events = [{"eventid": "cowrie.session.connect", "src_ip": ip} for ip in ips * 3]
    lines = [json.dumps(e).encode() + (b"" if plain else b" ") for e in events]
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(_Down(set(), set()), name="down")
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    writer = threading.Thread(
        target=lambda: (os.write(source_w, b"\n".join(lines) + b"\n"), os.close(source_w))
    )
    got: list[bytes] = []
    reader = threading.Thread(
        target=lambda: got.append(b"".join(iter(lambda: os.read(sink_r, 1 << 20), b"")))
    )
    writer.start()
    reader.start()
    with os.fdopen(source_r, "rb", buffering=0) as source, os.fdopen(sink_w, "wb") as sink:
        summary = enrich_stream(source, sink, {}, pm=pm, hold=0.05)
    writer.join()
    reader.join()
    assert summary.pending == len(events) and summary.enriched == 0, summary
    assert all(json.loads(line)["enrich"]["status"] == "pending" for line in got[0].splitlines())
