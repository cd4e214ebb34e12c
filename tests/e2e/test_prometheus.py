"""A real Prometheus server (Debian's package) scrapes a long-lived run's /metrics."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from cowrie_enrich_plugin.testing import BulkWhoisServer

from ..helpers import clean_env, cowrie_enrich, global_ips, write_log

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Prometheus is not installed"),
]


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def query(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as answer:
        document = json.loads(answer.read())
    assert document["status"] == "success", document
    return list(document["data"]["result"])


def test_promql_over_the_scrape_counts_the_resolved_addresses(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    ips = global_ips(120, seed=901)
    live = tmp_path / "cowrie.json"
    write_log(live, ips)
    metrics_port, prometheus_port = _port(), _port()
    host, port = server.address
    env = {
        **clean_env(),
        "COWRIE_ENRICH_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "COWRIE_ENRICH_FLUSH_INTERVAL": "0.5",
    }
    run = subprocess.Popen(
        [
            cowrie_enrich(),
            "ingest",
            "--follow",
            str(live),
            "--db",
            f"sqlite:///{tmp_path / 'p.db'}",
            "--cymru",
            f"{host}:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: cowrie_enrich\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            try:
                result = query(prometheus_port, 'cowrie_enrich_resolved_total{job="cowrie_enrich"}')
            except OSError:
                result = []
            if result and float(result[0]["value"][1]) == len(ips):  # type: ignore[index]
                break
            time.sleep(0.5)
        assert result, "Prometheus never scraped the run"
        assert float(result[0]["value"][1]) == len(ips)  # type: ignore[index]
        up = query(prometheus_port, 'up{job="cowrie_enrich"}')
        assert float(up[0]["value"][1]) == 1  # type: ignore[index]
    finally:
        prometheus.terminate()
        run.terminate()
        prometheus.wait(timeout=30)
        run.wait(timeout=30)
