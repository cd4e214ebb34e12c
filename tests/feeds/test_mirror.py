"""A fleet's sensors download the feeds from one host's ``mirror`` folder, not each from the publishers."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.feeds.mirror import publish
from cowrie_enrich_plugin.testing import BulkWhoisServer, FeedServer, sample_feeds
from cowrie_enrich_plugin.testing.feed_server import SAMPLE_PATHS

from .test_update import _run, _state, _toml, served

__all__ = ["served"]  # the fixture, shared with test_update


class StaticServer:
    """A plain static web server over ``folder`` (Python's own), counting what it answered."""

    def __init__(self, folder: Path) -> None:
        answered: list[tuple[str, int]] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                answered.append((self.path, int(code)))

        self.answered = answered
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{path}"

    def __enter__(self) -> StaticServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _downloaded_keys(name: str) -> list[str]:
    """The URL keys whose files a feed installs (Azure's page only leads to its ``url``)."""
    return ["url"] if name == "azure" else list(SAMPLE_PATHS[name])


def _sensor(tmp_path: Path, whois: BulkWhoisServer, url: Any) -> Path:
    """A sensor's config whose every feed URL is ``url(feed, key)``."""
    folder = tmp_path / f"sensor-{len(list(tmp_path.glob('sensor-*')))}"
    folder.mkdir()
    feeds: dict[str, Any] = {"dir": str(folder / "feeds")}
    for name in SAMPLE_PATHS:
        feeds[name] = {key: url(name, key) for key in _downloaded_keys(name)}
    host, port = whois.address
    config = folder / "enrich.toml"
    section = {"feeds": feeds, "cymru_host": host, "cymru_port": port}
    config.write_text(_toml(section, folder / "c.db"))
    return config


def _versions(config: Path) -> dict[str, str]:
    folder = config.parent / "feeds"
    return {
        name: json.loads((folder / name / "state.json").read_text())["version"]
        for name in SAMPLE_PATHS
    }


@pytest.fixture
def mirrored(served: tuple[FeedServer, Path]) -> Iterator[tuple[FeedServer, Path, StaticServer]]:
    """The host that downloads from the publishers, and its ``mirror`` folder served as it is."""
    server, config = served
    assert _run(config, "update").returncode == 0
    mirror = config.parent / "feeds" / "mirror"
    # The first version an hour old: a web server's Last-Modified is in whole seconds, and
    # a feed changes at most hourly (here, within the second).
    hour_ago = time.time() - 3600
    for file in mirror.glob("*/*"):
        os.utime(file, (hour_ago, hour_ago))
    with StaticServer(mirror) as static:
        yield server, config, static


def test_every_installed_body_is_in_the_mirror_under_a_name_that_stays(
    mirrored: tuple[FeedServer, Path, StaticServer],
) -> None:
    server, config, _static = mirrored
    mirror = config.parent / "feeds" / "mirror"
    for name in SAMPLE_PATHS:
        state = _state(config, name)
        assert sorted(p.name for p in (mirror / name).iterdir()) == sorted(state["files"])
        for key, file in state["files"].items():
            assert (mirror / name / key).read_bytes() == (
                config.parent / "feeds" / name / file
            ).read_bytes()
    server.put_all(sample_feeds(3))
    assert _run(config, "update", "--feed", "aws").returncode == 0
    body = (config.parent / "feeds" / "aws" / _state(config, "aws")["files"]["url"]).read_bytes()
    assert (mirror / "aws" / "url").read_bytes() == body
    assert b"1764892803" in body
    assert len(list((config.parent / "feeds" / "aws").glob("*.body"))) == 1  # the old one went


def test_a_sensor_installs_from_the_mirror_then_asks_it_conditionally(
    mirrored: tuple[FeedServer, Path, StaticServer], tmp_path: Path, whois_server: BulkWhoisServer
) -> None:
    server, config, static = mirrored
    published = server.count(200)
    sensor = _sensor(tmp_path, whois_server, lambda name, key: static.url(f"{name}/{key}"))
    first = _run(sensor, "update")
    assert first.returncode == 0, first.stderr
    assert _versions(sensor) == _versions(config)
    assert server.count(200) == published, "the sensor downloaded from a publisher"
    bodies = sum(code == 200 for _path, code in static.answered)
    assert bodies == sum(len(_downloaded_keys(name)) for name in SAMPLE_PATHS)
    published = {p: p.stat() for p in (config.parent / "feeds" / "mirror").glob("*/*")}
    assert _run(config, "update").returncode == 0  # the host looks again: nothing changed
    for path, before in published.items():
        after = path.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), path
    second = _run(sensor, "update")
    assert second.returncode == 0, second.stderr
    assert sum(code == 200 for _path, code in static.answered) == bodies, "downloaded again"
    assert sum(code == 304 for _path, code in static.answered) == bodies - 2  # not Spamhaus's two
    # A changed feed reaches the sensor through the mirror, and labels its addresses.
    server.put_all(sample_feeds(3))
    assert _run(config, "update", "--feed", "aws").returncode == 0
    assert _run(sensor, "update", "--feed", "aws").returncode == 0
    assert _versions(sensor)["aws"] == "1764892803"
    looked = _run(sensor, "18.3.1.1", command="lookup")
    (label,) = json.loads(looked.stdout.splitlines()[0])["classification"]["labels"]
    assert (label["prefix"], label["version"]) == ("18.3.0.0/16", "1764892803")


