"""The circuit breaker network sources share, on a clock the test moves."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from cowrie_enrich_plugin import clock
from cowrie_enrich_plugin.sources.pacing import Breaker, DailyQuota
from cowrie_enrich_plugin.store import open_store
from cowrie_enrich_plugin.store.quota import QuotaLedger


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The package's clock, moved by the test (``now[0] = ...``)."""
    moment = [1000.0]
    monkeypatch.setattr(clock, "monotonic", lambda: moment[0])
    return moment


def _elsewhere(call: object) -> None:
    """Run ``call`` on another thread (a request that thread sent)."""
    thread = threading.Thread(target=call)  # type: ignore[arg-type]
    thread.start()
    thread.join()


def test_it_opens_after_failures_in_a_row_and_an_answer_resets_the_run(now: list[float]) -> None:
    breaker = Breaker("test", threshold=3, cooldown=60.0, longest=600.0)
    breaker.failed()
    breaker.failed()
    breaker.answered()
    breaker.failed()
    breaker.failed()
    assert breaker.allow() and not breaker.is_open
    breaker.failed()
    assert breaker.is_open and not breaker.allow() and breaker.opened == 1


def test_late_failures_of_requests_sent_before_it_opened_change_nothing(now: list[float]) -> None:
    breaker = Breaker("test", threshold=2, cooldown=60.0, longest=600.0)
    breaker.failed()
    breaker.failed()  # open until 1060
    for _ in range(6):  # the other connections' requests, failing after it opened
        _elsewhere(breaker.failed)
    assert breaker.opened == 1
    now[0] = 1060.0
    assert breaker.allow()  # the trial: the cooldown did not double
    assert not breaker.allow()  # the others wait for it


def test_a_failed_trial_doubles_the_cooldown_up_to_the_longest(now: list[float]) -> None:
    breaker = Breaker("test", threshold=1, cooldown=60.0, longest=100.0)
    breaker.failed()
    now[0] = 1060.0
    assert breaker.allow()
    breaker.failed()  # the trial failed: open for 100 s (120 capped)
    now[0] = 1159.0
    assert not breaker.allow()
    now[0] = 1160.0
    assert breaker.allow()
    breaker.answered()
    assert breaker.allow() and breaker.allow() and not breaker.is_open
    assert breaker.opened == 1  # one outage


def test_a_trial_that_never_reports_does_not_keep_it_shut(now: list[float]) -> None:
    breaker = Breaker("test", threshold=1, cooldown=60.0)
    breaker.failed()
    now[0] = 1060.0
    assert breaker.allow()  # its request stopped before it was sent (a quota, a wait)
    now[0] = 1119.0
    assert not breaker.allow()
    now[0] = 1120.0
    assert breaker.allow()  # another trial, a cooldown later


def test_a_quota_shared_in_the_store_is_one_across_processes_and_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two quotas on one database (two sensors) share ``limit``; a spent day ends at the
    database's next UTC day; with the ledger gone, each counts its own."""
    day = [dt.datetime(2026, 12, 5, 23, 59, 30, tzinfo=dt.timezone.utc)]
    monkeypatch.setattr(clock, "utc_now", lambda: day[0])
    moment = [0.0]
    monkeypatch.setattr(clock, "monotonic", lambda: moment[0])
    url = f"sqlite:///{tmp_path / 'q.db'}"
    stores = [open_store(url), open_store(url)]
    quotas = [DailyQuota(5, "GreyNoise"), DailyQuota(5, "GreyNoise")]
    for store, quota in zip(stores, quotas, strict=True):
        quota.share(QuotaLedger(store, "greynoise"))
    taken = [quotas[n % 2].take() for n in range(8)]
    assert taken == [True] * 5 + [False] * 3 and quotas[0].spent and quotas[1].spent
    assert QuotaLedger(stores[0], "greynoise").today().requests == 5
    day[0] += dt.timedelta(minutes=1)  # the next UTC day
    moment[0] += 61  # past the recheck of a day spent in the ledger
    assert quotas[0].take() and not quotas[0].spent
    quotas[1].spend()  # the server said so: the other process stops too
    moment[0] += 61
    assert not quotas[0].take()
    with stores[0].engine.begin() as conn:  # the ledger fails: each counts its own
        conn.execute(sa.text("DROP TABLE source_quota"))
    day[0] += dt.timedelta(days=1)
    fresh = DailyQuota(2, "GreyNoise")
    fresh.share(QuotaLedger(stores[0], "greynoise"))
    assert [fresh.take() for _ in range(3)] == [True, True, False]
    for store in stores:
        store.close()
