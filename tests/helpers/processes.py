"""Running the installed command as a user would: its path, a config file, a clean environment."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from cowrie_enrich_plugin.store import open_store
from cowrie_enrich_plugin.testing import BulkWhoisServer

from .data import host_config

__all__ = [
    "assert_complete",
    "clean_env",
    "cowrie_enrich",
    "feeds_env",
    "pip_installed",
    "write_config",
]


def cowrie_enrich() -> str:
    """The installed ``cowrie-enrich`` command beside this interpreter (or on PATH)."""
    script = Path(sys.executable).parent / "cowrie-enrich"
    return str(script) if script.exists() else shutil.which("cowrie-enrich") or "cowrie-enrich"


def write_config(path: Path, server: BulkWhoisServer, db_url: str, **extra: object) -> Path:
    """The same host config as ``host_config``, as a TOML file."""
    section = host_config(server, db_url, **extra)["plugins"]["enrich"]
    lines = ["[plugins]", 'enabled = ["enrich"]', "[plugins.enrich]"]
    lines += [
        f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value!r}"
        for key, value in section.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ingest(
    log: Path, config: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A batch ``cowrie-enrich ingest`` of ``log`` run to its end, its output captured."""
    return subprocess.run(
        [cowrie_enrich(), "ingest", str(log), "--config", str(config), *args],
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def clean_env() -> dict[str, str]:
    """The environment without the package's variables, and with the feeds off.

    With feeds on (the default) a long-lived host downloads due feeds from their
    publishers on its own; the suite never reaches them. Feeds tests use
    :func:`feeds_env`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRIE_ENRICH_")}
    env["COWRIE_ENRICH_FEEDS_ENABLED"] = ""
    return env


def feeds_env() -> dict[str, str]:
    """:func:`clean_env` with the feeds as the configuration says."""
    env = clean_env()
    del env["COWRIE_ENRICH_FEEDS_ENABLED"]
    return env


def assert_complete(db_url: str, server: BulkWhoisServer, ips: list[str]) -> None:
    store = open_store(db_url)
    records = store.get_records(ips)
    store.close()
    assert set(records) == set(ips)
    for ip in ips:
        record = records[ip].to_dict()
        assert record["status"] in ("enriched", "unannounced"), record
        expected = server.expected(ip)
        assert expected is not None
        for key, value in expected.items():
            assert record["cymru"][key] == value


@contextlib.contextmanager
def pip_installed(folder: Path, name: str, forget: Callable[[], None]) -> Iterator[None]:
    """``pip install`` the distribution in ``folder`` for this test process and its children.

    It goes to a folder of its own, put first on ``sys.path`` and ``PYTHONPATH`` while the
    test runs, not into the environment: the other test processes share that, and a
    source or feed appearing in their runs changes what they see. ``forget`` clears
    what caches the entry points (called after each step).
    """
    with tempfile.TemporaryDirectory(prefix=f"ce-{name}-") as target:
        install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        done = subprocess.run(
            [*install, "--no-build-isolation", "--target", target, str(folder)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([target, *filter(None, [before])])
        sys.path.insert(0, target)
        importlib.invalidate_caches()
        forget()
        try:
            yield
        finally:
            sys.path.remove(target)
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before
            importlib.invalidate_caches()
            forget()