def test_a_sensor_installs_from_a_mirror_on_a_shared_file_system(
    mirrored: tuple[FeedServer, Path, StaticServer], tmp_path: Path, whois_server: BulkWhoisServer
) -> None:
    _server, config, _static = mirrored
    mirror = config.parent / "feeds" / "mirror"
    sensor = _sensor(tmp_path, whois_server, lambda name, key: (mirror / name / key).as_uri())
    first = _run(sensor, "update")
    assert first.returncode == 0, first.stderr
    assert _versions(sensor) == _versions(config)
    second = _run(sensor, "update")
    assert second.returncode == 0, second.stderr
    assert "installed" not in second.stdout


def test_a_part_left_out_leaves_the_mirror_and_a_mirror_it_cannot_write_fails_no_install(
    served: tuple[FeedServer, Path],
) -> None:
    server, config = served
    assert _run(config, "update").returncode == 0
    mirror = config.parent / "feeds" / "mirror"
    assert (mirror / "tor" / "onionoo_url").is_file()
    text = config.read_text()
    part = next(line for line in text.splitlines() if line.startswith("onionoo_url = "))
    config.write_text(text.replace(part, 'onionoo_url = ""'))  # Tor's IPv6 part left out
    (mirror / "tor" / "someone's").mkdir()  # a folder put there is left alone
    left_out = _run(config, "update", "--feed", "tor")
    assert left_out.returncode == 0 and "cannot" not in left_out.stderr, left_out.stderr
    assert sorted(p.name for p in (mirror / "tor").iterdir()) == ["someone's", "url"]
    # mirror/aws is a file, not a folder: the new version is installed all the same
    shutil.rmtree(mirror / "aws")
    (mirror / "aws").write_text("in the way\n")
    server.put_all(sample_feeds(3))
    done = _run(config, "update", "--feed", "aws")
    assert done.returncode == 0, done.stderr
    assert _state(config, "aws")["version"] == "1764892803"
    assert "cannot publish" in done.stderr and str(mirror / "aws") in done.stderr


def test_where_hard_links_cannot_be_made_the_copy_keeps_the_body_s_time(tmp_path: Path) -> None:
    """The mirror on another file system (``/dev/shm``): copies, made once per version."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the tests' folder")
    installed = tmp_path / "aws"
    installed.mkdir()
    body = installed / "abc.body"
    body.write_bytes(b"version 1\n")
    os.utime(body, (1_700_000_000, 1_700_000_000))
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        target = Path(folder) / "mirror" / "url"
        publish(installed, target.parent, {"url": "abc.body"})
        first = target.stat()
        assert target.read_bytes() == b"version 1\n"
        assert first.st_ino != body.stat().st_ino and first.st_mtime == 1_700_000_000
        publish(installed, target.parent, {"url": "abc.body"})  # nothing changed
        assert (target.stat().st_ino, target.stat().st_mtime_ns) == (
            first.st_ino,
            first.st_mtime_ns,
        )
        newer = installed / "def.body"
        newer.write_bytes(b"version 2, longer\n")
        publish(installed, target.parent, {"url": "def.body"})
        assert target.read_bytes() == b"version 2, longer\n"
        assert target.stat().st_mtime_ns == newer.stat().st_mtime_ns
        assert sorted(p.name for p in target.parent.iterdir()) == ["url"]
