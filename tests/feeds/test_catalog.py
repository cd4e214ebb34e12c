"""Which third-party feeds join: a feed's name becomes a folder of ``dir`` and a config table."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowrie_enrich_plugin.feeds.catalog import BUILT_IN, installed_feeds

#: name, URL key: whether the feed joins
FEEDS = {
    ("ok_list2", "url"): True,
    ("my-list", "url_v4"): True,
    ("mirror", "url"): False,
    ("index", "url"): False,
    ("dir", "url"): False,
    ("enabled", "url"): False,
    ("refresh", "url"): False,
    ("Loud", "url"): False,
    ("up/../..", "url"): False,
    ("9lives", "url"): False,
    ("bad_key", "../url"): False,
    ("bad_key2", "refresh"): False,
}


@pytest.fixture
def distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution (its metadata on ``sys.path``) with a feed of each name.

    A name refused as such points at a module that fails to import: it must be judged
    before it is loaded.
    """
    feeds = "\n".join(
        f"F{i} = Feed(name={name!r}, kind='scanner', provider='x', "
        f"urls={{{key!r}: 'https://x.example/{i}'}}, read=read_netset)"
        for i, (name, key) in enumerate(FEEDS)
    )
    (tmp_path / "oddly_named_feeds.py").write_text(
        "from cowrie_enrich_plugin.feeds import Feed\n"
        "from cowrie_enrich_plugin.feeds.formats import read_netset\n" + feeds + "\n"
    )
    (tmp_path / "never_imported.py").write_text("raise RuntimeError('imported')\n")
    info = tmp_path / "oddly_named_feeds-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: oddly-named-feeds\nVersion: 1.0\n")
    points = "\n".join(
        f"{name} = {'oddly_named_feeds' if name.startswith(('ok', 'my', 'bad')) else 'never_imported'}:F{i}"
        for i, (name, _key) in enumerate(FEEDS)
    )
    (info / "entry_points.txt").write_text(f"[cowrie_enrich.feeds]\n{points}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installed_feeds.cache_clear()
    yield
    installed_feeds.cache_clear()


def test_a_feed_whose_name_or_keys_are_not_plain_is_left_out_with_a_warning(
    distribution: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        feeds = installed_feeds()
    joined = {name for (name, _key), joins in FEEDS.items() if joins}
    assert set(feeds) == set(BUILT_IN) | joined
    for (name, _key), joins in FEEDS.items():
        if not joins:
            assert f"feed {name} (" in caplog.text
    assert "does not load" not in caplog.text  # the refused names were never imported
    assert "none of dir, enabled, index, mirror, refresh" in caplog.text
    assert "URL key(s) '../url'" in caplog.text and "URL key(s) 'refresh'" in caplog.text
