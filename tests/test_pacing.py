"""The circuit breaker network sources share, on a clock the test moves."""

from __future__ import annotations

import threading

import pytest

from cowrie_enrich_plugin import clock
from cowrie_enrich_plugin.sources.pacing import Breaker


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
