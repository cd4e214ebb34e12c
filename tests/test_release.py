"""The release path: the sdist and the wheel build, hold every module, and pass twine's check."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cowrie_enrich_plugin"


def test_the_sdist_and_the_wheel_hold_every_module_and_pass_twine(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    (sdist,) = tmp_path.glob("*.tar.gz")
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    modules = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*")
        if path.suffix == ".py" or path.name == "py.typed"
        if "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheel) as whl:
        assert modules <= set(whl.namelist()), sorted(modules - set(whl.namelist()))
        entry_points = next(n for n in whl.namelist() if n.endswith("entry_points.txt"))
        assert "cowrie-enrich = cowrie_enrich_plugin.command:run" in whl.read(entry_points).decode()
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {name.removeprefix(top + "/") for name in tar.getnames()}
    assert modules <= names, sorted(modules - names)
