"""The run's counters as Prometheus metrics: an opt-in ``/metrics`` endpoint, or a textfile.

Everything comes from one :class:`~.counters.RunCounters` snapshot, read when
Prometheus scrapes (or when the file is written), so the numbers are the plugin's
own, not a second bookkeeping. Long-lived hosts set ``metrics_listen`` (loopback by
default); cron runs write ``--metrics-file`` for node_exporter's textfile collector,
atomically, at the end of the run.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .counters import BATCH_SECONDS_BUCKETS, RunCounters
from .errors import ConfigError

__all__ = ["PREFIX", "metrics_text", "registry_for", "serve_metrics"]

PREFIX: Final = "cowrie_enrich"

#: (metric, help, counter field) of the plain counters.
_COUNTERS: Final = (
    ("events", "Events handed to the plugin.", "events"),
    ("bad_src_ip", "Events whose src_ip was refused.", "bad_src_ip"),
    ("addresses_seen", "Distinct usable addresses first seen in this run.", "new_ips"),
    ("skipped", "Addresses that are not globally routable (never sent).", "skipped"),
    ("cache_hits", "Addresses answered from a fresh stored record.", "cache_hits"),
    ("stale_refreshed", "Stored records that were stale and asked again.", "stale_refreshed"),
    ("resolved", "Addresses whois answered.", "resolved"),
    ("pending_outcomes", "Times an address was left pending.", "pending"),
    ("leased_elsewhere", "Addresses another process had leased.", "leased_elsewhere"),
    ("delivered", "Records delivered to the host.", "delivered"),
    ("whois_connections", "Connections to the whois server.", "whois_connections"),
    ("whois_addresses_sent", "Addresses sent to the whois server.", "ips_sent"),
    ("whois_retries", "Whois batch attempts retried.", "retries"),
    ("circuit_breaker_opened", "Times the whois circuit breaker opened.", "circuit_opened"),
    ("errors", "Internal errors.", "errors"),
    ("worker_restarts", "New workers started after a worker died.", "worker_restarts"),
    ("unsaved", "Addresses the database could not record.", "unsaved"),
    ("broker_consumed", "Messages consume took from the broker.", "broker_consumed"),
    ("broker_published", "Enriched messages the broker confirmed.", "broker_published"),
    ("broker_redelivered", "Messages taken again after a consumer's end.", "broker_redelivered"),
)


class _RunCollector:
    """A prometheus_client collector over the current snapshot of the counters."""

    def __init__(self, snapshot: Callable[[], RunCounters]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Every metric, from one snapshot."""
        stats = self.snapshot()
        for name, text, field in _COUNTERS:
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=getattr(stats, field))
        batches = CounterMetricFamily(
            f"{PREFIX}_whois_batches", "Whois batches by outcome.", labels=["outcome"]
        )
        batches.add_metric(["answered"], max(0, stats.batches_sent - stats.failed_batches))
        batches.add_metric(["failed"], stats.failed_batches)
        yield batches
        counts = list(stats.whois_batch_seconds) or [0] * (len(BATCH_SECONDS_BUCKETS) + 1)
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, BATCH_SECONDS_BUCKETS), "+Inf"), counts, strict=False):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            f"{PREFIX}_whois_batch_seconds",
            "How long whois batches took, retries included.",
            buckets=buckets,
            sum_value=stats.whois_batch_seconds_sum,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_circuit_breaker_open",
            "1 while the whois circuit breaker stops batches.",
            value=stats.circuit_open,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_pending",
            "Addresses pending in the store now (as of the engine's last look).",
            value=stats.pending_now,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_broker_in_hand",
            "Messages consume took and has not acknowledged yet.",
            value=stats.broker_in_hand,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_in_flight_batches",
            "Whois batches sent and not yet persisted.",
            value=stats.in_flight_batches,
        )
        requests = CounterMetricFamily(
            f"{PREFIX}_source_requests", "Requests per source.", labels=["source"]
        )
        left = CounterMetricFamily(
            f"{PREFIX}_source_pending", "Sections a source left pending.", labels=["source"]
        )
        requests.add_metric(["cymru"], stats.whois_connections)
        left.add_metric(["cymru"], stats.pending)
        spent = GaugeMetricFamily(
            f"{PREFIX}_source_quota_spent",
            "1 while a source's daily quota is spent (its sections stay pending until it resets).",
            labels=["source"],
        )
        for name, asked, pending in stats.sources:
            requests.add_metric([name], asked)
            left.add_metric([name], pending)
            spent.add_metric([name], int(name in stats.quota_spent))
        yield requests
        yield left
        yield spent
        kinds = CounterMetricFamily(
            f"{PREFIX}_classified",
            "Records delivered, by the kind of the offline feeds' labels (none: no feed "
            "lists the address; a record with labels of two kinds counts once for each).",
            labels=["kind"],
        )
        for kind, count in stats.kinds:
            kinds.add_metric([kind], count)
        yield kinds


