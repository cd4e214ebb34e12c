"""Which third-party feeds join: a feed's name becomes a folder of ``dir``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowrie_enrich_plugin.feeds.catalog import BUILT_IN, installed_feeds

NAMES = ["mirror", "index", "Loud", "up/../..", "ok_list2", "9lives"]


@pytest.fixture
def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution (its metadata on ``sys.path``) with a feed of each name."""
    feeds = "\n".join(
        f"F{i} = Feed(name={name!r}, kind='scanner', provider='x', "
        f"urls={{'url': 'https://x.example/{i}'}}, read=read_netset)"
        for i, name in enumerate(NAMES)
    )
    (tmp_path / "oddly_named_feeds.py").write_text(
        "from cowrie_enrich_plugin.feeds import Feed\n"
        "from cowrie_enrich_plugin.feeds.formats import read_netset\n" + feeds + "\n"
    )
    info = tmp_path / "oddly_named_feeds-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: oddly-named-feeds\nVersion: 1.0\n")
    points = "\n".join(f"{name} = oddly_named_feeds:F{i}" for i, name in enumerate(NAMES))
    (info / "entry_points.txt").write_text(f"[cowrie_enrich.feeds]\n{points}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installed_feeds.cache_clear()
    yield
    installed_feeds.cache_clear()


def test_a_feed_whose_name_is_no_plain_folder_name_is_left_out_with_a_warning(
    distribution: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        feeds = installed_feeds()
    assert set(feeds) == set(BUILT_IN) | {"ok_list2"}
    for name in ("mirror", "index", "Loud", "up/../..", "9lives"):
        assert f"feed {name} (oddly_named_feeds:" in caplog.text
    assert "neither 'index' nor 'mirror'" in caplog.text
