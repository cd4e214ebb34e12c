"""The benchmarks' workloads and their whois server, shared by ``run.py`` and ``guard.py``.

Workloads: synthetic global addresses and Cowrie events written for them (cached in
``benchmarks/.cache``), and the real logs when ``../shared/data`` is there. The
server is ``bench_server.py`` in a child process (so its CPU is billed to no
client), with a cost model per batch and per address.
"""

from __future__ import annotations

import functools
import gzip
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CACHE",
    "ROOT",
    "SHARED",
    "Server",
    "bulk",
    "global_ips",
    "whois_alone",
    "workload",
    "write_events",
]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CACHE = ROOT / "benchmarks" / ".cache"


# -- workloads ----------------------------------------------------------------------


def global_ips(count: int, seed: int) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from cowrie_enrich_plugin.addresses import Usable, classify

    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        verdict = classify(".".join(str(rng.randint(1, 223)) for _ in range(4)))
        if isinstance(verdict, Usable):
            found[verdict.ip] = None
    return list(found)


def write_events(path: Path, ips: list[str], events: int, skew: float | None, seed: int) -> None:
    """Cowrie-like events; with ``skew`` a Zipf-like few IPs produce most events."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** skew for rank in range(len(ips))] if skew else None
    chosen = rng.choices(ips, weights=weights, k=events - len(ips)) + ips  # every IP at least once
    rng.shuffle(chosen)
    kinds = (
        "cowrie.session.connect",
        "cowrie.login.failed",
        "cowrie.command.input",
        "cowrie.session.closed",
    )
    with gzip.open(path, "wt", compresslevel=1) as handle:
        for n, ip in enumerate(chosen):
            handle.write(
                json.dumps(
                    {
                        "eventid": kinds[n % 4],
                        "src_ip": ip,
                        "src_port": 40000 + n % 20000,
                        "session": f"{n:012x}",
                        "timestamp": "2026-11-28T20:00:00.000000Z",
                        "sensor": "bench",
                        "message": f"event {n}",
                    }
                )
                + "\n"
            )


@functools.cache  # the real logs are read whole to list their addresses: once a run
def workload(name: str) -> tuple[list[Path], list[str]] | None:
    CACHE.mkdir(parents=True, exist_ok=True)
    if name == "ips10k":
        ips = global_ips(10_000, seed=10)
        path = CACHE / "ips10k.json.gz"
        if not path.exists():
            write_events(path, ips, len(ips), None, 10)
        return [path], ips
    if name == "real":
        folder = SHARED / "cowrie-logs-2018"
        if not folder.is_dir():
            return None
        files = sorted(folder.glob("cowrie.json.*"))
        ips: dict[str, None] = {}
        for file in files:
            with gzip.open(file, "rt") as handle:
                for line in handle:
                    ips[json.loads(line)["src_ip"]] = None
        return files, list(ips)
    if name == "corpus1m":
        ips = global_ips(50_000, seed=50)
        path = CACHE / "corpus-1m.json.gz"
        if not path.exists():
            write_events(path, ips, 1_000_000, 1.1, 50)
        return [path], ips
    raise ValueError(name)


# -- the server ---------------------------------------------------------------------------


class Server:
    """The benchmarks' whois server in a child process, with its stdin control channel.

    ``prime``: addresses whose answers it makes before it listens, so that no measured
    run pays for the test server's first sight of them (the real server is elsewhere).
    """

    def __init__(
        self, per_batch: float, per_ip: float, streaming: bool = True, prime: Sequence[str] = ()
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="cebench-prime-") as folder:
            listing = Path(folder) / "addresses.txt"
            listing.write_text("".join(f"{ip}\n" for ip in prime))
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "bench_server.py"),
                    "--latency-per-batch",
                    str(per_batch),
                    "--latency-per-ip",
                    str(per_ip),
                    *(["--streaming"] if streaming else []),
                    *(["--prime", str(listing)] if prime else []),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            assert self.proc.stdout is not None and self.proc.stdin is not None
            # read once it listens: the list is gone after this block
            said = self.proc.stdout.readline().split()
        if len(said) != 2:  # it died before listening (its error is on stderr)
            raise RuntimeError(f"the benchmark whois server did not start: {said}")
        self.hostport = said[1]

    def command(self, word: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stats(self) -> dict[str, int]:
        return json.loads(self.command("stats"))

    def close(self) -> None:
        self.command("quit") if self.proc.poll() is None else None
        self.proc.wait(timeout=10)


# -- scenarios (each runs in a child process) ----------------------------------------------


def bulk(hostport: str, ips: list[str]) -> int:
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=120) as sock:
        sock.sendall(("begin\nverbose\n" + "\n".join(ips) + "\nend\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.count(b"\n")


def whois_alone(hostport: str, ips: list[str], concurrency: int = 2) -> float:
    """Wall seconds to ask every address in batches of 500 on ``concurrency`` connections."""
    batches = [ips[i : i + 500] for i in range(0, len(ips), 500)]
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not batches:
                    return
                batch = batches.pop()
            bulk(hostport, batch)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
