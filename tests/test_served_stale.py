"""A long-lived engine serves a record whose refresh waits out its backoff, and says so.

The host then waits ``retry_interval`` before it hands the address on again; a record
that arrives expired without that word expired on its way, and is asked again at once
(``tests/test_collect.py``).
"""

from __future__ import annotations

import datetime as dt
import queue
from pathlib import Path
from typing import Any

from cowrie_enrich_plugin.channel import End, NewAddresses, ToEngine
from cowrie_enrich_plugin.engine.flusher import Flusher
from cowrie_enrich_plugin.engine.steps import Enricher
from cowrie_enrich_plugin.record import CymruAnswer, EnrichmentRecord, Status, format_time

from .helpers import global_ips, refused_whois_config


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
        enricher.finish_batch(mine, enricher.ask_whois(mine))
        inbox: queue.Queue[ToEngine] = queue.Queue()
        inbox.put(NewAddresses([expired, fresh]))
        inbox.put(End())
        Flusher(enricher, emit, resume_pending=False).run(inbox)
    assert sorted(sent) == sorted(
        [(expired, format_time(ago), True), (fresh, format_time(ahead), False)]
    )
