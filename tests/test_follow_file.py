"""The follower against what logrotate and operators do to a followed path."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cowrie_enrich_plugin.hosts.tail import FollowedFile


def _texts(followed: FollowedFile) -> list[bytes]:
    return [line.text for line in followed.read()]


def test_copytruncate_then_more_writes_than_before_loses_nothing(tmp_path: Path) -> None:
    """Truncated in place and written past the old end before the follower looks again."""
    live = tmp_path / "cowrie.json"
    live.write_bytes(b"".join(b'{"n": %d}\n' % n for n in range(200)))
    followed = FollowedFile(str(live))
    assert len(_texts(followed)) == 200
    with live.open("r+b") as handle:  # copytruncate: same inode, emptied, then written on
        handle.truncate(0)
    with live.open("ab") as handle:
        handle.write(b"".join(b'{"after": %d}\n' % n for n in range(400)))
    assert _texts(followed) == [b'{"after": %d}' % n for n in range(400)]
    assert _texts(followed) == []  # nothing read twice


def test_a_truncation_to_a_shorter_file_is_read_from_its_start(tmp_path: Path) -> None:
    live = tmp_path / "cowrie.json"
    live.write_bytes(b'{"n": 1}\n{"n": 2}\n')
    followed = FollowedFile(str(live))
    assert len(_texts(followed)) == 2
    live.write_bytes(b'{"x": 1}\n')
    assert _texts(followed) == [b'{"x": 1}']


def test_appends_are_not_mistaken_for_a_truncation(tmp_path: Path) -> None:
    live = tmp_path / "cowrie.json"
    live.write_bytes(b'{"n": 0}\n{"n": 1')  # a line half written
    followed = FollowedFile(str(live))
    assert _texts(followed) == [b'{"n": 0}']
    with live.open("ab") as handle:
        handle.write(b'}\n{"n": 2}\n')
    assert _texts(followed) == [b'{"n": 1}', b'{"n": 2}']


def test_a_path_that_cannot_be_opened_is_said_once_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder where the log should be, after a rotation: no exception, a warning, then on."""
    live = tmp_path / "cowrie.json"
    live.write_bytes(b'{"n": 0}\n')
    followed = FollowedFile(str(live))
    assert _texts(followed) == [b'{"n": 0}']
    live.rename(tmp_path / "cowrie.json.1")
    live.mkdir()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert _texts(followed) == []
    assert sum("cannot read" in r.getMessage() for r in caplog.records) == 1
    live.rmdir()
    live.write_bytes(b'{"n": 1}\n')
    assert _texts(followed) == [b'{"n": 1}']
