"""The whois batches out: their connection slots, their addresses, their futures.

A batch is asked on one of ``concurrency`` network threads and persisted on the one
store thread, so a connection slot never waits for the database. At most twice
``concurrency`` batches are asked at once (a slot is free again once its answer is
read, before it is saved); a loop that sends one more waits for a slot. A batch no
connection has started yet can be taken back, to be sent again with the next ones.
Every future handed here (the network sources' too) is waited for at the end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["Batches"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R")
#: How often a loop waiting for a slot hears how it goes (``on_wait``), seconds.
_SLOT_WAIT = 0.5


class Batches:
    """One engine's batches in flight.

    :param concurrency: network threads (whois connections at once).
    """

    def __init__(self, concurrency: int) -> None:
        self._lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        #: addresses in a whois batch now (never claimed twice at once)
        self._asking: set[str] = set()
        #: whois batches handed to the network threads, by future, maybe not started
        self._queued: dict[Future[None], list[str]] = {}
        self._slots = threading.BoundedSemaphore(max(2, 2 * concurrency))
        self._network = ThreadPoolExecutor(concurrency, thread_name_prefix="cymru")
        self._persist = ThreadPoolExecutor(1, thread_name_prefix="cowrie-enrich-store")

    def __len__(self) -> int:
        """Futures not done yet (batches asked or being saved, network sources' work)."""
        with self._lock:
            return len(self._futures)

    @property
    def asking(self) -> int:
        """Addresses in a whois batch now."""
        with self._lock:
            return len(self._asking)

    def busy_among(self, ips: Iterable[str]) -> set[str]:
        """Those of ``ips`` in a whois batch now."""
        with self._lock:
            return self._asking.intersection(ips)

    def track(self, future: Future[None]) -> None:
        """Wait for ``future`` at the end too."""
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def ask(
        self,
        ips: Iterable[str],
        fetch: Callable[[], _R],
        persist: Callable[[_R], None],
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        """Run ``fetch`` on a network thread, then ``persist`` its result on the store thread.

        ``ips`` count as asked until :meth:`answered`. Blocks while every slot is
        taken, calling ``on_wait`` now and then. ``fetch`` must not raise.
        """
        ips = list(ips)
        with self._lock:
            self._asking.update(ips)
        while not self._slots.acquire(timeout=_SLOT_WAIT):
            if on_wait is not None:
                on_wait()
        future = self._network.submit(self._fetch_then_persist, fetch, persist)
        with self._lock:
            self._queued[future] = ips
        self.track(future)

    def take_back(self) -> list[list[str]]:
        """Withdraw the whois batches no connection has started: their addresses.

        Their slots are free again; the addresses stay asked (:attr:`asking`) until
        they are sent again and answered.
        """
        with self._lock:
            queued, self._queued = self._queued, {}
        taken = []
        for future, ips in queued.items():
            if future.cancel():  # refused once a network thread has taken it
                self._slots.release()
                taken.append(ips)
        return taken

    def answered(self, ips: Iterable[str]) -> None:
        """``ips`` are out of their batch (saved, or given up)."""
        with self._lock:
            self._asking.difference_update(ips)

    def wait(self) -> None:
        """Return once every future handed here is done (those they start too)."""
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending:
                return
            for future in pending:
                if not future.cancelled():  # a batch taken back is sent again
                    future.exception()
                with self._lock:
                    self._futures.discard(future)

    def shutdown(self) -> None:
        """Stop the threads (after :meth:`wait`)."""
        self._network.shutdown(wait=True)
        self._persist.shutdown(wait=True)

    def _fetch_then_persist(self, fetch: Callable[[], _R], persist: Callable[[_R], None]) -> None:
        try:
            result = fetch()
            self.track(self._persist.submit(persist, result))
        finally:
            self._slots.release()

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)
            self._queued.pop(future, None)
        # What the work raised is a bug (each step says the network's and the store's
        # troubles itself); nobody else looks at a future once it is done.
        error = None if future.cancelled() else future.exception()
        if error is not None:
            logger.error(
                "handing on a batch failed; what was not saved stays pending in the store",
                exc_info=error,
            )
