"""The compiled index against a brute-force oracle: longest prefix per feed, families apart."""

from __future__ import annotations

import ipaddress
import json
import pickle
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.classification import Classification
from cowrie_enrich_plugin.feeds.formats import Entry, read_aws
from cowrie_enrich_plugin.feeds.index import MAGIC, FeedContent, Index, compile_index

FEEDS = ("alpha", "beta", "gamma", "delta")


def _random_prefixes(rng: random.Random) -> dict[str, list[Entry]]:
    """Nested and overlapping prefixes of several feeds, both families, with traps.

    Every IPv4 prefix also appears, in another feed, as the IPv6 prefix whose top 32
    bits spell it (and as ``::a.b.c.d``): a mixed-family trie that aliases them fails.
    """
    feeds: dict[str, list[Entry]] = {name: [] for name in FEEDS}
    bases4 = [rng.getrandbits(32) for _ in range(40)]
    bases6 = [rng.getrandbits(128) for _ in range(40)]
    for n in range(3000):
        feed = rng.choice(FEEDS)
        if rng.random() < 0.5:
            length = rng.randint(8, 32)
            base = rng.choice(bases4) ^ rng.getrandbits(max(0, 32 - rng.randint(4, 24)))
            net: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network(
                (base >> (32 - length) << (32 - length), length)
            )
            if rng.random() < 0.3:  # the trap: same bits at the top of IPv6
                top = int(net.network_address) << 96
                trap = ipaddress.IPv6Network((top, length))
                feeds[rng.choice(FEEDS)].append(Entry(str(trap), "trap", None, str(n)))
                mapped = ipaddress.IPv6Network((int(net.network_address), 96 + length))
                feeds[rng.choice(FEEDS)].append(Entry(str(mapped), "compat", None, str(n)))
        else:
            length = rng.choice([16, 20, 29, 32, 36, 44, 48, 56, 64, 96, 112, 127, 128])
            base = rng.choice(bases6) ^ rng.getrandbits(max(0, 128 - rng.randint(8, 100)))
            net = ipaddress.IPv6Network((base >> (128 - length) << (128 - length), length))
        # the same prefix listed twice sometimes, under another service (AWS does)
        copies = 2 if rng.random() < 0.1 else 1
        for copy in range(copies):
            feeds[feed].append(Entry(str(net), f"svc{copy}", rng.choice(["r1", None]), str(n)))
    feeds["alpha"].append(Entry("0.0.0.0/0", "all4"))
    feeds["beta"].append(Entry("::/0", "all6"))
    feeds["gamma"].append(Entry("255.255.255.255/32", "top4"))
    feeds["gamma"].append(Entry("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "top6"))
    return feeds


def _addresses(rng: random.Random, feeds: dict[str, list[Entry]], count: int) -> list[str]:
    nets = [ipaddress.ip_network(e.prefix) for entries in feeds.values() for e in entries]
    found: list[str] = []
    while len(found) < count:
        net = rng.choice(nets)
        first, last = int(net.network_address), int(net.broadcast_address)
        top = (1 << net.max_prefixlen) - 1
        pick = rng.choice(
            [first, last, max(first - 1, 0), min(last + 1, top), rng.randint(first, last)]
        )
        found.append(
            str(ipaddress.ip_address(pick) if net.version == 4 else ipaddress.IPv6Address(pick))
        )
        if rng.random() < 0.2:  # an IPv6 address whose top 32 bits spell an IPv4 address
            found.append(
                str(ipaddress.IPv6Address(rng.getrandbits(32) << 96 | rng.getrandbits(64)))
            )
        if rng.random() < 0.1:
            found.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
    return found[:count]


def _oracle(
    feeds: dict[str, list[Entry]], ip: str
) -> set[tuple[str, str, str | None, str | None, str | None]]:
    address = ipaddress.ip_address(ip)
    labels = set()
    for name, entries in feeds.items():
        holding = [
            (ipaddress.ip_network(e.prefix), e)
            for e in entries
            if ipaddress.ip_network(e.prefix).version == address.version
            and address in ipaddress.ip_network(e.prefix)
        ]
        if not holding:
            continue
        longest = max(net.prefixlen for net, _e in holding)
        for net, e in holding:
            if net.prefixlen == longest:
                labels.add((name, e.prefix, e.service, e.region, e.ident))
    return labels


class _FastOracle:
    """The oracle's rule by brute force per prefix length: hash tables, no intervals."""

    def __init__(self, feeds: dict[str, list[Entry]]) -> None:
        self.tables: dict[tuple[str, int], dict[tuple[int, int], list[Entry]]] = {}
        for name, entries in feeds.items():
            for e in entries:
                net = ipaddress.ip_network(e.prefix)
                table = self.tables.setdefault((name, net.version), {})
                table.setdefault((int(net.network_address), net.prefixlen), []).append(e)
        self.lengths = {
            key: sorted({length for _a, length in table}, reverse=True)
            for key, table in self.tables.items()
        }

    def __call__(self, ip: str) -> set[tuple[str, str, str | None, str | None, str | None]]:
        address = ipaddress.ip_address(ip)
        bits = address.max_prefixlen
        value = int(address)
        labels = set()
        for (name, version), table in self.tables.items():
            if version != address.version:
                continue
            for length in self.lengths[(name, version)]:
                key = (value >> (bits - length) << (bits - length) if length else 0, length)
                if key in table:
                    labels.update(
                        (name, e.prefix, e.service, e.region, e.ident) for e in table[key]
                    )
                    break
        return labels


def _compiled(tmp_path: Path, feeds: dict[str, list[Entry]]) -> Index:
    contents = [
        FeedContent(name, "kind-" + name, "prov-" + name, "v1", "2026-12-05T00:00:00Z", entries)
        for name, entries in feeds.items()
    ]
    path = tmp_path / "test.idx"
    compile_index(contents, path)
    return Index(path)


def _got(index: Index, ip: str) -> set[tuple[str, str, str | None, str | None, str | None]]:
    return {
        (str(label["feed"]), str(label["prefix"]), label["service"], label["region"], label["id"])
        for label in index.classify(ip).labels
    }


def test_the_fast_oracle_agrees_with_the_slow_one(tmp_path: Path) -> None:
    rng = random.Random(7)
    feeds = _random_prefixes(rng)
    fast = _FastOracle(feeds)
    for ip in _addresses(rng, feeds, 60):
        assert fast(ip) == _oracle(feeds, ip), ip


def test_a_hundred_thousand_addresses_match_the_oracle(tmp_path: Path) -> None:
    rng = random.Random(20261205)
    feeds = _random_prefixes(rng)
    oracle = _FastOracle(feeds)
    index = _compiled(tmp_path, feeds)
    differences = []
    ips = _addresses(rng, feeds, 100_000)
    for ip in ips:
        if _got(index, ip) != oracle(ip):
            differences.append(ip)
    assert differences == []
    assert sum(1 for ip in ips if ":" in ip) > 30_000
    assert sum(1 for ip in ips if ":" not in ip) > 30_000


def test_addresses_at_the_jump_tables_edges_match_the_oracle(tmp_path: Path) -> None:
    """A lookup starts from its top 16 bits' entry: the blocks around those edges.

    Wide prefixes span many 16-bit blocks that hold no start of their own (the answer
    lies before the block), narrow ones begin or end right at a block's edge.
    """
    feeds = {
        "wide": [Entry("10.0.0.0/8"), Entry("2a00::/12"), Entry("0.0.0.0/1")],
        "edges": [
            Entry("10.5.0.0/16"),
            Entry("10.6.255.255/32"),
            Entry("10.8.0.0/32"),
            Entry("10.9.0.5/32"),  # a block whose first start is inside it
            Entry("2a05:0:0:5::/64"),
            Entry("2a01::/16"),
            Entry("2a02:ffff:ffff:ffff::/64"),
            Entry("2a04::/128"),
            Entry("ffff::/16"),
        ],
        "ends": [Entry("255.255.0.0/16"), Entry("::/16"), Entry("0.0.0.0/16")],
    }
    oracle = _FastOracle(feeds)
    index = _compiled(tmp_path, feeds)
    ips = []
    for block in [0, 1, 2, 0x0A04, 0x0A05, 0x0A06, 0x0A07, 0x0A08, 0x0A09, 0x7FFF, 0x8000, 0xFFFF]:
        first = block << 16
        ips += [str(ipaddress.IPv4Address(n)) for n in (first, first + 1, first + 0xFFFF)]
        ips += [str(ipaddress.IPv4Address(first - 1))] if first else []
    ips += [f"10.9.0.{n}" for n in range(7)] + [f"2a05:0:0:{n}::1" for n in range(7)]
    for block in [0, 1, 0x2A00, 0x2A01, 0x2A02, 0x2A03, 0x2A04, 0x2A05, 0x2FFF, 0xFFFE, 0xFFFF]:
        first = block << 112
        ends = (first, first + 1, first + (1 << 112) - 1, first + (1 << 64), first - 1)
        ips += [str(ipaddress.IPv6Address(n)) for n in ends if 0 <= n < 1 << 128]
    assert len(ips) > 80
    assert [ip for ip in ips if _got(index, ip) != oracle(ip)] == []


def test_no_ipv6_address_matches_an_ipv4_prefix(tmp_path: Path) -> None:
    index = _compiled(tmp_path, {"v4only": [Entry("1.2.3.0/24"), Entry("0.0.0.0/0")]})
    for ip in ("102:300::", "102:304::1", "::1.2.3.4", "::ffff:1.2.3.4", "::", "::1"):
        assert index.classify(ip).labels == (), ip
    assert index.classify("1.2.3.4").labels[0]["prefix"] == "1.2.3.0/24"
    assert index.classify("9.9.9.9").labels[0]["prefix"] == "0.0.0.0/0"


def test_the_section_names_kinds_and_keeps_every_entry_of_the_longest_prefix(
    tmp_path: Path,
) -> None:
    feeds = {
        "aws": [
            Entry("3.5.140.0/22", "AMAZON", "ap-northeast-2"),
            Entry("3.5.140.0/22", "EC2", "ap-northeast-2"),
            Entry("3.0.0.0/8", "AMAZON", "GLOBAL"),
        ],
        "drop": [Entry("3.5.0.0/16", None, "arin", "SBL1")],
    }
    index = _compiled(tmp_path, feeds)
    section = index.classify("3.5.141.7")
    assert section.kinds == ("kind-aws", "kind-drop")
    assert sorted(str(label["service"]) for label in section.labels if label["feed"] == "aws") == [
        "AMAZON",
        "EC2",
    ]
    assert all(label["version"] == "v1" for label in section.labels)
    assert index.classify("4.4.4.4").to_dict() == {"kinds": [], "labels": []}


def test_a_compiled_section_is_the_text_its_labels_make(tmp_path: Path) -> None:
    """The joined text is the one JSON form: what values make, store and compare by."""
    rng = random.Random(11)
    odd = ['say "hi"', "back\\slash", "üñí€ode", "tab\there", None]
    feeds = {
        name: [
            Entry(prefix, rng.choice(odd), rng.choice(odd), rng.choice(odd))
            for prefix in ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "2001:db8::/32")
            for _ in range(rng.randint(1, 3))
        ]
        for name in ("one", "two", "three")
    }
    index = _compiled(tmp_path, feeds)
    for ip in ("10.9.9.9", "10.1.9.9", "10.1.2.3", "2001:db8::1", "11.0.0.1"):
        section = index.classify(ip)
        made = Classification(section.kinds, section.labels)
        assert made.text == section.text and made == section, ip
        assert json.loads(section.text) == section.to_dict() == made.to_dict()
        assert section.kinds == tuple(sorted({label["kind"] for label in section.labels}))
        assert pickle.loads(pickle.dumps(section)) == section
        assert Classification.from_text(section.text).same_labels(section)
    assert len(index.classify("10.1.2.3").labels) == sum(
        len({e for e in entries if e.prefix == "10.1.2.0/24"}) for entries in feeds.values()
    )


def test_the_section_text_is_pinned(tmp_path: Path) -> None:
    """The stored form, byte for byte: records stored before an upgrade are not relabelled."""
    feeds = {
        "b": [Entry("10.0.0.0/8", 'say "hi"\\', None, "ü€")],
        "a": [Entry("10.1.0.0/16", None, "eu-1"), Entry("10.1.0.0/16", "S3", "eu-1")],
    }
    index = _compiled(tmp_path, feeds)
    common = '"version":"v1","fetched_at":"2026-12-05T00:00:00Z"}'
    b = '{"feed":"b","kind":"kind-b","provider":"prov-b","prefix":"10.0.0.0/8",'
    b += '"service":"say \\"hi\\"\\\\","region":null,"id":"ü€",' + common
    a = '{"feed":"a","kind":"kind-a","provider":"prov-a","prefix":"10.1.0.0/16",'
    a1 = a + '"service":null,"region":"eu-1","id":null,' + common
    a2 = a + '"service":"S3","region":"eu-1","id":null,' + common
    assert index.classify("10.9.0.1").text == '{"kinds":["kind-b"],"labels":[' + b + "]}"
    assert (
        index.classify("10.1.0.1").text
        == '{"kinds":["kind-a","kind-b"],"labels":[' + b + "," + a1 + "," + a2 + "]}"
    )
    assert index.classify("11.0.0.1").text == '{"kinds":[],"labels":[]}'


def test_a_lone_surrogate_a_json_feed_spells_does_not_stop_compiling(tmp_path: Path) -> None:
    """``"\\udc00"`` is valid JSON but no UTF-8: the value is kept with a stand-in."""
    body = {"syncToken": "1", "prefixes": [], "ipv6_prefixes": []}
    body["prefixes"] = [{"ip_prefix": "3.0.0.0/8", "region": "eu-west-1", "service": "EC2\\udc00"}]
    parsed = read_aws({"url": json.dumps(body).replace("\\\\udc00", "\\udc00").encode()})
    content = FeedContent(
        "aws", "cloud", "AWS", parsed.version, "2026-12-05T00:00:00Z", parsed.entries
    )
    compile_index([content], tmp_path / "test.idx")
    labels = Index(tmp_path / "test.idx").classify("3.1.2.3").labels
    assert [label["service"] for label in labels] == ["EC2?"]


@pytest.mark.parametrize(
    ("section", "width"),
    [("v4_jump", "I"), ("v6_jump", "I"), ("set_heads", "I"), ("text_offsets", "Q")],
)
def test_an_index_whose_sections_disagree_is_refused_when_opened(
    tmp_path: Path, section: str, width: str
) -> None:
    index = _compiled(tmp_path, {"a": [Entry("10.0.0.0/8"), Entry("2a00::/16")]})
    index.close()
    path = tmp_path / "test.idx"
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    header = json.loads(bytes(data[len(MAGIC) + 4 : len(MAGIC) + 4 + size]))
    start, length = header["sections"][section]
    end = start + length - struct.calcsize(width)
    (last,) = struct.unpack_from("=" + width, data, end)
    struct.pack_into("=" + width, data, end, last + 1)  # its end: past what it points into
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a usable feed index"):
        Index(path)


def test_an_index_with_an_empty_section_is_refused_when_opened(tmp_path: Path) -> None:
    index = _compiled(tmp_path, {"a": [Entry("10.0.0.0/8")]})
    index.close()
    path = tmp_path / "test.idx"
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    at = len(MAGIC) + 4
    header = json.loads(bytes(data[at : at + size]))
    header["sections"]["text_offsets"][1] = 0  # where one entry at least must be
    shorter = json.dumps(header).encode()
    data[at : at + size] = shorter.ljust(size)  # JSON allows the trailing spaces
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a usable feed index"):
        Index(path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data, at, size: data[:at] + b"x" + data[at + 1 :],  # the header's JSON
        lambda data, at, size: b"CEFEEDS0" + data[len(MAGIC) :],  # another format
        lambda data, at, size: data[: at + size // 2],  # cut inside the header
        # the same length, so that only the heads change: not a list, then one too few
        lambda data, at, size: data.replace(
            b'"heads": [[], ["kind-a"]]', b'"heads": [{}, ["kind-a"]]'
        ),
        lambda data, at, size: data.replace(
            b'"heads": [[], ["kind-a"]]', b'"heads": [[]]' + b" " * 12
        ),
    ],
    ids=["header", "magic", "cut", "heads-shape", "heads-short"],
)
def test_a_damaged_index_is_refused_when_opened_as_not_usable(tmp_path: Path, damage: Any) -> None:
    """Refused with ``ValueError`` (the classifier keeps its index), never anything else."""
    index = _compiled(tmp_path, {"a": [Entry("10.0.0.0/8")]})
    index.close()
    path = tmp_path / "test.idx"
    data = path.read_bytes()
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    damaged = damage(data, len(MAGIC) + 4, size)
    assert damaged != data
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match="not"):
        Index(path)
