"""The Cowrie output plugin inside a real, daemonized Cowrie (from PyPI), over real SSH sockets.

Cowrie runs in a virtual environment of its own (as operators install it), with
this package installed there and enabled by the documented step
(``cowrie-enrich cowrie-install``). Its SSH listener speaks the haproxy PROXY
protocol, so each test connection says which source address it comes from.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults, FeedServer, sample_feeds

from ..helpers import global_ips

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.version_info < (3, 11), reason="Cowrie 3 needs Python 3.11"),
]

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("CE_TEST_COWRIE_VENV", ROOT / ".cache" / "cowrie-venv"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_python() -> str:
    """The Python for Cowrie's environment: one the user Cowrie runs as can execute.

    When the tests run as root, Cowrie runs as ``nobody``, who cannot reach a Python
    under ``/root`` (pyenv's): then the system's ``/usr/bin/python3`` is used.
    """
    if not RUN_AS:
        return sys.executable
    system = Path("/usr/bin/python3")
    probe = subprocess.run(
        [str(system), "-c", "import sys, venv, ensurepip; assert sys.version_info >= (3, 11)"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("running as root needs a system Python 3.11+ with venv for Cowrie")
    return str(system)


@pytest.fixture(scope="session")
def cowrie_venv() -> Path:
    """Cowrie from PyPI in its own environment, with this package installed and enabled."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "cowrie").exists():
        subprocess.run([_base_python(), "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "cowrie>=3,<4"],
            check=True,
            timeout=600,
        )
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
        check=True,
        timeout=600,
    )
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "pluggy",
            "SQLAlchemy",
            "geoip2",
            "tenacity",
            "click",
        ],
        check=True,
        timeout=600,
    )
    enable = subprocess.run(
        [str(VENV / "bin" / "cowrie-enrich"), "cowrie-install"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enable.returncode == 0, enable.stdout + enable.stderr
    assert "cowrie/output/enrich.py" in enable.stdout and "[output_enrich]" in enable.stdout
    return VENV


#: Cowrie refuses to run as root (as CI runs): then it runs as ``nobody``, as operators
#: run it as a user of its own.
RUN_AS: dict[str, int] = {"user": 65534, "group": 65534} if os.getuid() == 0 else {}


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A Cowrie state directory that the user Cowrie runs as can write."""
    folder = Path(tempfile.mkdtemp(prefix="cowrie-enrich-test-"))
    try:
        yield folder / "cowrie"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Cowrie:
    """One Cowrie state directory, started and stopped with ``cowrie start|stop``."""

    def __init__(self, venv: Path, state: Path, whois: BulkWhoisServer, **enrich: Any) -> None:
        self.venv, self.state, self.port = venv, state, _free_port()
        for folder in ("etc", "var/log/cowrie", "var/lib/cowrie/downloads", "var/run"):
            (state / folder).mkdir(parents=True, exist_ok=True)
        if RUN_AS:
            for path in (state.parent, *state.parent.rglob("*")):
                os.chown(path, RUN_AS["user"], RUN_AS["group"])
        host, port = whois.address
        settings = {
            "db": f"sqlite:///{state / 'enrich.db'}",
            "cymru_host": host,
            "cymru_port": port,
            "flush_interval": 2,
            "timeout": 3,
            "retries": 1,
            "shutdown_timeout": 3,
            **enrich,
        }
        lines = [
            "[honeypot]",
            "logtype = plain",
            "[ssh]",
            "enabled = true",
            f"listen_endpoints = haproxy:tcp:{self.port}:interface=127.0.0.1",
            "[telnet]",
            "enabled = false",
            "[output_jsonlog]",
            "enabled = true",
            "logfile = var/log/cowrie/cowrie.json",
            "[output_enrich]",
            "enabled = true",
            # the suite never reaches the feeds' publishers (a long-lived host would)
            *([] if "feeds_enabled" in settings else ["feeds_enabled ="]),
            *(f"{key} = {value}" for key, value in settings.items()),
        ]
        config = state / "etc" / "cowrie.cfg"
        config.write_text("\n".join(lines) + "\n")
        if RUN_AS:
            os.chown(config, RUN_AS["user"], RUN_AS["group"])
        self.log = state / "var" / "log" / "cowrie" / "cowrie.json"

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COWRIE", "PYTHON"))}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        env["TZ"] = "UTC"
        # The daemon keeps whatever it inherits open: its output goes to a file, so that
        # this command's pipes do not stay open for the daemon's life.
        with tempfile.TemporaryFile("w+") as output:
            done = subprocess.run(
                [str(self.venv / "bin" / "cowrie"), command],
                cwd=self.state,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
                **RUN_AS,  # type: ignore[arg-type]
            )
            output.seek(0)
            return subprocess.CompletedProcess(done.args, done.returncode, output.read(), "")

    def start(self) -> None:
        done = self.run("start")
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(self.diagnostics())

    def stop(self) -> float:
        """``cowrie stop`` (it only sends SIGTERM), then until the daemon is gone: seconds."""
        pid = int((self.state / "var" / "run" / "cowrie.pid").read_text())
        started = time.monotonic()
        done = self.run("stop")
        assert done.returncode == 0, done.stdout + done.stderr
        while time.monotonic() - started < 60:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        return time.monotonic() - started

    def knock(self, src: str) -> None:
        """An SSH connection from ``src`` (said in a PROXY header), up to the version."""
        family, dst = ("TCP6", "::1") if ":" in src else ("TCP4", "127.0.0.1")
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(f"PROXY {family} {src} {dst} 40000 {self.port}\r\n".encode())
            sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            sock.recv(256)
            time.sleep(0.2)

    def events(self, eventid: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        found = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [e for e in found if eventid is None or e.get("eventid") == eventid]

    def wait_for_results(self, ips: set[str], within: float) -> dict[str, list[dict[str, Any]]]:
        deadline = time.monotonic() + within
        while True:
            results: dict[str, list[dict[str, Any]]] = {}
            for event in self.events("cowrie.enrich.result"):
                results.setdefault(event["src_ip"], []).append(event)
            if ips <= set(results) or time.monotonic() > deadline:
                return results
            time.sleep(0.2)

    def diagnostics(self) -> str:
        text = self.state / "var" / "log" / "cowrie" / "cowrie.log"
        return text.read_text()[-4000:] if text.exists() else "(no cowrie.log)"


@pytest.fixture
def whois() -> Iterator[BulkWhoisServer]:
    with BulkWhoisServer(seed=77) as server:
        yield server


def test_results_arrive_as_cowrie_events(
    cowrie_venv: Path, whois: BulkWhoisServer, state_dir: Path
) -> None:
    honeypot = Cowrie(cowrie_venv, state_dir, whois)
    honeypot.start()
    try:
        ips = global_ips(4, seed=401)
        started = time.monotonic()
        for ip in ips:
            honeypot.knock(ip)
        results = honeypot.wait_for_results(set(ips), within=2 + 5)
        assert set(results) == set(ips), honeypot.diagnostics()
        assert time.monotonic() - started < 2 + 5 + 2  # flush_interval + 5 s, and the knocks
        connects = {e["src_ip"]: e for e in honeypot.events("cowrie.session.connect")}
        for ip in ips:
            (event,) = results[ip]  # one result per address
            assert event["session"] == connects[ip]["session"]
            record = event["enrich"]
            assert record["ip"] == ip and record["status"] == "enriched"
            expected = whois.expected(ip)
            assert expected is not None
            for key, value in expected.items():
                assert record["cymru"][key] == value
        # a second connection from a known address: no whois connection, no new result
        connections = whois.connections
        honeypot.knock(ips[0])
        time.sleep(2 + 2)
        assert whois.connections == connections
        assert len(honeypot.events("cowrie.enrich.result")) == len(ips)
        # our own events are not enriched again
        assert all(
            e.get("eventid") != "cowrie.enrich.result" or "enrich" in e for e in honeypot.events()
        )
    finally:
        honeypot.stop()


def test_a_hanging_whois_server_neither_blocks_cowrie_nor_its_stop(
    cowrie_venv: Path, state_dir: Path
) -> None:
    state = state_dir
    ips = global_ips(5, seed=402)
    with BulkWhoisServer(faults=Faults(hang_rate=1.0)) as hanging:
        honeypot = Cowrie(cowrie_venv, state, hanging, timeout=60, retries=3)
        honeypot.start()
        for ip in ips:
            honeypot.knock(ip)
        time.sleep(2 + 1)  # the batch went out and hangs
        took = honeypot.stop()
        assert took < 3 + 2, (took, honeypot.diagnostics())
        pending = {e["src_ip"] for e in honeypot.events("cowrie.enrich.result")}
        assert not pending or all(
            e["enrich"]["status"] == "pending" for e in honeypot.events("cowrie.enrich.result")
        )
    # the next start, with the server answering, resolves them and says so
    with BulkWhoisServer(seed=78) as answering:
        honeypot = Cowrie(cowrie_venv, state, answering)
        honeypot.start()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                resolved = {
                    e["src_ip"]
                    for e in honeypot.events("cowrie.enrich.result")
                    if e["enrich"]["status"] in ("enriched", "unannounced")
                }
                if resolved >= set(ips):
                    break
                time.sleep(0.3)
            assert resolved >= set(ips), honeypot.diagnostics()
        finally:
            honeypot.stop()


def test_a_setting_it_cannot_start_with_is_one_line_and_cowrie_runs_on(
    cowrie_venv: Path, whois: BulkWhoisServer, state_dir: Path
) -> None:
    honeypot = Cowrie(cowrie_venv, state_dir, whois, batch_size=0)  # out of range
    honeypot.start()
    try:
        honeypot.knock(global_ips(1, seed=403)[0])
        time.sleep(1.5)
        log = (state_dir / "var" / "log" / "cowrie" / "cowrie.log").read_text()
        said = [line for line in log.splitlines() if "enrich" in line]
        assert any("enrich: not started: " in line and "batch_size" in line for line in said), log
        ours = [line for line in log.splitlines() if "cowrie_enrich_plugin" in line]
        assert len(ours) == 1 and "not started" in ours[0], log  # no traceback of ours
        assert "Failed to load output engine" not in log
        assert honeypot.events("cowrie.session.connect")  # Cowrie runs on
        assert not honeypot.events("cowrie.enrich.result")
    finally:
        honeypot.stop()


def test_ecs_results_put_source_where_dashboards_look(
    cowrie_venv: Path, whois: BulkWhoisServer, state_dir: Path
) -> None:
    honeypot = Cowrie(cowrie_venv, state_dir, whois, result_format="ecs")
    honeypot.start()
    try:
        ip = global_ips(1, seed=404)[0]
        honeypot.knock(ip)
        results = honeypot.wait_for_results({ip}, within=2 + 5)
    finally:
        honeypot.stop()
    (event,) = results[ip]
    expected = whois.expected(ip)
    assert expected is not None
    assert event["source"]["ip"] == ip, event  # not under enrich.source
    assert event["source"]["as"]["number"] == expected["asn"]
    assert event["cowrie_enrich"]["status"] == "enriched" and "enrich" not in event


def test_the_plugin_downloads_the_feeds_itself_and_switches_to_a_new_version(
    cowrie_venv: Path, whois: BulkWhoisServer, state_dir: Path
) -> None:
    """No ``feeds update`` first: the daemon installs AWS's list, labels, then uses a new one."""
    with FeedServer(sample_feeds()) as feeds:
        honeypot = Cowrie(
            cowrie_venv,
            state_dir,
            whois,
            feeds_enabled="aws",
            feeds_dir=state_dir / "feeds",
            feeds_aws_url=feeds.url("/aws/ip-ranges.json"),
            feeds_aws_refresh=3,
        )
        honeypot.start()
        started = time.monotonic()
        try:
            state = state_dir / "feeds" / "aws" / "state.json"
            deadline = time.monotonic() + 30
            while not state.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert state.exists(), honeypot.diagnostics()
            time.sleep(2)  # the index is compiled and opened just after the install
            honeypot.knock("3.5.141.7")
            first = honeypot.wait_for_results({"3.5.141.7"}, within=2 + 5)
            (event,) = first["3.5.141.7"]
            assert event["enrich"]["classification"]["kinds"] == ["cloud"], event
            feeds.put_all(sample_feeds(2))  # 18.2.0.0/16 is AWS from version 2 on
            changed = time.monotonic()
            labelled: dict[str, Any] = {}
            n = 1
            while not labelled and time.monotonic() < changed + 60:
                ip = f"18.2.0.{n}"
                honeypot.knock(ip)
                results = honeypot.wait_for_results({ip}, within=2 + 5)
                section = results[ip][0]["enrich"]["classification"] if ip in results else {}
                if section.get("kinds") == ["cloud"]:
                    labelled = section
                n += 1
            assert labelled, honeypot.diagnostics()
            assert labelled["labels"][0]["version"] == "1764892802"
            # at most one look a refresh (3 s) and a few at the start, not one an address
            assert feeds.count() <= (time.monotonic() - started) / 3 + 3, feeds.count()
        finally:
            honeypot.stop()
