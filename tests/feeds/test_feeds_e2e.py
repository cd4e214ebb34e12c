"""Feeds in the hosts: the real logs, a running follower, a record seen again, a third-party feed."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.feeds.catalog import installed_feeds
from cowrie_enrich_plugin.testing import BulkWhoisServer, FeedServer, feeds_table, sample_feeds

from ..e2e.test_follow import delivered, event
from ..helpers import cowrie_enrich, feeds_env, pip_installed, shared_data
from . import feeds_toml

EXAMPLE = Path(__file__).resolve().parents[1] / "example_feed"


def write_config(path: Path, whois: BulkWhoisServer, feeds: dict[str, Any], **extra: Any) -> Path:
    """A host config with a feeds table (TOML written by hand: tables after keys)."""
    host, port = whois.address
    section = {
        "db": f"sqlite:///{path.parent / 'cache.db'}",
        "cymru_host": host,
        "cymru_port": port,
        "timeout": 5,
        "retries": 2,
        **extra,
        "feeds": feeds,
    }
    path.write_text(feeds_toml(section))
    return path


def installed(tmp_path: Path, whois: BulkWhoisServer, feed_server: FeedServer) -> Path:
    """A host config with every sample feed from ``feed_server``, installed by ``feeds update``."""
    config = write_config(
        tmp_path / "enrich.toml", whois, feeds_table(feed_server, tmp_path / "feeds")
    )
    assert run("feeds", "update", config=config).returncode == 0
    return config


def run(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cowrie_enrich(), *args, "--config", str(config)],
        env=feeds_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer(sample_feeds()) as server:
        yield server


def test_every_record_of_the_real_logs_is_classified_with_no_download_per_address(
    tmp_path: Path, whois_server: BulkWhoisServer, feed_server: FeedServer
) -> None:
    logs = shared_data("cowrie-logs-2018")
    config = installed(tmp_path, whois_server, feed_server)
    downloads = feed_server.count()
    out = tmp_path / "records.jsonl"
    done = run("ingest", str(logs), "--output", str(out), config=config)
    assert done.returncode == 0, done.stderr
    assert "feed" not in done.stderr  # every feed installed and fresh: nothing to say
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) > 50
    for record in records:
        section = record["classification"]
        assert isinstance(section, dict), record
        assert section["kinds"] == sorted({label["kind"] for label in section["labels"]})
    assert feed_server.count() == downloads, "a feed was fetched during the ingest"
    exported = run("export", "--format", "csv", config=config)
    assert "classification_kinds" in exported.stdout.splitlines()[0]


def test_a_record_seen_again_after_its_feed_changed_is_relabelled_without_asking_whois(
    tmp_path: Path, whois_server: BulkWhoisServer, feed_server: FeedServer
) -> None:
    config = installed(tmp_path, whois_server, feed_server)
    log = tmp_path / "cowrie.json"
    log.write_text(event("18.2.0.5", 1) + "\n")  # not listed by version 1 of the AWS sample
    first = run("ingest", str(log), "--output", "-", config=config)
    (before,) = [json.loads(line) for line in first.stdout.splitlines()]
    assert before["classification"] == {"kinds": [], "labels": []}
    feed_server.put_all(sample_feeds(2))  # 18.2.0.0/16 is AWS now
    assert run("feeds", "update", "--feed", "aws", config=config).returncode == 0
    exported = run("export", config=config)
    (kept,) = [json.loads(line) for line in exported.stdout.splitlines()]
    assert kept["classification"]["kinds"] == []  # built before: keeps what it was built with
    asked = whois_server.asked()
    second = run("ingest", str(log), "--output", "-", config=config)
    (after,) = [json.loads(line) for line in second.stdout.splitlines()]
    (label,) = after["classification"]["labels"]
    assert (label["feed"], label["prefix"], label["version"]) == (
        "aws",
        "18.2.0.0/16",
        "1764892802",
    )
    assert whois_server.asked() == asked, "whois was asked again for a relabelling"
    (stored,) = [json.loads(line) for line in run("export", config=config).stdout.splitlines()]
    assert stored["classification"] == after["classification"]


def _metric(text: str, name: str) -> dict[str, float]:
    """The samples of one counter in Prometheus's text format, by their ``kind`` label."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.partition("} ")
            found[labels.split('kind="', 1)[1].rstrip('"')] = float(value)
    return found


