"""Feeds: compiling a real-sized set, and classifying an address against every feed at once.

    python benchmarks/feeds.py [--shape overlapping|separate] [--prefixes 150000]
                               [--lookups 200000] [--rounds 5]

A synthetic set of the real one's size (about 150,000 prefixes over twelve feeds, a
quarter IPv6, nested, Tor exits as single addresses) is written as netset bodies,
read and compiled as ``feeds update`` does. Its shape:

- ``overlapping`` (the worst case): every feed lists prefixes around the same few
  hundred roots, so a listed address is listed by about seven feeds at once (6.8
  labels on average), which no real address is;
- ``separate`` (like the real feeds): each cloud and hosting provider holds its own
  space, its regions nested in its blocks and some prefixes listed under several
  services (as Azure's tags are); Spamhaus DROP and FireHOL level 1 overlap each
  other; Tor exits sit in hosting space.

Then the same addresses (half inside listed prefixes, a third IPv6) are classified,
in interleaved rounds:

- ``index``: this package's compiled index, the whole ``classification`` section;
- ``index-set``: the same, only the label set (the binary searches);
- ``pytricia-per-feed`` and ``radix-per-feed``: one trie per feed and family, asked
  in turn (the same answer as the index: per feed, the longest prefix);
- ``pytricia-one``: one trie of everything (a lower bound that answers less: the
  single longest prefix over all feeds);
- ``maxminddb``: the same prefixes written as a MaxMind database (``mmdb-writer``,
  one network's value kept where they overlap, about 12 s) and looked up with
  ``maxminddb``'s C reader, mapped: the issue's yardstick, a lookup in a compiled
  file, in the same run (its goal, 2 µs, is twice what this took on a normal day).
  Its value is the feed's name only: a lookup that answers far less than a section;
- ``maxminddb-labels``: the same, each prefix's value its own labels as the section
  shows them (``kinds`` and ``labels``, every key): an answer of the section's size
  and shape from a compiled file, decoded by C, though not always the same labels
  (where prefixes overlap, mmdb-writer keeps the network written last) (about 20 s
  more to write).

It also reports what opening each costs a process in private memory (the index is
mapped from its file, so its pages are shared between processes).
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cowrie_enrich_plugin.feeds.formats import Entry, read_netset  # noqa: E402
from cowrie_enrich_plugin.feeds.index import FeedContent, Index, compile_index  # noqa: E402

FEEDS = [
    "aws",
    "google",
    "azure",
    "oracle",
    "cloudflare",
    "digitalocean",
    "linode",
    "vultr",
    "hetzner",
    "tor",
    "spamhaus_drop",
    "firehol_level1",
]


def private_kib() -> int:
    """This process's anonymous resident memory (what is not shared with others)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def synthetic(total: int, rng: random.Random) -> dict[str, list[str]]:
    """Prefixes per feed, nested and overlapping, about a quarter IPv6."""
    per_feed: dict[str, list[str]] = {name: [] for name in FEEDS}
    roots4 = [rng.getrandbits(32) for _ in range(800)]
    roots6 = [(0x2000 | rng.getrandbits(12)) << 112 | rng.getrandbits(64) << 48 for _ in range(400)]
    for _ in range(total):
        feed = rng.choice(FEEDS)
        if feed == "tor":
            if rng.random() < 0.3:
                text = f"{ipaddress.IPv6Address(rng.choice(roots6) | rng.getrandbits(48))}/128"
            else:
                text = f"{ipaddress.IPv4Address(rng.choice(roots4) ^ rng.getrandbits(16))}/32"
        elif rng.random() < 0.25:
            length = rng.choice([29, 32, 36, 40, 44, 48, 56, 64])
            base = rng.choice(roots6) ^ (rng.getrandbits(40) << 64)
            text = str(ipaddress.IPv6Network((base >> (128 - length) << (128 - length), length)))
        else:
            length = rng.choice([12, 14, 16, 18, 20, 22, 23, 24, 24, 24, 26, 28, 32])
            base = rng.choice(roots4) ^ rng.getrandbits(20)
            text = str(ipaddress.IPv4Network((base >> (32 - length) << (32 - length), length)))
        per_feed[feed].append(text)
    return per_feed


