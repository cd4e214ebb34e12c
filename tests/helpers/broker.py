"""RabbitMQ for the tests: the broker's URL, a publisher that sends what Cowrie's
``[output_rmq]`` sends, and a reader of what ``consume`` published."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pytest

AMQP_ENV = "CE_TEST_AMQP_URL"
#: The Debian package's default user, on loopback only.
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def amqp_url() -> str:
    """The broker the tests use; skips when none answers (fails when CI named one)."""
    pika = pytest.importorskip("pika")
    url = os.environ.get(AMQP_ENV, DEFAULT_URL)
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except Exception as exc:
        if os.environ.get(AMQP_ENV):
            pytest.fail(f"{AMQP_ENV}={url} is set but RabbitMQ does not answer: {exc}")
        pytest.skip(f"no RabbitMQ on {url} ({type(exc).__name__})")
    return url


def names() -> dict[str, str]:
    """Exchange and queue names of one test's own (tests share the broker)."""
    tag = uuid.uuid4().hex[:8]
    return {
        "exchange": f"cowrie-{tag}",
        "queue": f"enrich-{tag}",
        "output_exchange": f"enriched-{tag}",
        "out_queue": f"out-{tag}",
    }


def forget(url: str, queues: dict[str, str]) -> None:
    """Delete one test's queues and exchanges (the broker outlives the suite)."""
    connection = connect(url)
    channel = connection.channel()
    for queue in (queues["queue"], queues["out_queue"]):
        channel.queue_delete(queue)
    for exchange in (queues["exchange"], queues["output_exchange"]):
        channel.exchange_delete(exchange)
    connection.close()


def connect(url: str) -> Any:
    import pika

    return pika.BlockingConnection(pika.URLParameters(url))


def declare_output_queue(url: str, exchange: str, queue: str) -> None:
    """A quorum queue bound to ``exchange``, so that the test reads all that was published."""
    connection = connect(url)
    channel = connection.channel()
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(queue, exchange, routing_key="#")
    connection.close()


def is_consumed(url: str, queue: str) -> bool:
    """Whether ``queue`` exists and has a consumer.

    ``consume`` declares its queue, then binds it, then consumes: a queue that merely
    exists may not be bound yet, and events published then are routed nowhere.
    """
    import pika.exceptions

    connection = connect(url)
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.consumer_count) > 0
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


def ready_messages(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (with no consumer, the unacknowledged ones are too)."""
    connection = connect(url)
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


class CowriePublisher(threading.Thread):
    """Publishes events as Cowrie's ``output_rmq`` does (JSON, routing key = eventid,
    transient), with confirms, and again after a lost connection: none is lost."""

    def __init__(self, url: str, exchange: str, events: Iterable[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.url, self.exchange = url, exchange
        self.events = list(events)
        self.sent = 0
        self.reconnects = 0

    def run(self) -> None:
        import pika
        import pika.exceptions

        props = pika.BasicProperties(content_type="application/json")
        while self.sent < len(self.events):
            try:
                connection = connect(self.url)
                channel = connection.channel()
                channel.confirm_delivery()
                channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
                while self.sent < len(self.events):
                    event = self.events[self.sent]
                    body = json.dumps(event).encode()
                    channel.basic_publish(self.exchange, event.get("eventid", "x"), body, props)
                    self.sent += 1
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                self.reconnects += 1
                time.sleep(0.5)


def read_all(url: str, queue: str, count: int, timeout: float) -> list[Any]:
    """At least ``count`` messages of ``queue`` (or what came within ``timeout``): the JSON
    ones parsed, the others as text."""
    import pika.exceptions

    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = connect(url)
            channel = connection.channel()
            while time.monotonic() < deadline:
                method, _props, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    if len(got) >= count:
                        return got
                    time.sleep(0.2)
                    continue
                try:
                    got.append(json.loads(body))
                except ValueError:
                    got.append(body.decode(errors="replace"))
        except (pika.exceptions.AMQPError, OSError):
            time.sleep(0.5)
    return got
