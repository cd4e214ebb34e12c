"""Reading Cowrie logs: formats, order, streaming, and every kind of bad input named by file and line."""

from __future__ import annotations

import bz2
import gzip
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowrie_enrich_plugin.fastjson import json_loads
from cowrie_enrich_plugin.hosts.logreader import LogReader, expand_paths

from .helpers import shared_data


def events_of(reader: LogReader) -> list[dict[str, object]]:
    return [event for chunk in reader for event in chunk.events]


def test_plain_gzip_bz2_and_directory_order(tmp_path: Path) -> None:
    line = lambda n: (json.dumps({"n": n, "src_ip": "8.8.8.8"}) + "\n").encode()  # noqa: E731
    (tmp_path / "cowrie.json.2026-11-02.gz").write_bytes(gzip.compress(line(2)))
    (tmp_path / "cowrie.json.2026-11-01.bz2").write_bytes(bz2.compress(line(1)))
    (tmp_path / "cowrie.json").write_bytes(line(3))
    (tmp_path / "other.log").write_bytes(line(99))
    assert [Path(p).name for p in expand_paths([str(tmp_path)])] == [
        "cowrie.json.2026-11-01.bz2",
        "cowrie.json.2026-11-02.gz",
        "cowrie.json",
    ]
    assert [e["n"] for e in events_of(LogReader([str(tmp_path)]))] == [1, 2, 3]


def test_numbered_rotation_is_oldest_first(tmp_path: Path) -> None:
    for name in ("cowrie.json", "cowrie.json.1", "cowrie.json.2"):
        (tmp_path / name).write_text("{}\n")
    assert [Path(p).name for p in expand_paths([str(tmp_path)])] == [
        "cowrie.json.2",
        "cowrie.json.1",
        "cowrie.json",
    ]


def hostile_log(path: Path) -> dict[int, str]:
    """A log mixing good lines with every kind of bad one; returns line -> expected problem."""
    good = lambda ip: json.dumps({"eventid": "cowrie.session.connect", "src_ip": ip}).encode()  # noqa: E731
    lines: list[tuple[bytes, str | None]] = [
        (good("8.8.8.8"), None),
        (b'{"eventid": "cowrie.session.connect", "src_ip": "1.1.1', "not JSON"),
        (b"", "empty line"),
        (b"[1, 2, 3]", "a JSON list"),
        (b'"just a string"', "a JSON str"),
        (b"42", "a JSON int"),
        (b'{"src_ip": "9.9.9.9", "x": "\xff\xfe"}', "UTF-8"),
        (b'{"src_ip": "9.9.9.9\x00"}', "not JSON"),
        (b"[" * 1500, "not JSON"),  # the standard library's parser recursed on it
        (b'{"a": ' * 1500 + b"1" + b"}" * 1500, "not JSON"),
        (good("1.0.0.1"), None),
        (json.dumps({"src_ip": 134744072}).encode(), "not a string"),
        (json.dumps({"src_ip": ["8.8.4.4"]}).encode(), "list"),
        (json.dumps({"src_ip": None}).encode(), "null"),
        (json.dumps({"src_ip": ""}).encode(), "empty"),
        (json.dumps({"src_ip": "8.8.4.4:2222"}).encode(), "port"),
        (json.dumps({"src_ip": "fe80::1%eth0"}).encode(), "characters"),
        (json.dumps({"src_ip": "010.8.4.4"}).encode(), "not an IP address"),
        (json.dumps({"src_ip": " 8.8.4.4 "}).encode(), "characters"),
        (json.dumps({"src_ip": "8.8.4.4\nbegin\nverbose\n1.2.3.4\nend"}).encode(), "characters"),
        (json.dumps({"eventid": "no src_ip"}).encode(), "no src_ip"),
        (good("::ffff:4.4.4.4"), None),
        (good("10.0.0.1"), None),
        (good("2606:4700:4700::1111"), None),
    ]
    path.write_bytes(b"\n".join(raw for raw, _ in lines) + b"\n")
    return {n: why for n, (_, why) in enumerate(lines, start=1) if why is not None}


