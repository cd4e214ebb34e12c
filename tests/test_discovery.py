"""The reference host's plugin discovery finds what importlib.metadata finds."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pluggy
import pytest

from cowrie_enrich_plugin import hookspecs
from cowrie_enrich_plugin.hookspecs import PROJECT_NAME
from cowrie_enrich_plugin.hosts.discovery import entry_points, load_entry_points


def _by_metadata(group: str, path: list[str] | None = None) -> list[tuple[str, str]]:
    """What pluggy's loader goes through: every distribution importlib.metadata finds."""
    dists = (
        importlib.metadata.distributions()
        if path is None
        else importlib.metadata.distributions(path=path)
    )
    return [(ep.name, ep.value) for dist in dists for ep in dist.entry_points if ep.group == group]


@pytest.mark.parametrize("group", [PROJECT_NAME, "console_scripts", "pytest11", "no.such.group"])
def test_the_installed_entry_points_are_those_importlib_metadata_finds(group: str) -> None:
    found = entry_points(group)
    assert found is not None
    assert found == _by_metadata(group)
    if group == PROJECT_NAME:
        assert ("enrich", "cowrie_enrich_plugin.plugin:plugin") in found


def _dist(folder: Path, name: str, version: str, entry_points_txt: str | None) -> None:
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"  # as wheels name it
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if entry_points_txt is not None:
        (info / "entry_points.txt").write_text(entry_points_txt)


def test_comments_spacing_other_groups_and_shadowed_distributions_read_alike(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _dist(
        first,
        "alpha_plugin",
        "1.0",
        "# a comment\n[console_scripts]\nalpha = alpha_plugin:main\n\n"
        "[cowrieprocessor]\n  alpha =   alpha_plugin.hooks : plugin [extra]\n"
        "beta=alpha_plugin:beta\n",
    )
    _dist(first, "gamma", "2.0", None)  # no entry points at all
    _dist(second, "alpha-plugin", "0.9", "[cowrieprocessor]\nalpha = old:plugin\n")  # shadowed
    _dist(second, "delta", "3.0", "[cowrieprocessor]\ndelta = delta.plugin:plugin\n")
    (second / "old.egg-info").write_text("Metadata-Version: 1.0\nName: old\n")  # a file
    path = [str(first), str(second), str(tmp_path / "absent")]

    found = entry_points(PROJECT_NAME, path)
    assert found is not None
    assert found == _by_metadata(PROJECT_NAME, path)
    assert sorted(found) == [  # the shadowed one is listed; loading takes the first
        ("alpha", "alpha_plugin.hooks : plugin [extra]"),
        ("alpha", "old:plugin"),
        ("beta", "alpha_plugin:beta"),
        ("delta", "delta.plugin:plugin"),
    ]


def test_an_archive_on_the_path_is_left_to_importlib_metadata(tmp_path: Path) -> None:
    archive = tmp_path / "plugins.zip"
    archive.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip archive
    assert entry_points(PROJECT_NAME, [str(archive)]) is None
    assert entry_points(PROJECT_NAME, [str(tmp_path / "old.egg")]) is None


def test_plugins_load_register_and_respect_blocked_and_taken_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "probe_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from cowrie_enrich_plugin.hookspecs import hookimpl\n"
        "class Holder:\n"
        "    class Probe:\n"
        "        @hookimpl\n"
        "        def cowrie_ingest_checkpoint(self):\n"
        "            return None\n"
        "    probe = Probe()\n"
        "blocked = object()\n"
    )
    _dist(
        tmp_path,
        "probe_plugin",
        "1.0",
        f"[{PROJECT_NAME}]\nprobe = probe_plugin_pkg:Holder.probe\nnope = probe_plugin_pkg:blocked\n",
    )
    later = tmp_path / "later"  # another copy of the plugin, further down the path
    _dist(later, "probe_plugin", "0.9", f"[{PROJECT_NAME}]\nprobe = probe_plugin_pkg:blocked\n")
    monkeypatch.syspath_prepend(str(later))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "probe_plugin_pkg", raising=False)

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.set_blocked("nope")
    pm.set_blocked("enrich")
    count = load_entry_points(pm, PROJECT_NAME)
    assert count == 1
    probe = pm.get_plugin("probe")
    assert type(probe).__name__ == "Probe"
    assert pm.get_plugin("enrich") is None and pm.get_plugin("nope") is None
    assert load_entry_points(pm, PROJECT_NAME) == 0  # taken names are not loaded twice