def test_the_labels_reach_every_output(
    tmp_path: Path, whois_server: BulkWhoisServer, feed_server: FeedServer
) -> None:
    """Export (JSON lines, CSV, ECS), the metric by kind and the ``enrich`` filter (native, ECS)."""
    from ..test_ecs import DEFINITIONS, flatten, valid

    config = installed(tmp_path, whois_server, feed_server)
    # AWS (IPv4 and IPv6), Cloudflare, none at all; an address seen twice
    ips = ["3.5.141.7", "104.16.1.1", "2600:1f14::9", "8.8.4.4", "3.5.141.7"]
    log = tmp_path / "cowrie.json"
    log.write_text("".join(event(ip, n) + "\n" for n, ip in enumerate(ips, 1)))
    metrics = tmp_path / "ingest.prom"
    out = tmp_path / "records.jsonl"
    done = run(
        "ingest", str(log), "--output", str(out), "--metrics-file", str(metrics), config=config
    )
    assert done.returncode == 0, done.stderr
    records = {r["ip"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == set(ips)
    aws = records["3.5.141.7"]["classification"]
    assert aws["kinds"] == ["cloud"]
    assert {(x["feed"], x["prefix"], x["service"]) for x in aws["labels"]} >= {
        ("aws", "3.5.140.0/22", "EC2")
    }
    assert records["104.16.1.1"]["classification"]["kinds"] == ["cdn"]
    assert records["8.8.4.4"]["classification"] == {"kinds": [], "labels": []}
    # one count per record delivered and kind it has; "none" for the unlisted
    expected: dict[str, float] = {}
    for record in records.values():
        for kind in record["classification"]["kinds"] or ["none"]:
            expected[kind] = expected.get(kind, 0) + 1
    assert _metric(metrics.read_text(), "cowrie_enrich_classified_total") == expected
    # export: the same labels in JSON lines, the kinds and providers in CSV, ECS's namespace
    exported = {
        r["ip"]: r for r in map(json.loads, run("export", config=config).stdout.splitlines())
    }
    assert {ip: r["classification"] for ip, r in exported.items()} == {
        ip: r["classification"] for ip, r in records.items()
    }
    table = run("export", "--format", "csv", config=config).stdout.splitlines()
    rows = {row["ip"]: row for row in csv.DictReader(table)}
    assert (
        rows["3.5.141.7"]["classification_kinds"],
        rows["3.5.141.7"]["classification_providers"],
    ) == ("cloud", "aws")
    assert rows["8.8.4.4"]["classification_kinds"] == ""
    ecs = run("export", "--format", "ecs", config=config).stdout.splitlines()
    for document in map(json.loads, ecs):
        ip = document["source"]["ip"]
        assert document["cowrie_enrich"]["classification"] == records[ip]["classification"]
        for field, value in flatten(document["source"], "source").items():
            assert field in DEFINITIONS and valid(DEFINITIONS[field]["type"], value), (field, value)
    # the enrich filter, both formats: the cache answers, with the labels
    for fmt, path in (("native", ("enrich",)), ("ecs", ("cowrie_enrich",))):
        filtered = subprocess.run(
            [cowrie_enrich(), "enrich", "--format", fmt, "--config", str(config)],
            input=log.read_text(),
            env=feeds_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert filtered.returncode == 0, filtered.stderr
        events = [json.loads(line) for line in filtered.stdout.splitlines()]
        assert len(events) == len(ips)
        for sent in events:
            section = sent[path[0]]["classification"]
            assert section == records[sent["src_ip"]]["classification"], (fmt, sent)


@pytest.mark.slow
def test_a_running_follower_uses_a_changed_feed_within_its_refresh(
    tmp_path: Path, whois_server: BulkWhoisServer, feed_server: FeedServer
) -> None:
    feeds = feeds_table(feed_server, tmp_path / "feeds")
    feeds["aws"]["refresh"] = 3
    config = write_config(tmp_path / "enrich.toml", whois_server, feeds, flush_interval=0.2)
    assert run("feeds", "update", config=config).returncode == 0
    live = tmp_path / "cowrie.json"
    live.write_text(event("18.2.0.5", 1) + "\n")
    out = tmp_path / "records.jsonl"
    follower = subprocess.Popen(
        [
            cowrie_enrich(),
            "ingest",
            "--follow",
            str(live),
            "--config",
            str(config),
            "--output",
            str(out),
        ],
        env=feeds_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "18.2.0.5" not in delivered(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert delivered(out)["18.2.0.5"]["classification"] == {"kinds": [], "labels": []}
        feed_server.put_all(sample_feeds(2))
        changed = time.monotonic()
        labelled: list[dict[str, Any]] = []
        with live.open("a") as handle:
            n = 2
            while not labelled and time.monotonic() < changed + 60:
                handle.write(event(f"18.2.0.{n}", n) + "\n")  # a new address each second
                handle.flush()
                time.sleep(1.0)
                n += 1
                labelled = [
                    r for r in delivered(out).values() if r["classification"]["kinds"] == ["cloud"]
                ]
        took = time.monotonic() - changed
        assert labelled, "no address was labelled by the new version within a minute"
        assert labelled[0]["classification"]["labels"][0]["version"] == "1764892802", took
        # within its refresh, give or take the keeper's look and the index's (a few seconds)
        assert took < 3 + 5 + 5 + 3, took
    finally:
        follower.send_signal(2)
        follower.communicate(timeout=60)
    assert follower.returncode == 0


@pytest.fixture
def scanners_installed() -> Iterator[None]:
    """``pip install`` the trial feed into this environment for the test."""
    with pip_installed(EXAMPLE, "cowrie-enrich-scanners", installed_feeds.cache_clear):
        yield


def test_a_third_party_feed_works_with_one_entry_point(
    tmp_path: Path, whois_server: BulkWhoisServer, feed_server: FeedServer, scanners_installed: None
) -> None:
    feed_server.put(
        "/scanners.txt", b"# version 2026-12-05\n198.51.100.0/24;census\n71.6.0.0/16;shodan\n"
    )
    feeds = feeds_table(feed_server, tmp_path / "feeds")
    feeds["scanners"] = {"url": feed_server.url("/scanners.txt")}
    config = write_config(tmp_path / "enrich.toml", whois_server, feeds)
    updated = run("feeds", "update", config=config)
    assert updated.returncode == 0, updated.stderr
    assert "scanners: installed 2026-12-05 (2 entries)" in updated.stdout
    assert "scanners" in run("feeds", "status", config=config).stdout
    looked = run("lookup", "71.6.1.2", config=config)
    record = json.loads(looked.stdout.splitlines()[0])
    assert record["classification"]["kinds"] == ["scanner"]
    (label,) = record["classification"]["labels"]
    assert (label["provider"], label["service"], label["version"]) == (
        "example-scanners",
        "shodan",
        "2026-12-05",
    )
