"""The flusher's batch policy, given times: no clock, no threads, no database."""

from __future__ import annotations

from cowrie_enrich_plugin.engine.policy import BatchPolicy


def test_addresses_wait_for_a_whole_batch_or_the_interval() -> None:
    policy = BatchPolicy(size=500, interval=5.0)
    assert policy.wait(0.0) == 5.0  # nothing waits: a whole interval
    turn = policy.turn(100.0, new=10, skipped=0, force=False)
    assert not turn.look and not turn.flush
    policy.settle(100.0, turn, waiting=True)
    assert policy.wait(103.0) == 2.0  # counted from the oldest address's arrival
    turn = policy.turn(104.9, new=499, skipped=0, force=False)
    assert not turn.look
    policy.settle(104.9, turn, waiting=True)
    turn = policy.turn(105.0, new=499, skipped=0, force=False)
    assert turn.look and turn.flush  # the interval passed
    policy.settle(105.0, turn, waiting=False)
    assert policy.oldest is None


def test_a_whole_batch_of_new_or_skipped_addresses_is_looked_up_at_once() -> None:
    policy = BatchPolicy(size=500, interval=5.0)
    assert policy.turn(0.0, new=500, skipped=0, force=False).look
    policy = BatchPolicy(size=500, interval=5.0)
    assert policy.turn(0.0, new=3, skipped=500, force=False).look
    policy = BatchPolicy(size=500, interval=5.0)
    assert not policy.turn(0.0, new=499, skipped=499, force=False).look


def test_a_flush_or_the_end_sends_everything_and_an_empty_flush_looks_at_nothing() -> None:
    policy = BatchPolicy(size=500, interval=5.0)
    turn = policy.turn(0.0, new=1, skipped=0, force=True)
    assert turn.look and turn.flush
    assert policy.partial_due(turn, 1)
    empty = BatchPolicy(size=500, interval=5.0).turn(0.0, new=0, skipped=0, force=True)
    assert empty.flush and not empty.look


def test_a_long_lived_run_looks_in_the_cache_at_once_but_batches_for_whois() -> None:
    policy = BatchPolicy(size=500, interval=30.0, prompt=True)
    turn = policy.turn(0.0, new=1, skipped=0, force=False)
    assert turn.look and not turn.flush
    assert policy.whole(499) == 0  # whois still waits for a batch (or the interval)
    assert policy.whole(1234) == 1000
    assert not policy.partial_due(turn, 499)
    assert policy.partial_due(turn, 500)


def test_what_still_waits_after_a_flush_waits_a_whole_interval_again() -> None:
    policy = BatchPolicy(size=500, interval=5.0)
    policy.turn(0.0, new=1, skipped=0, force=False)
    turn = policy.turn(6.0, new=1, skipped=0, force=False)
    assert turn.flush
    policy.settle(6.0, turn, waiting=True)  # e.g. addresses another process holds
    assert policy.oldest == 6.0
    assert policy.wait(6.0) == 5.0
    assert policy.wait(20.0) == 0.0
