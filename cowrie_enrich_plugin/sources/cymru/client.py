"""Team Cymru bulk whois, the client: connections, deadlines, retries, the circuit breaker.

One :class:`BulkWhoisClient` serves one run. Each batch (at most 500 addresses) is
sent over one connection; a batch that fails in a way that can pass (refused,
reset, timed out, cut short) is retried with exponential backoff and jitter, and
each retry asks only for the addresses still unanswered. After the last attempt
the remaining addresses are reported back as unresolved, never guessed. After
several consecutive batches have given up, the circuit breaker opens: further
batches fail at once, without touching the network, until a cool-down passes.
:meth:`BulkWhoisClient.stop` ends every batch at once (a run that is stopping):
their connections are shut, nothing is retried, and what they asked stays pending.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import tenacity

from ... import clock
from ...counters import WhoisCounters
from ...record import CymruAnswer, utc_now
from ..pacing import Breaker
from . import MAX_BACKOFF_SECONDS
from .protocol import MAX_BATCH_SIZE, build_bulk_request, parse_bulk_answer

__all__ = [
    "BatchResult",
    "BulkWhoisClient",
    "WhoisAnswerIncomplete",
    "WhoisConnectError",
    "WhoisError",
    "WhoisTimeout",
]

logger = logging.getLogger(__name__)

#: Upper bound on the bytes of one answer: generous for 500 multi-origin rows.
_ANSWER_BYTES_BASE = 64 * 1024
_ANSWER_BYTES_PER_IP = 8 * 1024
# A server streams its answer a row at a time; woken for each row, the client spends
# more CPU on the reads than on the rows. It is woken when this much has arrived, or
# the server closed, or a wait ran out with less (then whatever arrived is read).
_WAKE_BYTES = 32 * 1024
#: How often a backoff looks whether the run stopped, in seconds.
_STOP_POLL = 0.1
#: Why addresses stay pending when the run stopped while they were asked.
_STOPPED = "the run stopped before whois answered"


class WhoisError(Exception):
    """A bulk whois exchange failed in a way that may pass: worth another attempt."""


class WhoisConnectError(WhoisError):
    """The server could not be reached, refused the connection, or reset it."""


class WhoisTimeout(WhoisError):
    """The server did not answer within the connect, idle or total deadline."""


class WhoisAnswerIncomplete(WhoisError):
    """The answer was cut short or left addresses unanswered."""


@dataclass
class BatchResult:
    """The outcome of one batch: trusted answers, and what is still unresolved (ip -> why)."""

    answers: dict[str, CymruAnswer] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    #: cut short by :meth:`BulkWhoisClient.stop`: not whois's failure (no backoff)
    stopped: bool = False
    #: seconds the open circuit breaker holds batches back, when it held this one
    #: back before any attempt (not whois's failure, nor an attempt: 0.0 otherwise)
    held_for: float = 0.0


class BulkWhoisClient:
    """A client for Team Cymru's bulk whois interface (or anything speaking it).

    :param host: server name or address.
    :param port: TCP port (43).
    :param timeout: total seconds one attempt may take; the connect and idle-read
        deadlines are derived from it unless given.
    :param retries: attempts per batch (at least 1).
    :param batch_size: addresses per batch, 1..500.
    :param wait_initial: first backoff in seconds (doubled each retry, plus jitter).
    :param wait_max: longest backoff in seconds.
    :param breaker_threshold: consecutive failed batches that open the circuit.
    :param breaker_cooldown: seconds the circuit stays open before one batch may try again.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        batch_size: int = MAX_BATCH_SIZE,
        connect_timeout: float | None = None,
        idle_timeout: float | None = None,
        wait_initial: float = 0.5,
        wait_max: float = MAX_BACKOFF_SECONDS,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 60.0,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE}")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = (
            connect_timeout if connect_timeout is not None else min(10.0, timeout)
        )
        self.idle_timeout = idle_timeout if idle_timeout is not None else timeout
        self.retries = max(1, retries)
        self.batch_size = batch_size
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown = breaker_cooldown
        self.stats = WhoisCounters()
        self._lock = threading.Lock()
        self._breaker = Breaker(
            f"whois at {host}:{port}", breaker_threshold, breaker_cooldown, level=logging.ERROR
        )
        self._stopped = threading.Event()
        self._open: set[socket.socket] = set()
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_any(
                tenacity.stop_after_attempt(self.retries),
                tenacity.stop_when_event_set(self._stopped),
            ),
            wait=tenacity.wait_exponential(multiplier=wait_initial, max=wait_max)
            + tenacity.wait_random(0, wait_initial),
            retry=tenacity.retry_if_exception_type(WhoisError),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )

    def stop(self) -> None:
        """End every batch now and leave what it asked unanswered (the run is stopping)."""
        self._stopped.set()
        with self._lock:  # under the lock: the owner closes a socket only after it left
            for sock in self._open:  # a blocked recv returns at once
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _sleep(self, seconds: float) -> None:
        """A backoff on the package's clock, cut short by :meth:`stop`."""
        until = clock.monotonic() + seconds
        while not self._stopped.is_set() and (left := until - clock.monotonic()) > 0:
            clock.sleep(min(left, _STOP_POLL))

    # -- one batch -------------------------------------------------------------

    def query_batch(self, ips: Sequence[str]) -> BatchResult:
        """Resolve one batch of canonical global addresses, retrying what can pass.

        Never raises for network trouble: what was not answered comes back in
        ``unresolved`` with the last error.
        """
        result = BatchResult()
        remaining = list(dict.fromkeys(ips))
        if not remaining:
            return result
        if len(remaining) > self.batch_size:
            raise ValueError(f"{len(remaining)} addresses exceed the batch size {self.batch_size}")
        if self._stopped.is_set():
            result.unresolved = dict.fromkeys(remaining, _STOPPED)
            result.stopped = True
            return result
        if not self._breaker.allow():
            why = f"whois circuit open after {self.breaker_threshold} consecutive failed batches"
            result.unresolved = dict.fromkeys(remaining, why)
            result.held_for = max(self._breaker.closed_in(), 1.0)
            return result

        def attempt() -> None:
            result.attempts += 1
            self._attempt(remaining, result)

        started = time.monotonic()
        try:
            self._retrying.copy()(attempt)
        except WhoisError as exc:
            if self._stopped.is_set():  # not whois's failure: the breaker is left alone
                result.unresolved = dict.fromkeys(remaining, _STOPPED)
                result.stopped = True
                return result
            result.unresolved = dict.fromkeys(remaining, f"{type(exc).__name__}: {exc}")
            logger.warning(
                "whois gave up on %d address(es) after %d attempt(s) (%s); they stay pending",
                len(remaining),
                result.attempts,
                exc,
            )
            self._breaker.failed()
            with self._lock:
                self.stats.failed_batches += 1
                self.stats.circuit_opened = self._breaker.opened
        else:
            self._breaker.answered()
        with self._lock:
            self.stats.batches += 1
            self.stats.observe(time.monotonic() - started)
        return result

    def snapshot(self) -> WhoisCounters:
        """A copy of the counters, taken whole."""
        with self._lock:
            return dataclasses.replace(self.stats, batch_seconds=list(self.stats.batch_seconds))

    @property
    def circuit_is_open(self) -> bool:
        """Whether the breaker stops batches now (a gauge for the metrics)."""
        return self._breaker.is_open

    def _attempt(self, remaining: list[str], result: BatchResult) -> None:
        """Send one request for ``remaining``; keep what was answered; raise if short."""
        request = build_bulk_request(remaining)
        data, clean, problem = self._exchange(request, len(remaining))
        answer = parse_bulk_answer(data, set(remaining), clean_eof=clean, fetched_at=utc_now())
        with self._lock:
            self.stats.ips_sent += len(remaining)
        if answer.unexpected:
            logger.info(
                "whois answered %d address(es) that were not asked (first: %s); ignored",
                len(answer.unexpected),
                answer.unexpected[0],
            )
        result.answers.update(answer.answers)
        # Rotate what is left so the address that ended this answer (never trusted
        # in a short answer) is asked first next time, with lines after it.
        left = [ip for ip in remaining if ip not in answer.answers]
        remaining[:] = left[-1:] + left[:-1]
        if problem is not None:
            raise problem
        if remaining:
            detail = f"; server said {answer.errors[0]!r}" if answer.errors else ""
            raise WhoisAnswerIncomplete(
                f"{len(remaining)} address(es) unanswered or untrusted{detail}"
            )

    def _exchange(self, request: bytes, count: int) -> tuple[bytes, bool, WhoisError | None]:
        """Connect, send, read to EOF. Returns (data, clean EOF, the error that ended it)."""
        deadline = time.monotonic() + self.timeout
        limit = _ANSWER_BYTES_BASE + _ANSWER_BYTES_PER_IP * count
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError as exc:
            raise WhoisTimeout(f"connect to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise WhoisConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        with self._lock:
            self.stats.connections += 1
            self._open.add(sock)
        try:
            if self._stopped.is_set():  # stopped while it connected
                return b"", False, WhoisConnectError(_STOPPED)
            data, clean, problem = self._read_answer(sock, request, deadline, limit)
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()
        if self._stopped.is_set():  # its connection was shut: the answer is not whole
            return data, False, WhoisConnectError(_STOPPED)
        return data, clean, problem

    def _read_answer(
        self, sock: socket.socket, request: bytes, deadline: float, limit: int
    ) -> tuple[bytes, bool, WhoisError | None]:
        """Send the request, read to EOF within the deadline and ``limit`` bytes."""
        chunks: list[bytes] = []
        size = 0
        try:
            sock.settimeout(self.idle_timeout)
            sock.sendall(request)
            _wake_on(sock, _WAKE_BYTES)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return b"".join(chunks), False, WhoisTimeout("answer took too long")
                sock.settimeout(min(self.idle_timeout, left))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    # Silent, or sending less than the wake size: read what came
                    # (none: BlockingIOError, silent).
                    sock.settimeout(0.0)
                    chunk = sock.recv(65536)
                if not chunk:
                    return b"".join(chunks), True, None
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    return (
                        b"".join(chunks),
                        False,
                        WhoisAnswerIncomplete(f"answer exceeded {limit} bytes; cut"),
                    )
        except (TimeoutError, BlockingIOError):
            return b"".join(chunks), False, WhoisTimeout("server went silent")
        except OSError as exc:
            return b"".join(chunks), False, WhoisConnectError(f"connection failed: {exc}")

    # -- retry bookkeeping and the circuit breaker -------------------------------

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        with self._lock:
            self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.info(
            "whois batch attempt %d failed (%s); retrying in %.1fs",
            state.attempt_number,
            exc,
            state.upcoming_sleep,
        )


def _wake_on(sock: socket.socket, size: int) -> None:
    """Have reads of ``sock`` wait for ``size`` bytes (or the end, or the timeout)."""
    # Not every system has it: then a read per arrival.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