def registry_for(snapshot: Callable[[], RunCounters]) -> CollectorRegistry:
    """A registry whose only collector reads ``snapshot()`` at each collection."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RunCollector(snapshot))
    return registry


#: Connections served at once by ``metrics_listen`` (more are closed at once), and how
#: long one may stay silent: the endpoint runs inside the host's process (Cowrie's own,
#: there), so idle connections must not each keep a thread.
MAX_METRICS_CONNECTIONS: Final = 16
_METRICS_CONNECTION_TIMEOUT: Final = 5.0


class _MetricsHandler(BaseHTTPRequestHandler):
    server: _MetricsServer
    timeout = _METRICS_CONNECTION_TIMEOUT

    def do_GET(self) -> None:
        """``/metrics`` (and ``/``): the exposition format."""
        if urlsplit(self.path).path not in ("/", "/metrics"):
            self.send_error(404)
            return
        body = generate_latest(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every few seconds is not news."""


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    # A flood the kernel's accept queue cannot hold leaves the next scrape's SYN to
    # TCP's backoff (a scrape waited 30 s after 200 idle connections with the default 5).
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry) -> None:
        self.registry = registry
        self.slots = threading.BoundedSemaphore(MAX_METRICS_CONNECTIONS)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _MetricsHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection while there is a slot; else it is closed at once."""
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then give its slot back."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve_metrics(listen: str, snapshot: Callable[[], RunCounters]) -> Any:
    """Serve ``/metrics`` on ``host:port`` (a daemon thread); return the server.

    At most :data:`MAX_METRICS_CONNECTIONS` connections are served at once, each
    closed after a few silent seconds.

    :raises OSError: when the address cannot be bound.
    """
    host, _, port = listen.rpartition(":")
    server = _MetricsServer((host.strip("[]") or "127.0.0.1", int(port)), registry_for(snapshot))
    threading.Thread(target=server.serve_forever, name="cowrie-enrich-metrics", daemon=True).start()
    return server


def serve_run_metrics(listen: str, snapshot: Callable[[], RunCounters]) -> Any:
    """:func:`serve_metrics` for a run's ``metrics_listen`` (stop it with :func:`stop_serving`).

    :raises ConfigError: naming the setting, when the address cannot be bound.
    """
    try:
        return serve_metrics(listen, snapshot)
    except OSError as exc:
        raise ConfigError(
            f"metrics_listen = {listen!r}: cannot listen there ({exc.strerror or exc})"
        ) from exc


def stop_serving(server: Any) -> None:
    """Stop a server :func:`serve_metrics` started, and close its socket."""
    server.shutdown()
    server.server_close()


def metrics_text(stats: RunCounters) -> str:
    """The counters in the textfile-collector (Prometheus exposition) format."""
    return generate_latest(registry_for(lambda: stats)).decode()