def separate(total: int, rng: random.Random) -> dict[str, list[Entry]]:
    """Prefixes per feed as the real feeds lay them out (see the module's docstring)."""
    clouds = [name for name in FEEDS if name not in ("tor", "spamhaus_drop", "firehol_level1")]
    # each provider its own /8s (IPv4) and /24s (IPv6), not shared with any other
    space4 = rng.sample(range(1, 224), len(clouds) * 4)
    space6 = rng.sample(range(0x2000, 0x2FFF), len(clouds) * 8)
    blocks = {
        name: (
            [space4[4 * n + k] << 24 for k in range(4)],
            [space6[8 * n + k] << 112 for k in range(8)],
        )
        for n, name in enumerate(clouds)
    }
    bad = [b for b in range(1, 224) if b not in space4][:20]
    per_feed: dict[str, list[Entry]] = {name: [] for name in FEEDS}
    services = ["AMAZON", "EC2", "S3", "Storage", "Sql", "AzureCloud", "CLOUDFRONT"]
    for _ in range(total):
        feed = rng.choice(FEEDS)
        if feed == "tor":
            four, six = blocks[rng.choice(["hetzner", "digitalocean", "linode", "vultr"])]
            if rng.random() < 0.3:
                text = f"{ipaddress.IPv6Address(rng.choice(six) | rng.getrandbits(64))}/128"
            else:
                text = f"{ipaddress.IPv4Address(rng.choice(four) | rng.getrandbits(24))}/32"
        elif feed in ("spamhaus_drop", "firehol_level1"):
            length = rng.choice([16, 18, 20, 22, 24, 24])
            base = rng.choice(bad) << 24 | rng.getrandbits(24)
            text = str(ipaddress.IPv4Network((base >> (32 - length) << (32 - length), length)))
        elif rng.random() < 0.25:
            length = rng.choice([32, 36, 40, 44, 48, 56, 64])
            base = rng.choice(blocks[feed][1]) | rng.getrandbits(112)
            text = str(ipaddress.IPv6Network((base >> (128 - length) << (128 - length), length)))
        else:
            length = rng.choice([12, 14, 16, 18, 20, 22, 23, 24, 24, 24, 26, 28])
            base = rng.choice(blocks[feed][0]) | rng.getrandbits(24)
            text = str(ipaddress.IPv4Network((base >> (32 - length) << (32 - length), length)))
        if feed not in clouds:
            per_feed[feed].append(
                Entry(text, None, None, "SBL" + text[:3] if "drop" in feed else None)
            )
            continue
        block = int(ipaddress.ip_network(text).network_address) >> (96 if ":" in text else 20)
        region = f"region-{block % 30}"  # a region a /12 (IPv4) or a /32 (IPv6)
        for service in dict.fromkeys(
            rng.choice(services) for _ in range(1 + (rng.random() < 0.3) * 3)
        ):
            per_feed[feed].append(Entry(text, service, region))  # Azure's tags share prefixes
    return per_feed


def labelled(feed: FeedContent) -> dict[str, dict[str, object]]:
    """Each of the feed's prefixes and its section, as the index gives it for that prefix."""
    found: dict[str, dict[str, object]] = {}
    for entry in feed.entries:
        section = found.setdefault(entry.prefix, {"kinds": [feed.kind], "labels": []})
        section["labels"].append(  # type: ignore[attr-defined]
            {
                "feed": feed.name,
                "kind": feed.kind,
                "provider": feed.provider,
                "prefix": entry.prefix,
                "service": entry.service or "",  # a MaxMind database has no null
                "region": entry.region or "",
                "id": entry.ident or "",
                "version": feed.version,
                "fetched_at": feed.fetched_at,
            }
        )
    return found


def sample(per_feed: dict[str, list[str]], count: int, rng: random.Random) -> list[str]:
    every = [p for prefixes in per_feed.values() for p in prefixes]
    found = []
    for _ in range(count):
        if rng.random() < 0.5:
            net = ipaddress.ip_network(rng.choice(every))
            found.append(
                str(
                    net[rng.randrange(net.num_addresses)]
                    if net.num_addresses < 2**20
                    else net[rng.getrandbits(16)]
                )
            )
        elif rng.random() < 0.33:
            found.append(str(ipaddress.IPv6Address(0x2000 << 112 | rng.getrandbits(112))))
        else:
            found.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
    return found


