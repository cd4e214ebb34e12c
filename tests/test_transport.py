"""The process transport: no thread in the host's process, bounded queue, a gone worker reported.

These run real worker processes (or a stand-in command through the transport's own
``command`` seam) over real pipes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

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
from cowrie_enrich_plugin.testing import BulkWhoisServer
from cowrie_enrich_plugin.transport import ProcessTransport

from .conftest import global_ips


def _finish(transport: ProcessTransport, timeout: float = 30.0) -> list[FromEngine]:
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
    assert early[1].wait(timeout=30) == 2  # its input closed before the settings came
    assert worker_start.take_early(worker_start.worker_command()) is None
