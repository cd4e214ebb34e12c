"""``cowrie-enrich enrich`` as a log shipper runs it: a pipe, held open, and real logs."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin.testing import BulkWhoisServer

from ..helpers import clean_env, cowrie_enrich, global_ips, shared_data, write_log

pytestmark = pytest.mark.slow


def options(server: BulkWhoisServer, db: str) -> list[str]:
    host, port = server.address
    return ["--db", db, "--cymru", f"{host}:{port}"]


class Lines:
    """Lines of a pipe as they arrive (no buffering hides one from ``select``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""

    def next(self, within: float) -> tuple[str, float]:
        """The next line and how long it took, or fail after ``within`` seconds."""
        started = time.monotonic()
        while b"\n" not in self.buffer:
            left = within - (time.monotonic() - started)
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            assert ready, f"no line within {within} s"
            self.buffer += os.read(self.fd, 65536)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode() + "\n", time.monotonic() - started


def start_filter(*args: str) -> tuple[subprocess.Popen[bytes], Lines]:
    """``cowrie-enrich enrich ARGS`` with its three pipes, and its output as lines."""
    proc = subprocess.Popen(
        [cowrie_enrich(), "enrich", *args],
        env=clean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    return proc, Lines(proc.stdout)


def test_a_pipe_held_open(server: BulkWhoisServer, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'f.db'}"
    cached, new = global_ips(2, seed=701)
    warm = write_log(tmp_path / "warm.json", [cached])
    subprocess.run(
        [cowrie_enrich(), "ingest", str(warm), *options(server, db)], env=clean_env(), check=True
    )
    hold = 1.0
    proc, out = start_filter("--hold", str(hold), *options(server, db))
    assert proc.stdin is not None

    def send(text: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(text.encode())
        proc.stdin.flush()

    try:
        # the filter is running (its worker started, its store open)
        send("warming up\n")
        out.next(10)
        time.sleep(1.0)
        send(json.dumps({"eventid": "a", "src_ip": cached}) + "\n")
        line, took = out.next(5)
        assert took < 0.5, took
        assert json.loads(line)["enrich"]["status"] == "enriched"
        send(json.dumps({"eventid": "b", "src_ip": new}) + "\nnot an event\n")
        line, took = out.next(hold + 5)
        assert took < hold + 1, took
        # answered within the hold (the filter asks for the batch at hold/2), or pending
        assert json.loads(line)["enrich"]["ip"] == new
        assert json.loads(line)["enrich"]["status"] in ("enriched", "unannounced", "pending")
        passed, _took = out.next(1)
        assert passed == "not an event\n"
    finally:
        proc.stdin.close()  # the end of input: the filter finishes and exits
        proc.wait(timeout=30)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    assert "2 lines that are not events passed through" in err


def test_real_logs_come_out_whole_in_order_and_enriched(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    logs = sorted(shared_data("cowrie-logs-2018").glob("*.gz"))
    db = f"sqlite:///{tmp_path / 'real.db'}"
    warm = subprocess.run(
        [cowrie_enrich(), "ingest", *map(str, logs), *options(server, db)],
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert warm.returncode == 0, warm.stdout + warm.stderr
    lines = b"".join(gzip.decompress(path.read_bytes()) for path in logs).splitlines()
    assert len(lines) == 102_686
    server.reset_log()
    done = subprocess.run(
        [cowrie_enrich(), "enrich", *options(server, db)],
        env=clean_env(),
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert len(out) == len(lines)
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        stored: dict[str, Any] = dict(
            conn.execute(sa.text("SELECT ip, status FROM enrichment_record")).all()
        )
    engine.dispose()
    for raw, enriched in zip(lines, out, strict=True):
        event, result = json.loads(raw), json.loads(enriched)
        record = result.pop("enrich")
        assert result == event  # the same event, in the same place, untouched
        assert record["ip"] == event["src_ip"] and record["status"] == stored[event["src_ip"]]
    assert not server.requests  # a warm cache: nothing asked


@pytest.mark.parametrize("how", ["SIGTERM to the host", "SIGHUP to the group"])
def test_a_stop_loses_no_line_from_the_middle(
    server: BulkWhoisServer, tmp_path: Path, how: str
) -> None:
    """SIGTERM (a service manager), SIGHUP (a closing terminal): what was read goes out."""
    import signal

    db = f"sqlite:///{tmp_path / 't.db'}"
    ips = global_ips(50, seed=702)
    lines = [json.dumps({"n": n, "src_ip": ips[n % len(ips)]}) for n in range(200_000)]
    proc = subprocess.Popen(
        [cowrie_enrich(), "enrich", *options(server, db)],
        env=clean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    import threading

    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    try:
        for start in range(0, len(lines), 5000):
            proc.stdin.write(("\n".join(lines[start : start + 5000]) + "\n").encode())
            proc.stdin.flush()
            if start == 100_000 and how.startswith("SIGHUP"):
                os.killpg(proc.pid, signal.SIGHUP)
            elif start == 100_000:
                proc.send_signal(signal.SIGTERM)
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.wait(timeout=60)
        reader.join()
    numbers = [json.loads(line)["n"] for line in got[0].splitlines()]
    assert numbers == list(range(len(numbers)))  # a prefix of the input: nothing skipped
    assert len(numbers) >= 100_000
    assert proc.returncode == 130
    assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(child) for child in handle.read().split()]


def test_a_dead_worker_is_replaced_and_the_filter_carries_on(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """#23 item 7: SIGKILL of the worker mid-stream; every line out, in order, enriched."""
    import signal

    db = f"sqlite:///{tmp_path / 'w.db'}"
    first, second = global_ips(30, seed=705), global_ips(30, seed=706)
    proc, out = start_filter("--hold", "3", *options(server, db))
    assert proc.stdin is not None
    lines = [json.dumps({"n": n, "src_ip": ip}) for n, ip in enumerate(first + second)]
    got: list[dict[str, Any]] = []
    try:
        proc.stdin.write(("\n".join(lines[:30]) + "\n").encode())
        proc.stdin.flush()
        got += [json.loads(out.next(15)[0]) for _ in range(30)]
        (worker,) = _children(proc.pid)
        os.kill(worker, signal.SIGKILL)
        time.sleep(0.5)
        proc.stdin.write(("\n".join(lines[30:]) + "\n").encode())
        proc.stdin.flush()
        got += [json.loads(out.next(15)[0]) for _ in range(30)]
        assert _children(proc.pid) and _children(proc.pid) != [worker]  # a new one
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    assert "starting a new one" in err and "Traceback" not in err
    assert [event["n"] for event in got] == list(range(60))
    late = [event["enrich"]["status"] for event in got[30:]]
    assert late.count("pending") < len(late), late  # the new worker answers
