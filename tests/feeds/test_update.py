"""``cowrie-enrich feeds update|status`` against a loopback feed server, as an operator runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.testing import BulkWhoisServer, FeedServer, feeds_table, sample_feeds
from cowrie_enrich_plugin.testing.feed_server import SAMPLE_PATHS

from ..helpers import feeds_env
from . import feeds_toml

CLI = [sys.executable, "-m", "cowrie_enrich_plugin.cli"]


def _toml(section: dict[str, Any], db: Path) -> str:
    return feeds_toml({"db": f"sqlite:///{db}", **section})


@pytest.fixture
def served(tmp_path: Path, whois_server: BulkWhoisServer) -> Iterator[tuple[FeedServer, Path]]:
    """A feed server with the sample feeds, and a config file pointing at it."""
    with FeedServer(sample_feeds()) as server:
        config = tmp_path / "enrich.toml"
        host, port = whois_server.address
        section = {
            "feeds": feeds_table(server, tmp_path / "feeds"),
            "cymru_host": host,
            "cymru_port": port,
        }
        config.write_text(_toml(section, tmp_path / "c.db"))
        yield server, config


def _run(config: Path, *args: str, command: str = "feeds") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, command, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=feeds_env(),
    )


def _state(config: Path, feed: str) -> dict[str, Any]:
    state = json.loads((config.parent / "feeds" / feed / "state.json").read_text())
    assert isinstance(state, dict)
    return state


def test_update_installs_every_feed_then_downloads_nothing(served: tuple[FeedServer, Path]) -> None:
    server, config = served
    first = _run(config, "update")
    assert first.returncode == 0, first.stderr
    for name in SAMPLE_PATHS:
        assert f"{name}: installed" in first.stdout
        assert _state(config, name)["entries"] > 0
    assert _state(config, "aws")["version"] == "1764892801"  # its syncToken
    assert _state(config, "azure")["version"] == "301"  # its changeNumber
    bodies = server.count(200)
    # each URL once, and the Azure file its download page links
    assert bodies == sum(len(keys) for keys in SAMPLE_PATHS.values()) + 1
    assert ("GET", "/azure/ServiceTags_Public_20261201.json", 200) in server.requests
    second = _run(config, "update")
    assert second.returncode == 0, second.stderr
    assert server.count(200) == bodies, "the second update downloaded a body again"
    assert "spamhaus_drop: asked" in second.stdout  # at most one download an hour
    assert server.count(304) == bodies - 2  # everything else asked, conditionally
    status = _run(config, "status")
    assert status.returncode == 0
    assert "MISSING" not in status.stdout and "STALE" not in status.stdout


@pytest.mark.parametrize(
    ("feed", "path", "how", "body"),
    [
        ("aws", "/aws/ip-ranges.json", "html", None),
        ("google", "/google/cloud.json", "empty", None),
        ("oracle", "/oracle/public_ip_ranges.json", None, b'{"regions": [{"region": "x", "cid'),
        ("azure", "/azure/ServiceTags_Public_20261202.json", "truncate", None),
        ("azure", "/azure/details.aspx", None, b"<html>Sorry, this download is gone</html>"),
        ("firehol_level1", "/firehol/firehol_level1.netset", "500", None),
        ("cloudflare", "/cloudflare/ips-v6", "short", None),
        ("vultr", "/vultr/geofeed.csv", None, b"# nothing but a comment\n"),
        ("tor", "/tor/exit-addresses", None, b"<html><body>rate limited</body></html>"),
    ],
)
def test_a_bad_download_keeps_the_last_good_version_and_names_the_feed(
    served: tuple[FeedServer, Path], feed: str, path: str, how: str | None, body: bytes | None
) -> None:
    server, config = served
    assert _run(config, "update").returncode == 0
    good = _state(config, feed)["version"]
    changed = sample_feeds(2)
    server.put_all({p: b for p, b in changed.items() if p != path})
    if body is not None:
        server.put(path, body)
    server.misbehave(path, how)
    result = _run(config, "update", "--feed", feed)
    assert result.returncode == 75
    assert f"{feed}: failed, keeping {good}" in result.stderr
    assert feed in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert _state(config, feed)["version"] == good
    assert _state(config, feed)["last_error"]
    # the last good version is still what is used
    looked = _run(config, "3.5.141.7", command="lookup")
    record = json.loads(looked.stdout.splitlines()[0])
    assert record["classification"]["kinds"] == ["cloud"]


def test_a_changed_feed_is_used_by_the_next_run(served: tuple[FeedServer, Path]) -> None:
    server, config = served
    assert _run(config, "update").returncode == 0
    server.put_all(sample_feeds(3))
    assert _run(config, "update", "--feed", "aws").returncode == 0
    assert _state(config, "aws")["version"] == "1764892803"
    looked = _run(config, "18.3.1.1", command="lookup")
    record = json.loads(looked.stdout.splitlines()[0])
    (label,) = record["classification"]["labels"]
    assert (label["feed"], label["prefix"], label["version"]) == (
        "aws",
        "18.3.0.0/16",
        "1764892803",
    )


def test_an_unknown_feed_is_a_usage_error(served: tuple[FeedServer, Path]) -> None:
    _server, config = served
    result = _run(config, "update", "--feed", "nosuch")
    assert result.returncode == 2
    assert "nosuch" in result.stderr


def test_status_and_doctor_say_missing_before_the_first_update(
    served: tuple[FeedServer, Path],
) -> None:
    _server, config = served
    result = _run(config, "status")
    assert result.returncode == 0
    assert result.stdout.count("MISSING") == len(SAMPLE_PATHS)
    before = _run(config, command="doctor").stdout
    assert "WARN  feeds: no feed is installed" in before
    assert _run(config, "update").returncode == 0
    after = _run(config, command="doctor").stdout
    assert f"OK    feeds: {len(SAMPLE_PATHS)} installed and current" in after


def test_a_stale_feed_and_a_missing_one_are_named_by_status_doctor_and_a_batch_run(
    served: tuple[FeedServer, Path], tmp_path: Path
) -> None:
    _server, config = served
    assert _run(config, "update").returncode == 0
    # google last checked 15 days ago (its refresh is a day); tor's folder lost
    state = _state(config, "google")
    state["checked_at"] -= 15 * 86_400
    (config.parent / "feeds" / "google" / "state.json").write_text(json.dumps(state))
    shutil.rmtree(config.parent / "feeds" / "tor")
    status = _run(config, "status")
    assert status.returncode == 0
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert "STALE" in lines["google"] and "MISSING" in lines["tor"]
    assert sum("STALE" in line or "MISSING" in line for line in lines.values()) == 2
    doctor = _run(config, command="doctor").stdout
    assert "WARN  feeds: feed(s) not installed: tor; run `cowrie-enrich feeds update`" in doctor
    assert "WARN  feeds: feed google was last checked 15.0 days ago" in doctor
    assert "installed and current" not in doctor
    log = tmp_path / "cowrie.json"
    log.write_text(json.dumps({"eventid": "cowrie.session.connect", "src_ip": "3.5.141.7"}) + "\n")
    ingest = _run(config, str(log), "--output", "-", command="ingest")
    assert ingest.returncode == 0, ingest.stderr
    assert "not installed: tor" in ingest.stderr and "feed google was last checked" in ingest.stderr
    (record,) = [json.loads(line) for line in ingest.stdout.splitlines()]
    assert record["classification"]["kinds"] == ["cloud"]  # what is installed is used


def test_a_version_with_a_tenth_of_the_entries_is_refused_as_implausible(
    served: tuple[FeedServer, Path],
) -> None:
    server, config = served
    lines = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(200)]
    server.put("/firehol/firehol_level1.netset", ("\n".join(lines) + "\n").encode())
    assert _run(config, "update", "--feed", "firehol_level1").returncode == 0
    assert _state(config, "firehol_level1")["entries"] == 200
    server.put("/firehol/firehol_level1.netset", ("\n".join(lines[:19]) + "\n").encode())
    refused = _run(config, "update", "--feed", "firehol_level1")
    assert refused.returncode == 75
    assert "firehol_level1: failed, keeping" in refused.stderr
    assert "19 entries where the installed version has 200" in refused.stderr
    assert _state(config, "firehol_level1")["entries"] == 200
    server.put("/firehol/firehol_level1.netset", ("\n".join(lines[:20]) + "\n").encode())
    assert _run(config, "update", "--feed", "firehol_level1").returncode == 0  # a tenth is kept
    assert _state(config, "firehol_level1")["entries"] == 20


def test_a_mirror_password_is_sent_and_never_written(
    tmp_path: Path, whois_server: BulkWhoisServer
) -> None:
    secret = "s3cr3t-Pa55"
    with FeedServer(sample_feeds()) as server:
        url = server.url("/aws/ip-ranges.json").replace("http://", f"http://mirror:{secret}@")
        section = {"feeds": {"dir": str(tmp_path / "feeds"), "enabled": ["aws", "google"]}}
        section["feeds"]["aws"] = {"url": url}
        section["feeds"]["google"] = {"url": url.replace("127.0.0.1", "no-such-host.invalid")}
        config = tmp_path / "enrich.toml"
        config.write_text(_toml(section, tmp_path / "c.db"))
        result = _run(config, "update")
        status = _run(config, "status")
    assert "aws: installed" in result.stdout
    assert "google: failed" in result.stderr
    written = "".join(p.read_text() for p in (tmp_path / "feeds").rglob("*.json"))
    for text in (result.stdout, result.stderr, status.stdout, status.stderr, written):
        assert secret not in text


def test_a_damaged_state_or_a_lost_body_is_repaired_by_the_next_update(
    served: tuple[FeedServer, Path],
) -> None:
    _server, config = served
    assert _run(config, "update").returncode == 0
    folder = config.parent / "feeds"
    (folder / "aws" / "state.json").write_text("[]")
    for body in (folder / "google").glob("*.body"):
        body.unlink()
    status = _run(config, "status")
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "state.json is unreadable" in status.stdout
    result = _run(config, "update", "--feed", "aws", "--feed", "google")
    assert result.returncode == 0, result.stderr
    assert "aws: installed" in result.stdout and "google: installed" in result.stdout


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"refresh": float("nan")}, "refresh"),
        ({"aws": {"refresh": "x"}}, "refresh"),
        ({"enabled": "aws"}, "enabled"),
        ({"enabled": ["nosuch"]}, "nosuch"),
        ({"aws": {"nope": 1}}, "nope"),
        ({"spamhaus_drop": {"refresh": 60}}, "refresh"),
        ({"aws": {"url": "https://bob:S3cretPW@mirror.example/ip.json "}}, "url"),
    ],
)
def test_a_bad_feeds_setting_is_refused_naming_it(table: dict[str, Any], message: str) -> None:
    from cowrie_enrich_plugin.config import resolve_config
    from cowrie_enrich_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as caught:
        resolve_config({"feeds": table}, {})
    assert "S3cretPW" not in str(caught.value)
    assert "[plugins.enrich.feeds" in str(caught.value)


def test_the_optional_onionoo_part_can_be_left_out(served: tuple[FeedServer, Path]) -> None:
    from cowrie_enrich_plugin.config import resolve_config

    config = resolve_config({"feeds": {"tor": {"onionoo_url": ""}}}, {})
    assert list(config.feeds.urls("tor")) == ["url"]


def test_the_weekly_azure_file_is_found_on_its_page(
    served: tuple[FeedServer, Path], tmp_path: Path
) -> None:
    """Microsoft renames the file each week; the page says which is current."""
    server, config = served
    assert _run(config, "update", "--feed", "azure").returncode == 0
    assert _state(config, "azure")["urls"]["url"].endswith("/ServiceTags_Public_20261201.json")
    # the page unchanged: neither it nor the file is downloaded again
    before = server.count(200)
    assert _run(config, "update", "--feed", "azure").returncode == 0
    assert server.count(200) == before
    # next week's file, linked from the page: installed, and used by the next run
    server.put_all(sample_feeds(2))
    result = _run(config, "update", "--feed", "azure")
    assert "azure: installed 302" in result.stdout, result.stderr
    assert _state(config, "azure")["urls"]["url"].endswith("/ServiceTags_Public_20261202.json")
    assert not any("elsewhere" in path for _m, path, _s in server.requests)
    looked = _run(config, "40.72.0.1", command="lookup")  # in version 2 only
    (label,) = json.loads(looked.stdout.splitlines()[0])["classification"]["labels"]
    assert (label["feed"], label["version"]) == ("azure", "302")
    # a mirror set as ``url`` replaces the page, which is then not asked
    mirror = tmp_path / "mirror.toml"
    text = config.read_text().replace(
        f'page = "{server.url("/azure/details.aspx")}"',
        f'url = "{server.url("/azure/ServiceTags_Public_20261201.json")}"',
    )
    assert text != config.read_text()
    mirror.write_text(text)
    pages = sum(1 for _m, path, _s in server.requests if path == "/azure/details.aspx")
    result = _run(mirror, "update", "--feed", "azure")
    assert "azure: installed 301" in result.stdout, result.stderr
    assert sum(1 for _m, path, _s in server.requests if path == "/azure/details.aspx") == pages


def test_a_mirror_page_behind_a_password_is_read_with_it_and_never_with_the_mask(
    served: tuple[FeedServer, Path],
) -> None:
    """state.json keeps the linked file's URL masked; the next update asks with the password."""
    import base64

    server, config = served
    page = server.url("/azure/details.aspx")
    with_password = page.replace("http://", "http://mirror:s3cret-pw@", 1)
    config.write_text(config.read_text().replace(f'page = "{page}"', f'page = "{with_password}"'))
    for _ in range(2):
        result = _run(config, "update", "--feed", "azure")
        assert result.returncode == 0, result.stdout + result.stderr
    state = (config.parent / "feeds" / "azure" / "state.json").read_text()
    assert "s3cret-pw" not in state and "mirror:***@" in state
    right = "Basic " + base64.b64encode(b"mirror:s3cret-pw").decode()
    assert server.authorizations and set(server.authorizations) == {right}
