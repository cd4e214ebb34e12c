"""``cowrie-enrich consume``: enrich what stock Cowrie sensors publish to RabbitMQ.

The enrich filter (:func:`..hosts.stream.enrich_stream`) runs on this thread, between
two pipes; :class:`..hosts.broker.BrokerLink` feeds it the queue's messages and
publishes what it gives back. Several replicas may consume one queue with one cache.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import click

from ..counters import RunCounters
from ..hosts.reference import make_plugin_manager
from .options import (
    ConfigFailure,
    Failure,
    common_options,
    filter_options,
    host_config,
    run_command,
    run_file_options,
    settings,
)
from .reporting import RunFiles

__all__ = ["consume"]

INSTALL_HINT = "pip install 'cowrie-enrich-plugin[broker]'"


@click.command()
@click.argument("amqp_url", envvar="COWRIE_ENRICH_AMQP_URL")
@common_options
@click.option("--exchange", default="cowrie", show_default=True, help="Cowrie's exchange.")
@click.option("--queue", default="cowrie-enrich", show_default=True, help="The shared queue.")
@click.option("--binding", default="#", show_default=True, help="Routing keys to consume.")
@click.option(
    "--queue-type",
    type=click.Choice(["quorum", "classic"]),
    default="quorum",
    show_default=True,
    help="quorum keeps Cowrie's (transient) messages across a broker restart.",
)
@click.option(
    "--output-exchange",
    default="cowrie.enriched",
    show_default=True,
    help="Where enriched events go (durable topic, routing key = eventid).",
)
@filter_options
@click.option(
    "--prefetch",
    type=click.IntRange(1, 65535),
    default=2000,
    show_default=True,
    help="Messages in hand at most (unacknowledged).",
)
@run_file_options
@run_command
def consume(
    amqp_url: str,
    exchange: str,
    queue: str,
    binding: str,
    queue_type: str,
    output_exchange: str,
    fmt: str,
    prefetch: int,
    hold: float,
    status_file: str | None,
    metrics_file: str | None,
    **opts: Any,
) -> None:
    """Consume Cowrie's events from RabbitMQ; publish them enriched, acknowledged once out.

    AMQP_URL (or COWRIE_ENRICH_AMQP_URL, which keeps the password off the process
    list), e.g. amqp://enrich:PASSWORD@broker:5672/%2F. Sensors publish with Cowrie's
    [output_rmq]; each event is published to --output-exchange as the enrich filter
    enriches it, and its input acknowledged once the broker confirmed it (at least
    once). Run several replicas on one queue and one PostgreSQL cache. SIGINT or
    SIGTERM: stop taking messages, publish what the filter has read, exit 0 (the rest
    goes back to the queue).

    \b
    Example:
      COWRIE_ENRICH_AMQP_URL=amqp://enrich:secret@mq/%2F \\
        cowrie-enrich consume --config /etc/cowrie-enrich.toml --format ecs
    """
    try:
        import pika  # noqa: F401
    except ImportError:
        raise ConfigFailure(f"consume needs the AMQP client: {INSTALL_HINT}") from None
    from ..hosts.broker import BrokerLink, BrokerSettings
    from ..hosts.stream import enrich_stream

    config = host_config(opts, lifecycle="long-lived", redeliver=True)
    checked = settings(config)
    broker = BrokerSettings(
        amqp_url, exchange, queue, binding, output_exchange, prefetch, queue_type
    )
    pm = make_plugin_manager(config)
    files = RunFiles("consume", status_file, metrics_file)
    filter_reads, link_writes = os.pipe()
    link_reads, filter_writes = os.pipe()
    link = BrokerLink(broker, to_filter=link_writes, from_filter=link_reads)
    pm.register(link, name="enrich-broker")
    link.start()
    source, sink = os.fdopen(filter_reads, "rb", buffering=0), os.fdopen(filter_writes, "wb")
    try:
        summary = enrich_stream(
            source,
            sink,
            config,
            pm=pm,
            fmt=fmt,
            hold=hold,
            working_set=checked.working_set,
            # the link's counts are in ``stats``: it answers the progress hook too
            progress=lambda _s, stats: files.update(_facts(link), stats),
        )
    finally:
        with contextlib.suppress(OSError):  # the link reads the rest, then the end
            sink.close()
        source.close()
    ended = link.stop(checked.shutdown_timeout + 5)
    counts = link.counters()
    # the end hook adds up the engine's counters; the link's are its own
    final = (summary.plugin or RunCounters()) + counts
    files.finish("done" if ended else "interrupted", _facts(link), final)
    click.echo(
        f"{counts.broker_consumed} message(s) consumed ({counts.broker_redelivered} "
        f"redelivered), {counts.broker_published} published enriched; "
        f"{summary.enriched} events enriched, {summary.pending} went out pending",
        err=True,
    )
    if link.failure is not None:
        raise Failure(link.failure)
    if not ended:
        click.echo(
            "warning: the broker did not confirm everything in time; what it did not "
            "confirm goes to the next consumer",
            err=True,
        )


def _facts(link: Any) -> dict[str, Any]:
    counts = link.counters()
    return {
        "consumed": counts.broker_consumed,
        "published": counts.broker_published,
        "redelivered": counts.broker_redelivered,
        "in_hand": counts.broker_in_hand,
    }
