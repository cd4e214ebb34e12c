"""The broker's side of ``cowrie-enrich consume``: messages in, enriched messages out, acks.

Stock Cowrie sensors publish each event with ``[output_rmq]``: a durable topic
exchange (``cowrie``), routing key = the event's ``eventid``, the event's JSON as the
body. :class:`BrokerLink` binds a durable queue to that exchange and feeds every
message, as one line, to the enrich filter (:mod:`.stream`, on the main thread, which
owns the signals); the filter gives back one line per line, in order. Each is
published to the output exchange (durable topic, same routing key, persistent) with
publisher confirms, and only then is its input acknowledged: at least once.

One thread owns the AMQP connection (pika's is not thread-safe): it consumes, writes
into the filter's input pipe as far as the pipe takes, reads the filter's output,
publishes and acknowledges, never blocking on the filter. When the broker goes away,
the inputs not acknowledged go back to the queue (to this replica or another); the
filter's lines for them are dropped when they come out, and the link reconnects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from ..counters import RunCounters
from ..dburl import mask_url, scrub
from ..hookspecs import hookimpl
from ..pipes import widen
from .confirms import Confirms, Outlet

__all__ = ["BrokerError", "BrokerLink", "BrokerSettings"]

logger = logging.getLogger(__name__)

#: Reconnection waits: 1 s, doubling, at most this.
_MAX_BACKOFF: Final = 30.0
#: How long one turn of the link's loop waits for the broker.
_TURN: Final = 0.02
#: A body the filter cannot take as one line travels as this and goes out as it came.
_PLACEHOLDER: Final = b"{}"
_READ: Final = 1 << 17


class BrokerError(Exception):
    """The broker refused what no retry mends (credentials, a vhost, a declaration)."""


@dataclass(frozen=True)
class BrokerSettings:
    """Where to consume and publish (``cowrie-enrich consume``'s options)."""

    url: str
    exchange: str = "cowrie"
    queue: str = "cowrie-enrich"
    binding: str = "#"
    output_exchange: str = "cowrie.enriched"
    prefetch: int = 2000
    #: ``quorum``: every message on disk and replicated, kept across a broker restart
    #: (Cowrie publishes transient messages, which a classic queue loses then)
    queue_type: str = "quorum"

    @property
    def shown(self) -> str:
        """The URL without its password."""
        return mask_url(self.url)


@dataclass
class _Delivery:
    """An input in hand: which connection took it, its tag, its routing key."""

    generation: int
    tag: int
    routing_key: str
    #: the body to publish as it came (it could not travel as one line)
    raw: bytes | None


class BrokerLink:
    """The AMQP side of a ``consume`` run, on a thread of its own.

    Registered in the run's plugin manager: a signal stops its consuming at once
    (``cowrie_ingest_interrupted``), and its counts join the run's metrics
    (``cowrie_ingest_progress``).

    :param to_filter: the write end of the filter's input pipe (closed by the link).
    :param from_filter: the read end of the filter's output pipe (closed by the link).
    """

    def __init__(self, settings: BrokerSettings, to_filter: int, from_filter: int) -> None:
        self.settings = settings
        self._to_filter, self._from_filter = to_filter, from_filter
        for fd in (to_filter, from_filter):
            os.set_blocking(fd, False)
            widen(fd)  # fewer turns for a burst
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_hand: deque[_Delivery] = deque()
        self._unwritten = bytearray()
        self._unread = b""
        self._generation = 0
        self._filter_ended = False
        self._connected = False
        self._ever_connected = False
        #: the current connection's publications (one set a connection)
        self._confirms = Confirms()
        self.consumed = self.published = self.redelivered = 0
        #: why the link gave up (a refusal no retry mends), for the command to say
        self.failure: str | None = None
        # A daemon: a broker that never answers cannot keep the process from ending.
        self._thread = threading.Thread(target=self._run, name="cowrie-enrich-broker", daemon=True)

    # -- the run's plugin manager ------------------------------------------------------

    @hookimpl
    def cowrie_ingest_interrupted(self) -> None:
        """A signal: take no more messages (those the filter has read still go out)."""
        self._stopping.set()

    @hookimpl
    def cowrie_ingest_progress(self) -> dict[str, int]:
        """The link's counts, under :class:`RunCounters`'s names."""
        return self.counters().to_dict()

    def counters(self) -> RunCounters:
        """Consumed, published, redelivered, and the messages in hand now."""
        with self._lock:
            confirms = self._confirms
            return RunCounters(
                broker_consumed=self.consumed,
                broker_published=self.published + confirms.confirmed,
                broker_redelivered=self.redelivered,
                broker_in_hand=len(self._in_hand) + len(confirms.waiting),
            )

    # -- the command's thread ----------------------------------------------------------

    def start(self) -> None:
        """Connect and consume on the link's thread."""
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Take no more; publish what the filter gave back; return whether the link ended.

        Call after the filter has ended (its output closed). Inputs not acknowledged
        (taken and not read by the filter, or published and not confirmed) go back to
        the queue when the connection closes.
        """
        self._stopping.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the link's thread -------------------------------------------------------------

    def _run(self) -> None:
        import pika.exceptions

        wait = 1.0
        try:
            while not self._filter_ended:
                self._connected = False
                try:
                    self._serve()
                    return
                except BrokerError as exc:
                    self.failure = str(exc)
                    return
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self._generation += 1  # what the lost connection held is redelivered
                    with self._lock:  # what it published counts; its waiting ones are lost
                        self.published += self._confirms.confirmed
                        self._confirms = Confirms()
                    if self._connected:
                        wait = 1.0
                    logger.warning(
                        "broker %s: %s; connecting again in %g s",
                        self.settings.shown,
                        self._why(exc),
                        wait,
                    )
                except Exception as exc:  # a bug: said, and the run ends rather than hangs
                    logger.exception("the broker link failed")
                    self.failure = f"the broker link failed ({type(exc).__name__})"
                    return
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and not self._filter_ended:
                    self._exchange_lines(None)  # the filter's lines still come out
                    time.sleep(_TURN)
                wait = min(wait * 2, _MAX_BACKOFF)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._to_filter)  # the filter's input ends
            self._drain_filter()
            with contextlib.suppress(OSError):
                os.close(self._from_filter)

    def _drain_filter(self) -> None:
        """Read the filter's output to its end (what is in hand goes back to the queue)."""
        deadline = time.monotonic() + 120
        while not self._filter_ended and time.monotonic() < deadline:
            ready, _, _ = select.select([self._from_filter], [], [], _TURN)
            if ready:
                try:
                    self._filter_ended = not os.read(self._from_filter, _READ)
                except BlockingIOError:
                    continue
                except OSError:
                    return

    def _serve(self) -> None:
        """One connection: consume, feed, publish and acknowledge until the filter ends."""
        import pika

        connection = self._connect()
        try:
            consuming = connection.channel()
            consuming.basic_qos(prefetch_count=self.settings.prefetch)
            publishing = connection.channel()
            confirms = Confirms()
            # pika's blocking channel waits for each confirm (a round trip a message,
            # about 1,200 a second here); its own channel underneath takes a callback.
            publishing._impl.confirm_delivery(confirms.on_confirm, confirms.on_select)
            publishing._impl.add_on_return_callback(confirms.on_return)
            while not confirms.selected:
                connection.process_data_events(time_limit=_TURN)
            self._declare(consuming, publishing)
            self._connected = self._ever_connected = True
            logger.info("broker %s: consuming %s", self.settings.shown, self.settings.queue)
            generation = self._generation
            persistent = pika.BasicProperties(content_type="application/json", delivery_mode=2)

            def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
                self._take(generation, method, body)

            tag: str | None = consuming.basic_consume(self.settings.queue, on_message)
            consuming._impl.add_on_cancel_callback(confirms.on_cancel)
            with self._lock:
                self._confirms = confirms
            out = Outlet(generation, publishing._impl, persistent, confirms)
            while not (self._filter_ended and not confirms.waiting):
                connection.process_data_events(time_limit=_TURN)
                if not (consuming.is_open and publishing.is_open) or confirms.cancelled:
                    raise pika.exceptions.AMQPChannelError("the broker closed a channel")
                if tag is not None and self._stopping.is_set():
                    consuming.basic_cancel(tag)
                    tag = None
                self._exchange_lines(out)
                last = confirms.settled()
                if last is not None:
                    consuming.basic_ack(last, multiple=True)
        finally:
            with contextlib.suppress(Exception):
                connection.close()  # what is not acknowledged goes back to the queue

    def _connect(self) -> Any:
        import pika
        import pika.exceptions

        try:
            parameters = pika.URLParameters(self.settings.url)
        except Exception as exc:  # pika says ValueError and others for a malformed URL
            raise BrokerError(
                f"{self.settings.shown}: not a usable AMQP URL ({self._why(exc)})"
            ) from None
        if parameters.heartbeat is None:
            parameters.heartbeat = 30
        # a broker that blocks publishers (a memory or disk alarm) is left, not waited on
        parameters.blocked_connection_timeout = 60
        try:
            return pika.BlockingConnection(parameters)
        except (
            pika.exceptions.ProbableAuthenticationError,
            pika.exceptions.ProbableAccessDeniedError,
        ) as exc:
            if self._ever_connected:  # pika says so of a handshake cut by a restarting broker
                raise
            raise BrokerError(
                f"{self.settings.shown} refused the credentials or the vhost ({self._why(exc)})"
            ) from None

    def _declare(self, consuming: Any, publishing: Any) -> None:
        import pika.exceptions

        s = self.settings
        try:
            # As Cowrie's [output_rmq] declares it: a second declaration is a no-op.
            consuming.exchange_declare(s.exchange, exchange_type="topic", durable=True)
            consuming.queue_declare(s.queue, durable=True, arguments={"x-queue-type": s.queue_type})
            consuming.queue_bind(s.queue, s.exchange, routing_key=s.binding)
            publishing.exchange_declare(s.output_exchange, exchange_type="topic", durable=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BrokerError(
                f"{s.shown}: cannot declare what consume needs ({self._why(exc)})"
            ) from None

    def _take(self, generation: int, method: Any, body: bytes) -> None:
        """A message in: in hand, and on its way to the filter as one line."""
        raw = None
        if b"\n" in body or b"\r" in body or not body:
            try:  # a JSON body written over several lines becomes one
                line = json.dumps(json.loads(body)).encode()
            except (ValueError, RecursionError):
                line, raw = _PLACEHOLDER, body
        else:
            line = body
        with self._lock:
            self._in_hand.append(
                _Delivery(generation, method.delivery_tag, method.routing_key, raw)
            )
            self.consumed += 1
            self.redelivered += bool(method.redelivered)
        self._unwritten += line + b"\n"

    def _exchange_lines(self, publish_to: Outlet | None) -> None:
        """Feed the filter what it takes; publish and acknowledge what it gave back."""
        if self._unwritten and not self._stopping.is_set():
            try:
                written = os.write(self._to_filter, self._unwritten)
            except BlockingIOError:
                written = 0
            except BrokenPipeError:  # the filter ended: the rest goes back to the queue
                written = len(self._unwritten)
            del self._unwritten[:written]
        if self._filter_ended:
            return
        ready, _, _ = select.select([self._from_filter], [], [], 0)
        if not ready:
            return
        try:
            data = os.read(self._from_filter, _READ)
        except BlockingIOError:
            return
        if not data:
            self._filter_ended = True
        lines = (self._unread + data).split(b"\n")
        self._unread = lines.pop()
        if publish_to is None:  # no connection: these inputs are redelivered
            self._drop(len(lines))
        else:
            self._publish(lines, publish_to)

    def _drop(self, count: int) -> None:
        with self._lock:
            for _ in range(count):
                self._in_hand.popleft()

    def _publish(self, lines: list[bytes], out: Outlet) -> None:
        """Publish (without waiting: the confirms come to :class:`Confirms`)."""
        for done, line in enumerate(lines):
            with self._lock:
                delivery = self._in_hand[0]
            if delivery.generation == out.generation:
                body = delivery.raw if delivery.raw is not None else line
                try:
                    out.channel.basic_publish(
                        self.settings.output_exchange,
                        delivery.routing_key,
                        body,
                        out.properties,
                        mandatory=True,  # an output no queue takes comes back: not acked
                    )
                except BaseException:
                    self._drop(len(lines) - done)  # their lines are read: redelivered
                    raise
                out.confirms.sent(delivery.tag)
            with self._lock:
                self._in_hand.popleft()

    def _why(self, exc: BaseException) -> str:
        """An AMQP error in a few words, any piece of the URL's password masked."""
        text = str(exc).strip() or type(exc).__name__
        return scrub(text.splitlines()[0][:200], self.settings.url)
