"""Whois batches of even sizes: the last batches of a run are answered together."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cowrie_enrich_plugin.channel import End, NewAddresses, ToEngine
from cowrie_enrich_plugin.config import EnrichConfig
from cowrie_enrich_plugin.engine.flusher import Flusher
from cowrie_enrich_plugin.engine.serve import open_engine
from cowrie_enrich_plugin.slices import even_slices, slices
from cowrie_enrich_plugin.testing import BulkWhoisServer

from .helpers import global_ips


@given(st.integers(min_value=0, max_value=3000), st.integers(min_value=1, max_value=600))
def test_even_slices_are_as_few_as_slices_and_differ_by_one_at_most(count: int, size: int) -> None:
    items = list(range(count))
    even = [list(part) for part in even_slices(items, size)]
    assert [item for part in even for item in part] == items
    assert len(even) == len(list(slices(items, size)))
    assert all(0 < len(part) <= size for part in even)
    if even:
        assert max(map(len, even)) - min(map(len, even)) <= 1


def test_what_a_flush_sends_goes_in_batches_of_even_sizes(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """599 addresses waiting at the end are two batches of 300 and 299, not 500 and 99.

    A whole batch goes as soon as it is whole; what is left of the 600 addresses of the
    first message waits, and at the end it joins the last 499. Sent on two connections
    at once, the last batch is answered when the first is.
    """
    host, port = server.address
    config = EnrichConfig(db=f"sqlite:///{tmp_path}/t.db", cymru_host=host, cymru_port=port)
    ips = global_ips(1_099, seed=37)
    inbox: queue.Queue[ToEngine] = queue.Queue()
    for message in (NewAddresses(ips[:600]), NewAddresses(ips[600:]), End()):
        inbox.put(message)
    records: list[dict[str, Any]] = []
    enricher = open_engine(config)
    try:
        Flusher(enricher, lambda found, *_: records.extend(found)).run(inbox)
    finally:
        enricher.close()
    assert sorted(r["ip"] for r in records) == sorted(ips)
    assert [len(request.ips) for request in server.requests][:1] == [500]
    assert sorted(len(request.ips) for request in server.requests[1:]) == [299, 300]
