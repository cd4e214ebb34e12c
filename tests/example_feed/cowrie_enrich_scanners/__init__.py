"""Known internet scanners, as ``prefix;name`` lines: a trial third-party feed."""

from __future__ import annotations

from collections.abc import Mapping

from cowrie_enrich_plugin.feeds import Entry, Feed, FeedFormatError, Parsed, network


def read(bodies: Mapping[str, bytes]) -> Parsed:
    """``prefix;name`` a line; ``#`` starts a comment; the first line may say ``# version V``."""
    entries = []
    version = None
    for number, line in enumerate(bodies["url"].decode().splitlines(), 1):
        if line.startswith("# version "):
            version = line[len("# version ") :].strip()
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        prefix, sep, name = text.partition(";")
        if not sep:
            raise FeedFormatError(f"url: line {number}: no ';' between prefix and name")
        entries.append(Entry(network(prefix, f"url: line {number}"), name.strip() or None))
    return Parsed(entries, version)


FEED = Feed(
    name="scanners",
    kind="scanner",
    provider="example-scanners",
    urls={"url": "https://scanners.example/list.txt"},
    read=read,
    refresh=3600,
    terms="A trial list; no terms.",
)
