"""The process transport: no thread in the host's process, bounded queue, a gone worker reported.

These run real worker processes (or a stand-in command through the transport's own
``command`` seam) over real pipes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.channel import (
    Done,
    End,
    Exited,
    Failed,
    FromEngine,
    NewAddresses,
    Records,
)
from cowrie_enrich_plugin.config import EnrichConfig
from cowrie_enrich_plugin.pipes import widen
from cowrie_enrich_plugin.testing import BulkWhoisServer
from cowrie_enrich_plugin.transport import ProcessTransport, Transport

from .helpers import global_ips


def _finish(transport: Transport, timeout: float = 30.0) -> list[FromEngine]:
    messages: list[FromEngine] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages.extend(transport.wait(0.5))
        if any(isinstance(m, Done | Failed | Exited) for m in messages):
            break
    transport.close()
    return messages


def test_the_host_process_gets_no_helper_thread(server: BulkWhoisServer, tmp_path: Path) -> None:
    host, port = server.address
    before = threading.active_count()
    transport = ProcessTransport(
        EnrichConfig(db=f"sqlite:///{tmp_path}/t.db", cymru_host=host, cymru_port=port)
    )
    ips = global_ips(1_200, seed=11)
    for start in range(0, len(ips), 100):
        transport.send(NewAddresses(ips[start : start + 100]))
        assert threading.active_count() == before
    transport.send(End())
    messages = _finish(transport)
    records = [r for m in messages if isinstance(m, Records) for r in m.records]
    assert sorted(r["ip"] for r in records) == sorted(ips)
    # The worker may close its pipe right after Done: then its clean exit follows it.
    ends = [m for m in messages if isinstance(m, Done | Failed | Exited)]
    assert isinstance(ends[0], Done)
    assert all(m == Exited(0) for m in ends[1:])


def test_a_worker_that_stops_reading_slows_the_host_then_is_reported() -> None:
    # A "worker" that never reads its input and exits after 2 s.
    transport = ProcessTransport(EnrichConfig(), command=("-c", "import time; time.sleep(2)"))
    started = time.monotonic()
    addresses = global_ips(2_000, seed=12)
    sent = 0
    while time.monotonic() - started < 20 and transport.proc.poll() is None:
        transport.send(NewAddresses(addresses))  # about 30 KB each: the queue fills within 2 s
        sent += 1
    waited = time.monotonic() - started
    assert 1.0 < waited < 20  # held back, not run out of memory, and not forever
    assert sent < 200  # bounded: about 1 MB queued, plus what the pipe holds
    messages = transport.wait(5)
    assert messages and isinstance(messages[-1], Exited)
    transport.send(NewAddresses(addresses))  # dropped, not blocking, once the worker is gone
    transport.close()


def test_a_worker_started_early_is_adopted_once(server: BulkWhoisServer, tmp_path: Path) -> None:
    from cowrie_enrich_plugin import worker_start

    host, port = server.address
    config = EnrichConfig(db=f"sqlite:///{tmp_path}/e.db", cymru_host=host, cymru_port=port)
    worker_start.start_early()
    early = worker_start._early
    assert early is not None
    transport = ProcessTransport(config)
    assert transport.proc is early[1]  # the one already importing, not a second one
    transport.send(NewAddresses(global_ips(5, seed=13)))
    transport.send(End())
    assert any(isinstance(m, Done) for m in _finish(transport))
    worker_start.start_early()
    second = worker_start._early
    assert second is not None
    other = ProcessTransport(config, command=("-c", "pass"))  # a stand-in: not adopted
    assert other.proc is not second[1]
    assert second[1].wait(timeout=30) == 2  # let go: its input closed before the settings
    other.abandon(5.0)


def test_a_worker_started_early_and_not_wanted_goes() -> None:
    from cowrie_enrich_plugin import worker_start

    worker_start.start_early()
    early = worker_start._early
    assert early is not None
    worker_start.discard_early()  # e.g. worker = "thread"
    # Reaped by this process without being asked (no wait, no poll): no zombie stays.
    gone = time.monotonic() + 30
    while early[1].returncode is None and time.monotonic() < gone:
        time.sleep(0.05)
    assert early[1].returncode == 2  # its input closed before the settings came
    if os.path.isdir("/proc/self"):
        assert not os.path.exists(f"/proc/{early[1].pid}")
    assert worker_start.take_early(worker_start.worker_command()) is None


def test_the_worker_keeps_a_pythonpath_that_names_the_current_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``cd checkout && PYTHONPATH=. python -m ...`` runs the checkout's code in the worker too.

    Only the current folder that ``-m`` or ``-c`` put first is dropped (a worker must
    not import whatever sits where the host was started).
    """
    from cowrie_enrich_plugin import worker_start

    here = str(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [here, here, "", "/opt/lib", "."])
    assert json.loads(worker_start.worker_command()[-1]) == [here, "/opt/lib"]
    monkeypatch.setattr(sys, "path", ["/venv/bin", "/opt/lib"])
    assert json.loads(worker_start.worker_command()[-1]) == ["/venv/bin", "/opt/lib"]


