"""Publisher confirms: which consumed messages may be acknowledged, in order.

``consume`` publishes each enriched event without waiting for its confirm (a round
trip a message held one replica to about 1,200 events a second); :class:`Confirms`
collects the broker's confirms and says up to which input everything is out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["Confirms", "Outlet"]


class Confirms:
    """One connection's publications waiting for the broker's confirm, in order.

    The broker numbers a channel's publications from 1 and confirms them (each, or
    all up to one with ``multiple``), possibly out of order across queues; an input is
    acknowledged once its output and every earlier one are confirmed.
    """

    def __init__(self) -> None:
        self.selected = False
        self._next = 1
        #: (publication number, the input's delivery tag), in order
        self.waiting: deque[tuple[int, int]] = deque()
        self._done: set[int] = set()
        self._upto = 0
        self.confirmed = 0
        self.refused = False
        self.returned = False
        self.cancelled = False

    def on_select(self, _frame: Any) -> None:
        """The channel is in confirm mode."""
        self.selected = True

    def sent(self, tag: int) -> None:
        """A publication of the input ``tag`` went out."""
        self.waiting.append((self._next, tag))
        self._next += 1

    def on_confirm(self, frame: Any) -> None:
        """Basic.Ack or Basic.Nack for one publication or all up to one."""
        import pika.spec

        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.refused = True
        elif method.multiple:
            self._upto = max(self._upto, method.delivery_tag)
        else:
            self._done.add(method.delivery_tag)

    def on_return(self, *_args: Any) -> None:
        """A publication no queue took (its confirm follows): its input is not acked."""
        self.returned = True

    def on_cancel(self, _frame: Any) -> None:
        """The broker ended the consumer (its queue deleted)."""
        self.cancelled = True

    def settled(self) -> int | None:
        """The input tag up to which all may be acknowledged now (``None``: none new).

        :raises pika.exceptions.NackError: when the broker refused a publication (the
            connection is dropped: everything in hand is redelivered).
        """
        import pika.exceptions

        if self.refused:
            raise pika.exceptions.NackError([])
        if self.returned:
            raise pika.exceptions.AMQPChannelError(
                "the output exchange routes to no queue: bind one (the events wait in the "
                "input queue meanwhile)"
            )
        last = None
        waiting, done = self.waiting, self._done
        while waiting and (waiting[0][0] <= self._upto or waiting[0][0] in done):
            number, last = waiting.popleft()
            done.discard(number)
            self.confirmed += 1
        return last


@dataclass
class Outlet:
    """Where one connection publishes, and the confirms it waits for."""

    generation: int
    channel: Any
    properties: Any
    confirms: Confirms