def timed(run: object, ips: list[str]) -> float:
    start = time.process_time()
    run(ips)  # type: ignore[operator]
    return (time.process_time() - start) / len(ips) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("overlapping", "separate"), default="overlapping")
    parser.add_argument("--prefixes", type=int, default=150_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    rng = random.Random(2026)
    folder = Path(tempfile.mkdtemp(prefix="ce-feeds-bench-"))
    if options.shape == "overlapping":
        per_feed = synthetic(options.prefixes, rng)
        bodies = {name: ("\n".join(p) + "\n").encode() for name, p in per_feed.items()}
        start = time.perf_counter()
        entries = {name: read_netset({"url": body}).entries for name, body in bodies.items()}
        parsed = time.perf_counter() - start
    else:  # made as entries (services, regions): read time as the overlapping shape's
        entries = separate(options.prefixes, rng)
        per_feed = {name: list(dict.fromkeys(e.prefix for e in es)) for name, es in entries.items()}
        parsed = 0.0
    contents = [
        FeedContent(name, "kind-" + name, name, "v1", "2026-12-05T00:00:00Z", listed)
        for name, listed in entries.items()
    ]
    sections = {content.name: labelled(content) for content in contents}
    before = private_kib()
    start = time.perf_counter()
    compile_index(contents, folder / "bench.idx")
    compiled = time.perf_counter() - start
    total = sum(len(c.entries) for c in contents)
    v6 = sum(1 for c in contents for e in c.entries if ":" in e.prefix)
    print(f"{options.shape}: {total:,} entries ({v6:,} IPv6) in {len(contents)} feeds")
    print(
        f"read {parsed:.2f} s + compile {compiled:.2f} s = {parsed + compiled:.2f} s "
        f"(goal: under 10 s); index file {(folder / 'bench.idx').stat().st_size / 2**20:.1f} MiB"
    )
    del contents, entries

    base = private_kib()
    index = Index(folder / "bench.idx")
    index_private = private_kib() - base
    ips = sample(per_feed, options.lookups, rng)
    labels = [len(index.classify(ip).labels) for ip in ips if index.set_of(ip)]
    print(
        f"{len(labels) / len(ips):.0%} of the addresses listed, "
        f"{statistics.mean(labels):.1f} labels each on average"
    )
    index = Index(folder / "bench.idx")  # nothing kept from the count above

    def whole(xs: list[str]) -> None:
        for x in xs:  # each result dropped, as every contender's is
            index.classify(x)

    def set_only(xs: list[str]) -> None:
        for x in xs:
            index.set_of(x)

    def exported(xs: list[str]) -> None:
        for x in xs:  # what a delivered record does with it: stored as text, exported
            section = index.classify(x)
            section.text  # noqa: B018
            section.to_dict()

    contenders = {"index": whole, "index-set": set_only, "index+export": exported}
    private = {"index": index_private}
    try:
        import pytricia

        base = private_kib()
        tries = {}
        one4, one6 = pytricia.PyTricia(32), pytricia.PyTricia(128)
        for name, prefixes in per_feed.items():
            t4, t6 = pytricia.PyTricia(32), pytricia.PyTricia(128)
            for p in prefixes:
                (t6 if ":" in p else t4)[p] = name
                (one6 if ":" in p else one4)[p] = name
            tries[name] = (t4, t6)
        private["pytricia-per-feed + one"] = private_kib() - base

        def per_feed_tricia(xs: list[str]) -> None:
            for x in xs:
                family = 1 if ":" in x else 0
                [t[family].get_key(x) for t in tries.values()]

        def one_tricia(xs: list[str]) -> None:
            for x in xs:
                (one6 if ":" in x else one4).get_key(x)

        contenders["pytricia-per-feed"] = per_feed_tricia
        contenders["pytricia-one"] = one_tricia
    except ImportError:
        print("pytricia is not installed: pip install pytricia")
    try:
        import radix

        base = private_kib()
        trees = {}
        for name, prefixes in per_feed.items():
            tree = radix.Radix()
            for p in prefixes:
                tree.add(p)
            trees[name] = tree
        private["radix-per-feed"] = private_kib() - base

        def per_feed_radix(xs: list[str]) -> None:
            for x in xs:
                [tree.search_best(x) for tree in trees.values()]

        contenders["radix-per-feed"] = per_feed_radix
    except ImportError:
        print("py-radix is not installed: pip install py-radix")

    try:
        import maxminddb
        from mmdb_writer import MMDBWriter
        from netaddr import IPSet

        def mmdb(name: str, values: dict[str, dict[str, dict[str, object]]]) -> object:
            """A lookup in ``values`` (per feed, per prefix) written as a MaxMind database."""
            writer = MMDBWriter(
                ip_version=6, ipv4_compatible=True, database_type="feeds-bench", languages=["en"]
            )
            for prefixes in values.values():
                for prefix, value in prefixes.items():
                    writer.insert_network(IPSet([prefix]), value)
            writer.to_db_file(str(folder / name))
            reader = maxminddb.open_database(str(folder / name), maxminddb.MODE_MMAP_EXT)

            def lookup(xs: list[str]) -> None:
                for x in xs:
                    reader.get(x)

            return lookup

        names = {feed: {p: {"feed": feed} for p in prefixes} for feed, prefixes in per_feed.items()}
        contenders["maxminddb"] = mmdb("names.mmdb", names)  # type: ignore[assignment]
        contenders["maxminddb-labels"] = mmdb("labels.mmdb", sections)  # type: ignore[assignment]
    except (ImportError, ValueError):  # ValueError: maxminddb without its C extension
        print("mmdb-writer or maxminddb's C extension is missing: pip install -e '.[bench]'")

    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(options.rounds):  # interleaved: the machine's drift hits all alike
        for name, run in contenders.items():
            results[name].append(timed(run, ips))
    reference = statistics.median(results["index"])
    print(
        f"\nCPU per address, median of {options.rounds} interleaved rounds "
        f"({options.lookups:,} addresses, both families):"
    )
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median:6.2f} µs   {median / reference:5.2f}x index")
    if "maxminddb" in results:
        yardstick = statistics.median(results["maxminddb"])
        same = statistics.median(results["maxminddb-labels"])
        print(f"index / maxminddb: {reference / yardstick:.2f} (the goal: at most 2)")
        print(f"index / maxminddb-labels (an answer of the same size): {reference / same:.2f}")
    print(
        "\nprivate memory each adds to a process (KiB; the index's pages are the file's, shared):"
    )
    for name, kib in private.items():
        print(f"  {name:<24} {kib:>8,}")
    print(f"(before compiling: {before:,} KiB private)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
