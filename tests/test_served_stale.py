"""A long-lived engine serves a record whose refresh waits out its backoff, and says so.

The host then waits ``retry_interval`` before it hands the address on again; a record
that arrives expired without that word expired on its way, and is asked again at once
(``tests/test_collect.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import queue
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin.channel import End, NewAddresses, ToEngine
from cowrie_enrich_plugin.cli.options import settings
from cowrie_enrich_plugin.engine.flusher import Flusher
from cowrie_enrich_plugin.engine.steps import Enricher
from cowrie_enrich_plugin.errors import StoreError
from cowrie_enrich_plugin.record import CymruAnswer, EnrichmentRecord, Status, format_time
from cowrie_enrich_plugin.store.schema import pending_queue
from cowrie_enrich_plugin.testing import BulkWhoisServer, GreyNoiseServer

from .helpers import global_ips, host_config, refused_whois_config


def test_a_record_whose_refresh_waits_out_its_backoff_is_sent_stale(tmp_path: Path) -> None:
    config = refused_whois_config(tmp_path)  # every refresh refused
    expired, fresh = global_ips(2, seed=73)
    sent: list[tuple[str, str, bool]] = []

    def emit(records: list[dict[str, Any]], _repeats: tuple[str, ...], stale: bool) -> None:
        sent.extend((r["ip"], r["expires_at"], stale) for r in records)

    with Enricher.open(config) as enricher:
        now = enricher.store.now()
        answer = CymruAnswer((64500,), "EXAMPLE", "1.0.0.0/8", "US", "arin", None, now)
        ago, ahead = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
        enricher.store.put_records(
            [
                EnrichmentRecord(expired, Status.ENRICHED, answer, expires_at=ago),
                EnrichmentRecord(fresh, Status.ENRICHED, answer, expires_at=ahead),
            ]
        )
        mine, _theirs = enricher.claim([expired])  # its refresh fails: it backs off
        assert mine == [expired]
        enricher.finish_batches([(mine, enricher.ask_whois(mine), {})])
        inbox: queue.Queue[ToEngine] = queue.Queue()
        inbox.put(NewAddresses([expired, fresh]))
        inbox.put(End())
        Flusher(enricher, emit, resume_pending=False).run(inbox)
    assert sorted(sent) == sorted(
        [(expired, format_time(ago), True), (fresh, format_time(ahead), False)]
    )


def test_a_batch_the_store_could_not_keep_is_sent_stale_with_network_sources_too(
    tmp_path: Path, server: BulkWhoisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whois answered, saving failed: the stored record goes out as it was, flagged stale.

    With a network source configured it went through that source's path instead,
    unflagged, and the host asked the expired address again at once.
    """
    expired = global_ips(1, seed=74)[0]
    sent: list[tuple[str, str | None, bool]] = []

    def emit(records: list[dict[str, Any]], _repeats: tuple[str, ...], stale: bool) -> None:
        sent.extend((r["ip"], r["expires_at"], stale) for r in records)

    def failing(*_args: object, **_kwargs: object) -> None:
        raise StoreError("database error: disk I/O error")  # as a full or failing disk says

    with GreyNoiseServer() as greynoise:
        host, port = server.address
        section = {
            "db": f"sqlite:///{tmp_path / 'c.db'}",
            "cymru_host": host,
            "cymru_port": port,
            "greynoise": {"api_url": greynoise.url},
        }
        config = settings({"plugins": {"enabled": ["enrich"], "enrich": section}})
        config = dataclasses.replace(config, lifecycle="long-lived")
        with Enricher.open(config) as enricher:
            assert enricher.network.names
            now = enricher.store.now()
            answer = CymruAnswer((64500,), "EXAMPLE", "1.0.0.0/8", "US", "arin", None, now)
            ago = now - dt.timedelta(hours=1)
            enricher.store.put_records(
                [EnrichmentRecord(expired, Status.ENRICHED, answer, expires_at=ago)]
            )
            monkeypatch.setattr(enricher, "finish_batches", failing)
            inbox: queue.Queue[ToEngine] = queue.Queue()
            inbox.put(NewAddresses([expired]))
            inbox.put(End())
            Flusher(enricher, emit, resume_pending=False).run(inbox)
    assert sent == [(expired, format_time(ago), True)]


def test_a_bug_on_the_store_thread_is_logged_not_swallowed(
    tmp_path: Path, server: BulkWhoisServer, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Saving raised, and so did making its pending records: said, and the run still ends.

    The batch's addresses stay queued in the store: the next run asks them.
    """
    ips = global_ips(3, seed=75)
    sent: list[str] = []

    def emit(records: list[dict[str, Any]], _repeats: tuple[str, ...], _stale: bool) -> None:
        sent.extend(r["ip"] for r in records)

    def failing(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in saving")

    def unmade(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in the pending record")

    config = settings(host_config(server, f"sqlite:///{tmp_path / 'b.db'}"))
    with Enricher.open(config) as enricher:
        monkeypatch.setattr(enricher, "finish_batches", failing)
        monkeypatch.setattr(enricher, "pending_record", unmade)
        inbox: queue.Queue[ToEngine] = queue.Queue()
        inbox.put(NewAddresses(ips))
        inbox.put(End())
        with caplog.at_level("ERROR"):
            Flusher(enricher, emit, resume_pending=False).run(inbox)
        queued = enricher.store.run(lambda conn: list(conn.scalars(sa.select(pending_queue.c.ip))))
    assert sorted(queued) == sorted(ips)
    assert sent == []
    failed = [r for r in caplog.records if "handing on a batch failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    assert "a bug in the pending record" in str(failed[0].exc_info[1])