#: A stand-in worker that writes as many bytes as its argument says and exits, reading nothing.
_WRITING_WORKER = (
    "-c",
    "import sys; sys.stdout.buffer.write(b'x' * int(sys.argv[1])); sys.stdout.buffer.flush()",
)


@contextlib.contextmanager
def _new_pipe() -> Iterator[int]:
    """A new pipe's read end, closed with its write end afterwards."""
    read, write = os.pipe()
    try:
        yield read
    finally:
        os.close(read)
        os.close(write)


def _default_pipe_size() -> int:
    """What a new pipe holds here (16 pages; fewer for a user past its share)."""
    with _new_pipe() as pipe:
        return int(fcntl.fcntl(pipe, fcntl.F_GETPIPE_SZ))


def _pipes_may_grow() -> bool:
    with _new_pipe() as pipe:
        return widen(pipe)


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_a_worker_sends_a_few_batches_records_while_the_host_is_busy() -> None:
    """The worker's output pipe holds far more than a default pipe: a worker writing a
    few batches' records (here 512 KiB) is done without waiting for the host to read, so
    the host's reads do not wake a writer blocked on it (transport's notes)."""
    if not _pipes_may_grow():
        pytest.skip("this system or user may not have a pipe of 1 MiB")
    transport = ProcessTransport(EnrichConfig(), command=(*_WRITING_WORKER, str(512 * 1024)))
    try:
        assert transport.proc.wait(timeout=30) == 0  # the host has read nothing
        assert fcntl.fcntl(transport._from_worker, fcntl.F_GETPIPE_SZ) >= 512 * 1024
    finally:
        transport.abandon(1.0)


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_a_pipe_that_may_not_grow_keeps_its_size_and_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the user's share of pipe memory the kernel refuses a larger pipe (EPERM):
    the worker starts all the same, over the pipe as it is, and its output arrives."""
    real = fcntl.fcntl

    def refusing(fd: int, command: int, arg: int = 0) -> Any:
        if command == fcntl.F_SETPIPE_SZ:
            raise PermissionError(1, "Operation not permitted")
        return real(fd, command, arg)

    default = _default_pipe_size()
    monkeypatch.setattr(fcntl, "fcntl", refusing)
    size = 4 * default  # more than the pipe holds: it arrives as the host reads
    transport = ProcessTransport(EnrichConfig(), command=(*_WRITING_WORKER, str(size)))
    try:
        assert real(transport._from_worker, fcntl.F_GETPIPE_SZ) == default
        received = bytearray()
        deadline = time.monotonic() + 30
        while len(received) < size and time.monotonic() < deadline:
            if select.select([transport._from_worker], [], [], 1.0)[0]:
                received += os.read(transport._from_worker, 1 << 20)
        assert bytes(received) == b"x" * size
        assert transport.proc.wait(timeout=30) == 0
    finally:
        transport.abandon(1.0)


#: A stand-in worker: on a flush it writes a record per address it was handed, in many
#: small messages, far more than a pipe holds, blocking while the host does not read.
_FLOODING_WORKER = """
import sys
from cowrie_enrich_plugin.channel import Done, End, Flush, NewAddresses, Ready, Records
from cowrie_enrich_plugin.channel import read_message, write_message
from cowrie_enrich_plugin.counters import RunCounters
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
read_message(stdin)
write_message(stdout, Ready())
held = []
while (message := read_message(stdin)) is not None:
    if isinstance(message, NewAddresses):
        held.extend(message.ips)
    elif isinstance(message, Flush | End):
        for start in range(0, len(held), 50):
            records = [
                {"ip": ip, "status": "pending", "cymru": None, "maxmind": None,
                 "expires_at": None, "padding": "x" * 300}
                for ip in held[start : start + 50]
            ]
            write_message(stdout, Records(records, None))
        held = []
        if isinstance(message, End):
            write_message(stdout, Done(RunCounters()))
            break
