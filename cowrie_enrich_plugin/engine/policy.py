"""When the flusher looks in the cache and when it sends: the batch policy, pure.

It is given the time and the counts of what waits, and answers; it does no I/O and
reads no clock, so every rule can be tested by handing it times. The rules:

- addresses wait to be looked up in the cache until ``batch_size`` of them (new or
  skipped) are waiting, or ``flush_interval`` has passed since the oldest arrived,
  or the host asked for a flush or the end; a long-lived run looks at once (a host
  that runs for weeks waits for nothing it can have now);
- what the cache cannot answer goes to whois in whole batches as soon as there are
  any, and the rest at the same moments as above (interval, flush, end), when
  everything waiting goes at once (the flusher, then, does not take whole batches
  first: the sender makes the last round of batches even);
- the network sources' partial batches go at those moments too, or when a whole batch
  of them is waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchPolicy", "Turn"]


@dataclass(frozen=True)
class Turn:
    """What one turn of the loop does (see :meth:`BatchPolicy.turn`)."""

    #: look the waiting addresses up in the cache now
    look: bool
    #: a moment to send everything that waits (the interval passed, a flush, the end)
    flush: bool


@dataclass
class BatchPolicy:
    """The flusher's timing rules over one run (``oldest`` is its only state).

    :param size: ``batch_size``.
    :param interval: ``flush_interval``, seconds.
    :param prompt: look in the cache at once (a long-lived run).
    """

    size: int
    interval: float
    prompt: bool = False
    #: when the oldest address still waiting arrived (``None``: nothing waits)
    oldest: float | None = None

    def wait(self, now: float) -> float:
        """How long the loop may wait for the host's next message."""
        if self.oldest is None:
            return self.interval
        return max(0.0, self.oldest + self.interval - now)

    def turn(self, now: float, *, new: int, skipped: int, force: bool) -> Turn:
        """Decide one turn, with ``new`` and ``skipped`` addresses waiting.

        ``force``: the host asked for a flush, or the run ends.
        """
        waiting = bool(new or skipped)
        if self.oldest is None and waiting:
            self.oldest = now
        due = self.oldest is not None and now - self.oldest >= self.interval
        flush = force or due
        look = waiting and (self.prompt or new >= self.size or skipped >= self.size or flush)
        return Turn(look=look, flush=flush)

    def whole(self, count: int) -> int:
        """Of ``count`` addresses for whois, how many go now as whole batches."""
        return count - count % self.size

    def partial_due(self, turn: Turn, partial: int) -> bool:
        """Whether the network sources' waiting addresses (``partial``) go now."""
        return turn.flush or partial >= self.size

    def settle(self, now: float, turn: Turn, *, waiting: bool) -> None:
        """End the turn: ``waiting`` tells whether any address still waits."""
        if not waiting:
            self.oldest = None
        elif turn.flush:
            self.oldest = now
