"""The run's metrics and status where other programs read them: files, and /metrics."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults

from .helpers import clean_env, cowrie_enrich, global_ips, write_log


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, from the exposition format."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def test_a_cron_run_writes_its_metrics_and_status(server: BulkWhoisServer, tmp_path: Path) -> None:
    ips = global_ips(1200, seed=801)
    log = write_log(tmp_path / "cowrie.json", [*ips, "10.0.0.7"])
    host, port = server.address
    metrics, status = tmp_path / "enrich.prom", tmp_path / "status.json"
    done = subprocess.run(
        [
            cowrie_enrich(),
            "ingest",
            str(log),
            "--db",
            f"sqlite:///{tmp_path / 'm.db'}",
            "--cymru",
            f"{host}:{port}",
            "--batch-size",
            "500",
            "--metrics-file",
            str(metrics),
            "--status-file",
            str(status),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    values = samples(metrics.read_text())
    assert values["cowrie_enrich_resolved_total"] == len(ips)
    assert values["cowrie_enrich_addresses_seen_total"] == len(ips)
    assert values["cowrie_enrich_skipped_total"] == 1
    assert values["cowrie_enrich_whois_batches_total{outcome=answered}"] == 3
    assert values["cowrie_enrich_whois_batch_seconds_count"] == 3
    assert values["cowrie_enrich_circuit_breaker_open"] == 0
    assert values["cowrie_enrich_pending"] == 0
    document = json.loads(status.read_text())
    assert document["state"] == "done" and document["events"] == 3 * (len(ips) + 1)
    assert document["counters"]["resolved"] == len(ips)
    assert not list(tmp_path.glob(".cowrie-enrich-*"))  # no temporary file left behind


def test_the_status_file_is_rewritten_whole_while_the_run_goes_on(tmp_path: Path) -> None:
    ips = global_ips(3000, seed=802)
    log = write_log(tmp_path / "cowrie.json", ips)
    status = tmp_path / "status.json"
    states: list[str] = []
    with BulkWhoisServer(faults=Faults(latency_per_batch=0.8)) as server:
        host, port = server.address
        proc = subprocess.Popen(
            [
                cowrie_enrich(),
                "ingest",
                str(log),
                "--db",
                f"sqlite:///{tmp_path / 's.db'}",
                "--cymru",
                f"{host}:{port}",
                "--batch-size",
                "250",
                "--status-file",
                str(status),
            ],
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def watch() -> None:
            while proc.poll() is None:
                if status.exists():
                    states.append(json.loads(status.read_text())["state"])  # always whole
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        proc.wait(timeout=300)
        watcher.join()
    assert proc.returncode == 0
    assert "running" in states
    assert json.loads(status.read_text())["state"] == "done"


def test_a_long_lived_run_serves_metrics(server: BulkWhoisServer, tmp_path: Path) -> None:
    """``metrics_listen`` on a followed log: /metrics answers while the run goes on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    live = tmp_path / "cowrie.json"
    ips = global_ips(40, seed=803)
    write_log(live, ips)
    host, port = server.address
    env = {**clean_env(), "COWRIE_ENRICH_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}
    env["COWRIE_ENRICH_FLUSH_INTERVAL"] = "0.5"
    proc = subprocess.Popen(
        [
            cowrie_enrich(),
            "ingest",
            "--follow",
            str(live),
            "--db",
            f"sqlite:///{tmp_path / 'l.db'}",
            "--cymru",
            f"{host}:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        values: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
                    values = samples(answer.read().decode())
            except OSError:
                values = {}
            if values.get("cowrie_enrich_resolved_total") == len(ips):
                break
            time.sleep(0.3)
        assert values.get("cowrie_enrich_resolved_total") == len(ips), values
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    import re

    from cowrie_enrich_plugin.counters import RunCounters
    from cowrie_enrich_plugin.metrics import registry_for

    dashboard = json.loads(
        (Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json").read_text()
    )
    # a run that delivered a classified record: every family has a sample
    exposed = set(samples(_exposition(registry_for(lambda: RunCounters(kinds=(("cloud", 1),))))))
    names = {re.sub(r"\{.*", "", name) for name in exposed}
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"cowrie_enrich_[a-z_]+", target["expr"])
    }
    assert used and used <= names, used - names


def _exposition(registry: object) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()  # type: ignore[arg-type]


def test_a_metrics_port_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        live = tmp_path / "cowrie.json"
        live.write_text("")
        env = {**clean_env(), "COWRIE_ENRICH_METRICS_LISTEN": f"127.0.0.1:{port}"}
        done = subprocess.run(
            [
                cowrie_enrich(),
                "ingest",
                "--follow",
                str(live),
                "--db",
                f"sqlite:///{tmp_path / 'x.db'}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert "metrics_listen" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system with no space left (a small tmpfs, filled up)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    folder = tmp_path / "full"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        with contextlib.suppress(OSError), (folder / "filler").open("wb") as filler:
            while True:
                filler.write(b"x" * 4096)
                filler.flush()
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("command", ["ingest", "enrich"])
def test_side_outputs_that_cannot_be_written_never_stop_the_run(
    server: BulkWhoisServer, tmp_path: Path, full_folder: Path, command: str
) -> None:
    """A full disk under --status-file and --metrics-file: warned once each, every line out."""
    ips = global_ips(1500, seed=804)
    log = write_log(tmp_path / "cowrie.json", ips, events_per_ip=2)
    out = tmp_path / "out.jsonl"
    args = [
        cowrie_enrich(),
        command,
        *([str(log), "--output", str(out)] if command == "ingest" else []),
        "--db",
        f"sqlite:///{tmp_path / 'full.db'}",
        "--cymru",
        server.hostport,
        "--status-file",
        str(full_folder / "status.json"),
        "--metrics-file",
        str(full_folder / "enrich.prom"),
    ]
    done = subprocess.run(
        args,
        env=clean_env(),
        input=log.read_bytes() if command == "enrich" else None,
        capture_output=True,
        timeout=300,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "Traceback" not in stderr
    for name in ("status.json", "enrich.prom"):
        assert stderr.count(f"cannot write {full_folder / name}") == 1, stderr
    if command == "enrich":
        assert len(done.stdout.splitlines()) == 2 * len(ips)
    else:
        assert len(out.read_text().splitlines()) == len(ips)


def test_the_status_and_metrics_files_are_readable_alike(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """Both are written 0666 less the umask (node_exporter often runs as another user)."""
    log = write_log(tmp_path / "cowrie.json", global_ips(10, seed=805))
    status, metrics = tmp_path / "status.json", tmp_path / "enrich.prom"
    done = subprocess.run(
        [
            cowrie_enrich(),
            "ingest",
            str(log),
            "--db",
            f"sqlite:///{tmp_path / 'p.db'}",
            "--cymru",
            server.hostport,
            "--status-file",
            str(status),
            "--metrics-file",
            str(metrics),
        ],
        env=clean_env(),
        capture_output=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert done.returncode == 0, done.stderr
    assert status.stat().st_mode & 0o777 == metrics.stat().st_mode & 0o777 == 0o644


def test_idle_connections_to_metrics_listen_keep_no_thread_each() -> None:
    """#23 item 14: it runs inside Cowrie's process; 200 idle connections, a bounded pool."""
    import socket

    from cowrie_enrich_plugin.counters import RunCounters
    from cowrie_enrich_plugin.metrics import MAX_METRICS_CONNECTIONS, serve_metrics

    before = threading.active_count()
    server = serve_metrics("127.0.0.1:0", lambda: RunCounters(events=7))
    port = server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    try:
        time.sleep(0.5)
        assert threading.active_count() <= before + 1 + MAX_METRICS_CONNECTIONS
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 30
    while True:  # the slots come back as the idle ones close
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert samples(text.decode())["cowrie_enrich_events_total"] == 7
    server.shutdown()
    server.server_close()
