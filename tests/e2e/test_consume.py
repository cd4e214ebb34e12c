"""``cowrie-enrich consume`` against the real RabbitMQ server: in, enriched, out, acknowledged."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.testing import BulkWhoisServer

from ..helpers import clean_env, cowrie_enrich, global_ips, shared_data, write_config
from ..helpers.broker import (
    CowriePublisher,
    amqp_url,
    declare_output_queue,
    forget,
    is_consumed,
    names,
    read_all,
    ready_messages,
)

pytestmark = pytest.mark.broker


def start_consumer(url: str, config: Path, queues: dict[str, str], *args: str) -> Any:
    """One ``consume`` replica in a session of its own; the URL in its environment."""
    command = [cowrie_enrich(), "consume", "--config", str(config), *args]
    for key in ("exchange", "queue", "output_exchange"):
        command += [f"--{key.replace('_', '-')}", queues[key]]
    return subprocess.Popen(
        command,
        env={**clean_env(), "COWRIE_ENRICH_AMQP_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_queue(url: str, queue: str, procs: list[Any]) -> None:
    deadline = time.monotonic() + 60
    while not is_consumed(url, queue):
        assert time.monotonic() < deadline, [p.communicate(timeout=5) for p in procs]
        time.sleep(0.2)


def stop(proc: Any) -> tuple[int, str]:
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stdout + stderr


def without_enrichment(event: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in event.items() if k != "enrich"}, sort_keys=True)


def enriched(out: list[Any]) -> Counter[str]:
    """The events of ``out`` that came out with a final record, less that record."""
    final = [e for e in out if isinstance(e, dict) and e.get("enrich", {}).get("status")]
    return Counter(without_enrichment(e) for e in final if e["enrich"]["status"] != "pending")


def publish_raw(url: str, exchange: str, routing_key: str, body: bytes) -> None:
    """One message with any body (what some other publisher might send)."""
    from ..helpers.broker import connect

    connection = connect(url)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(exchange, routing_key, body)
    connection.close()


def test_events_come_out_enriched_and_acknowledged(server: BulkWhoisServer, tmp_path: Path) -> None:
    """One replica: every event out once, enriched, with the routing key it came with;
    a body that is not one JSON line goes out as it came; SIGTERM exits 0, the queue empty."""
    url = amqp_url()
    queues = names()
    declare_output_queue(url, queues["output_exchange"], queues["out_queue"])
    config = write_config(tmp_path / "c.toml", server, f"sqlite:///{tmp_path / 'c.db'}")
    proc = start_consumer(url, config, queues)
    try:
        wait_for_queue(url, queues["queue"], [proc])
        ips = global_ips(300, seed=901)
        events = [
            {"eventid": "cowrie.login.failed", "src_ip": ip, "session": f"s{n}", "n": n}
            for n, ip in enumerate(ips)
        ]
        publisher = CowriePublisher(url, queues["exchange"], events)
        publisher.start()
        publisher.join(60)
        odd = b"not json\nover two lines"
        publish_raw(url, queues["exchange"], "cowrie.odd", odd)
        out = read_all(url, queues["out_queue"], len(events) + 1, timeout=60)
    finally:
        code, said = stop(proc)
    assert code == 0, said
    assert "Traceback" not in said
    assert "301 message(s) consumed (0 redelivered), 301 published" in said, said
    by_n = {e["n"]: e for e in out if isinstance(e, dict) and "n" in e}
    assert len(out) == len(events) + 1 and sorted(by_n) == list(range(len(events)))
    for n, event in by_n.items():
        assert event["src_ip"] == ips[n] and event["session"] == f"s{n}"
        assert event["enrich"]["status"] in ("enriched", "unannounced"), event
        assert event["enrich"]["cymru"]["asn"] == server.expected(ips[n])["asn"]
    assert [e for e in out if e not in by_n.values()] == [odd.decode()]
    assert ready_messages(url, queues["queue"]) == 0  # all acknowledged
    forget(url, queues)


def test_an_output_no_queue_takes_is_not_acknowledged(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """Until a queue is bound to the output exchange, the events wait in the input queue."""
    url = amqp_url()
    queues = names()
    config = write_config(tmp_path / "c.toml", server, f"sqlite:///{tmp_path / 'c.db'}")
    proc = start_consumer(url, config, queues)
    try:
        wait_for_queue(url, queues["queue"], [proc])
        events = [
            {"eventid": "cowrie.session.connect", "src_ip": ip, "n": n}
            for n, ip in enumerate(global_ips(20, seed=903))
        ]
        publisher = CowriePublisher(url, queues["exchange"], events)
        publisher.start()
        publisher.join(60)
        time.sleep(3)  # published, returned, not acknowledged: again and again
        declare_output_queue(url, queues["output_exchange"], queues["out_queue"])
        out = read_all(url, queues["out_queue"], len(events), timeout=90)
    finally:
        code, said = stop(proc)
    assert code == 0, said
    assert "routes to no queue" in said, said
    assert {e["n"] for e in out} == set(range(len(events))), said[-3000:]
    assert ready_messages(url, queues["queue"]) == 0
    forget(url, queues)


def test_refused_credentials_are_one_line_without_the_password(tmp_path: Path) -> None:
    url = amqp_url()
    wrong = url.replace("guest:guest@", "guest:hunter2-secret@")
    server_less = tmp_path / "c.toml"
    server_less.write_text('[plugins]\nenabled = ["enrich"]\n')
    proc = start_consumer(wrong, server_less, names())
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stdout + stderr
    assert "refused the credentials" in stderr and "guest:***@" in stderr, stderr
    assert "hunter2" not in stdout + stderr
    assert "Traceback" not in stderr


def _real_events(count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in sorted(shared_data("cowrie-logs-2018").glob("*.gz")):
        with gzip.open(path, "rt") as handle:
            events.extend(json.loads(line) for line in handle if line.strip())
        if len(events) >= count:
            return events[:count]
    return events


@pytest.mark.slow
def test_three_replicas_a_kill_and_a_broker_restart_lose_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    """20,000 real events; three replicas on one PostgreSQL; one SIGKILLed mid-stream and
    the broker restarted: every event out enriched, each address asked once, all acked."""
    if shutil.which("rabbitmqctl") is None or os.geteuid() != 0:
        pytest.skip("restarting the broker needs rabbitmqctl as root")
    url = amqp_url()
    queues = names()
    declare_output_queue(url, queues["output_exchange"], queues["out_queue"])
    events = _real_events(20_000)
    with BulkWhoisServer(seed=77) as whois:
        config = write_config(tmp_path / "c.toml", whois, pg_url, shutdown_timeout=5)
        replicas = [start_consumer(url, config, queues, "--hold", "60") for _ in range(3)]
        try:
            wait_for_queue(url, queues["queue"], replicas)
            publisher = CowriePublisher(url, queues["exchange"], events)
            publisher.start()
            while publisher.sent < 6_000 and publisher.is_alive():
                time.sleep(0.05)
            os.killpg(replicas[0].pid, signal.SIGKILL)  # mid-stream, the whole group
            while publisher.sent < 12_000 and publisher.is_alive():
                time.sleep(0.05)
            for step in ("stop_app", "start_app"):
                subprocess.run(["rabbitmqctl", step], check=True, capture_output=True)
            publisher.join(300)
            assert publisher.sent == len(events)
            wanted = Counter(map(without_enrichment, events))
            out: list[Any] = []
            # Well inside pytest's 300 s for the whole test (it takes about 40 s): events
            # that never come out are then named below, with what the replicas said.
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:  # redelivered events come out twice
                out += read_all(url, queues["out_queue"], 1, timeout=5)
                if not wanted - enriched(out):
                    break
        finally:
            results = [stop(proc) for proc in replicas[1:]]
            replicas[0].wait(timeout=30)
        asked = Counter(ip for request in whois.requests for ip in request.ips)
    for code, said in results:
        assert code == 0, said
        assert "Traceback" not in said
    # the killed replica's messages went to the others; the restart cut every connection
    redelivered = [re.search(r"\((\d+) redelivered\)", said) for _code, said in results]
    assert sum(int(m.group(1)) for m in redelivered if m) > 0, results
    assert publisher.reconnects > 0
    assert all("connecting again" in said for _code, said in results), results
    missing = wanted - enriched(out)
    assert not missing, (
        f"{sum(missing.values())} event(s) never came out enriched, such as "
        f"{list(missing)[:3]}; the replicas said: {results}"
    )
    twice = [ip for ip, n in asked.items() if n > 1]
    assert not twice, f"{len(twice)} address(es) asked of whois more than once"
    assert ready_messages(url, queues["queue"]) == 0
    forget(url, queues)