"""


def test_the_batch_end_wait_empties_the_pipe_as_records_come(monkeypatch: Any) -> None:
    """The host sleeps on the worker's pipe in ``finish``, not on a timer (issue 22's stall).

    The wait between looks at the counters is set to an hour: had the host emptied the
    pipe only on a timer tick, the ~7 MB of records (seven pipefuls of 1 MiB) would take
    hours; woken by the pipe, they all arrive at once.
    """
    from cowrie_enrich_plugin import collect
    from cowrie_enrich_plugin.collect import Collector

    monkeypatch.setattr(collect, "_FINISH_LOOK_EVERY", 3600.0)
    boot = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); exec(sys.argv[2])"
    command = ("-c", boot, json.dumps(sys.path), _FLOODING_WORKER)
    config = EnrichConfig()
    delivered: list[dict[str, Any]] = []
    transport = ProcessTransport(config, command=command)
    collector = Collector(config, delivered.extend, transport)
    ips = global_ips(20_000, seed=22)
    collector.ingest([{"src_ip": ip} for ip in ips])
    started = threading.Thread(target=collector.finish)
    started.start()
    started.join(timeout=120)
    assert not started.is_alive(), "finish waited on a timer, not on the pipe"
    assert sorted(r["ip"] for r in delivered) == sorted(ips)
    assert collector.stats().outstanding == 0
    collector.end()


def test_the_batch_end_flushes_at_once_though_a_batch_is_out(monkeypatch: Any) -> None:
    """The host has sent everything when it enters its end: what waits for a fuller batch
    is asked for at once, even though the engine's last counters say a batch is out.

    Every timer that could end the wait is an hour away (the host's look at its counters),
    so a flush held back until a report says no batch is out would never go.
    """
    from cowrie_enrich_plugin import collect
    from cowrie_enrich_plugin.channel import Flush
    from cowrie_enrich_plugin.collect import Collector
    from cowrie_enrich_plugin.counters import RunCounters

    engine = _Recording()
    delivered: list[dict[str, Any]] = []
    collector = Collector(EnrichConfig(), delivered.extend, engine)
    ips = global_ips(3, seed=25)
    collector.ingest([{"src_ip": ip} for ip in ips])

    def answered(ips: list[str]) -> list[dict[str, Any]]:
        return [{"ip": ip, "status": "ok", "expires_at": "2027-01-01T00:00:00Z"} for ip in ips]

    engine.incoming.put(Records(answered(ips[:1]), RunCounters(in_flight_batches=1, backlog=2)))
    collector.ingest([])
    monkeypatch.setattr(collect, "_FINISH_LOOK_EVERY", 3600.0)
    finishing = threading.Thread(target=collector.finish, daemon=True)
    finishing.start()
    try:
        deadline = time.monotonic() + 30
        while not any(isinstance(m, Flush) for m in engine.sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(isinstance(m, Flush) for m in engine.sent), "the end held its flush back"
        # The engine answers the rest; its counters, with the records, say it is done.
        engine.incoming.put(Records(answered(ips[1:]), RunCounters()))
        finishing.join(timeout=30)
    finally:  # a finish still waiting ends
        engine.incoming.put(Done(RunCounters()))
    assert not finishing.is_alive(), "the end waited for a timer"
    assert sorted(r["ip"] for r in delivered) == sorted(ips)


def test_the_records_that_end_the_work_say_so(
    monkeypatch: Any, server: BulkWhoisServer, tmp_path: Path
) -> None:
    """The counters come with the records, so the host knows at once that nothing waits.

    A whole batch and a partial one, with the engine's idle report an hour apart: had
    the last records come without the counters, the host would only know of the
    backlog of the report before them.
    """
    from cowrie_enrich_plugin.channel import Flush
    from cowrie_enrich_plugin.engine import serve
    from cowrie_enrich_plugin.transport import ThreadTransport

    monkeypatch.setattr(serve, "_STATS_EVERY", 3600.0)
    host, port = server.address
    config = EnrichConfig(
        db=f"sqlite:///{tmp_path}/t.db", cymru_host=host, cymru_port=port, worker="thread"
    )
    transport = ThreadTransport(config)
    ips = global_ips(config.batch_size + 120, seed=26)
    transport.send(NewAddresses(ips))
    transport.send(Flush())
    seen: list[str] = []
    last: Records | None = None
    deadline = time.monotonic() + 60
    while len(seen) < len(ips) and time.monotonic() < deadline:
        for message in transport.wait(0.5):
            if isinstance(message, Records) and message.records:
                seen.extend(r["ip"] for r in message.records)
                last = message
    assert sorted(seen) == sorted(ips)
    assert last is not None and last.counters is not None
    assert last.counters.backlog == 0
    transport.send(End())
    assert any(isinstance(m, Done) for m in _finish(transport))


class _Recording(Transport):
    """A transport that keeps what it is sent (the engine side is played by the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


@pytest.mark.parametrize("code", [-9, -15, 143])
def test_a_replaced_worker_gets_each_address_in_its_own_kind(code: int) -> None:
    """A dead (or separately stopped) worker of a long-lived run is replaced; the new one
    is handed the unanswered addresses, global ones to ask and the others to record."""
    from cowrie_enrich_plugin.channel import SkippedAddresses
    from cowrie_enrich_plugin.collect import Collector

    config = EnrichConfig(lifecycle="long-lived")
    first, spare = _Recording(), _Recording()
    collector = Collector(config, lambda records: None, first, reopen=lambda: spare)
    collector.ingest([{"src_ip": "8.8.8.8"}, {"src_ip": "10.0.0.1"}, {"src_ip": "9.9.9.9"}])
    collector.checkpoint()
    first.incoming.put(Exited(code))
    collector.ingest([])
    assert collector.transport is spare
    new = [ip for m in spare.sent if isinstance(m, NewAddresses) for ip in m.ips]
    skipped = [ip for m in spare.sent if isinstance(m, SkippedAddresses) for ip in m.ips]
    assert sorted(new) == ["8.8.8.8", "9.9.9.9"] and skipped == ["10.0.0.1"]
    assert collector.stats().worker_restarts == 1
