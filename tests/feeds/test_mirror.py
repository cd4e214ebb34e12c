"""A fleet's sensors download the feeds from one host's ``mirror`` folder, not each from the publishers."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