def test_bad_lines_are_named_and_the_rest_is_read(tmp_path: Path) -> None:
    expected = hostile_log(tmp_path / "cowrie.json")
    reader = LogReader([str(tmp_path / "cowrie.json")])
    events = events_of(reader)
    named = {p.line: p.reason for p in reader.problems}
    json_level = {n: why for n, why in expected.items() if n < 11}
    for line, why in json_level.items():
        assert why in named[line], (line, named.get(line))
    assert all(p.path.endswith("cowrie.json") for p in reader.problems)
    assert len(events) == 24 - len(json_level)
    assert reader.lines == 24


def test_deep_nesting_is_one_bad_line_with_either_parser(tmp_path: Path) -> None:
    """The standard library's parser raises RecursionError there; orjson a ValueError."""
    path = tmp_path / "cowrie.json"
    path.write_bytes(b'{"src_ip": "8.8.8.8"}\n' + b"[" * 1500 + b'\n{"src_ip": "1.1.1.1"}\n')
    for loads in (json.loads, json_loads):
        reader = LogReader([str(path)], loads=loads)
        assert [e["src_ip"] for e in events_of(reader)] == ["8.8.8.8", "1.1.1.1"]
        assert [p.line for p in reader.problems] == [2]
        assert reader.problems[0].reason.startswith("not JSON")


def test_truncated_gzip_corrupt_bz2_and_vanished_file(tmp_path: Path) -> None:
    data = b"".join(
        (json.dumps({"src_ip": f"8.8.{i // 256}.{i % 256}"}) + "\n").encode() for i in range(2000)
    )
    truncated = tmp_path / "cowrie.json.2026-11-01.gz"
    whole = gzip.compress(data)
    truncated.write_bytes(whole[: len(whole) // 2])
    corrupt = tmp_path / "cowrie.json.2026-11-02.bz2"
    corrupt.write_bytes(b"BZh9" + os.urandom(200))
    good = tmp_path / "cowrie.json"
    good.write_bytes(b'{"src_ip": "1.1.1.1"}\n')
    reader = LogReader([str(truncated), str(corrupt), str(tmp_path / "vanished.json"), str(good)])
    events = events_of(reader)
    reasons = [str(p) for p in reader.problems]
    assert any("truncated compressed file" in r and truncated.name in r for r in reasons)
    assert any(corrupt.name in r for r in reasons)
    assert any("vanished.json: file not found" in r for r in reasons)
    assert events[-1] == {"src_ip": "1.1.1.1"}
    assert 0 < len(events) - 1 < 2000  # what the truncated file held before the cut
    assert reader.bad_files == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "cowrie.json"
    path.write_text("{}\n")
    path.chmod(0)
    reader = LogReader([str(path)])
    assert events_of(reader) == [] and "cannot open" in str(reader.problems[0])


def test_ten_megabyte_line_is_refused_without_holding_it(tmp_path: Path) -> None:
    path = tmp_path / "cowrie.json"
    with path.open("wb") as handle:
        handle.write(b'{"src_ip": "8.8.8.8"}\n')
        handle.write(b'{"junk": "' + b"A" * (10 * 1024 * 1024) + b'"}\n')
        handle.write(b'{"src_ip": "1.1.1.1"}\n')
    reader = LogReader([str(path)])
    events = events_of(reader)
    assert [e["src_ip"] for e in events] == ["8.8.8.8", "1.1.1.1"]
    assert reader.problems[0].line == 2 and "longer than" in reader.problems[0].reason


def test_real_cowrie_logs_stream() -> None:
    folder = shared_data("cowrie-logs-2018")
    reader = LogReader([str(folder)])
    count = 0
    ips = set()
    for chunk in reader:
        count += len(chunk.events)
        ips.update(e.get("src_ip") for e in chunk.events)
    assert count == 102_686
    assert len(ips) == 1583
    assert reader.bad_lines == 0


@given(st.binary(max_size=3000))
@settings(max_examples=200)
def test_reader_never_raises(data: bytes) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        handle.write(data)
        handle.flush()
        reader = LogReader([handle.name], max_line=500)
        events = events_of(reader)
    assert all(isinstance(e, dict) for e in events)
    assert len(events) + reader.bad_lines == reader.lines
