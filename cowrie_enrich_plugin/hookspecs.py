"""The host contract: the hooks a Cowrie log processor and its plugins share.

A host adopts these specifications with::

    pm = pluggy.PluginManager("cowrieprocessor")
    pm.add_hookspecs(cowrie_enrich_plugin.hookspecs)
    pm.load_setuptools_entrypoints("cowrieprocessor")
    pm.check_pending()

and then calls, on one thread of its own (the *host's thread*), in this order:
``cowrie_ingest_start`` once, ``cowrie_ingest_events`` for every chunk of
parsed events with ``cowrie_ingest_checkpoint`` whenever it commits, and
``cowrie_ingest_end`` once. Plugins hand results back through
``cowrie_enrichment_ready``, which the host (and any other plugin) implements.
``cowrie_ingest_finish`` (a batch host's wait for every answer, before the end),
``cowrie_ingest_idle`` (a long-lived host's wait for input), ``cowrie_ingest_progress``
and ``cowrie_ingest_interrupted`` are optional for hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pluggy

__all__ = [
    "PROJECT_NAME",
    "cowrie_enrichment_ready",
    "cowrie_ingest_checkpoint",
    "cowrie_ingest_end",
    "cowrie_ingest_events",
    "cowrie_ingest_finish",
    "cowrie_ingest_idle",
    "cowrie_ingest_interrupted",
    "cowrie_ingest_progress",
    "cowrie_ingest_start",
    "hookimpl",
    "hookspec",
]

#: The pluggy project name and the entry-point group plugins register under.
PROJECT_NAME = "cowrieprocessor"

_F = TypeVar("_F", bound=Callable[..., Any])

_hookspec_marker = pluggy.HookspecMarker(PROJECT_NAME)

#: Marker for hook implementations, for hosts and plugins alike.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


def hookspec(func: _F) -> _F:
    """Mark ``func`` as a hook specification, keeping its signature for type checkers."""
    return _hookspec_marker(func)


# -- lifecycle: start ----------------------------------------------------------------


@hookspec
def cowrie_ingest_start(config: Mapping[str, Any], pluginmanager: pluggy.PluginManager) -> None:
    """Begin an ingest run.

    Called by the host, once per run, on the host's thread, before any event is
    passed on. Plugins read their own section of the configuration, open what they
    need (the enrichment plugin starts its engine) and refuse bad settings by
    raising :class:`ValueError` with a message that names the key.

    :param config: the host's parsed configuration, a mapping as read from its TOML
        file (``config["plugins"]["enrich"]`` is the enrichment plugin's section).
        Plugins must not modify it.
    :param pluginmanager: the host's plugin manager (pytest's name for it). Plugins
        keep it for the run and hand results back through its
        ``hook.cowrie_enrichment_ready``.
    """


# -- lifecycle: ingest ---------------------------------------------------------------


@hookspec
def cowrie_ingest_events(events: Sequence[Mapping[str, Any]]) -> Sequence[tuple[int, str]] | None:
    """Receive one chunk of parsed Cowrie events.

    Called by the host, on the host's thread, for each chunk of events it has
    parsed, any number of times between ``cowrie_ingest_start`` and
    ``cowrie_ingest_end``. Implementations must stay cheap: a set lookup per
    event, never network or database work per event; slow work happens beside
    the host and its results come back through ``cowrie_enrichment_ready`` at a
    later call. An implementation may block briefly when its bounded queue of
    work is full (backpressure), so that memory stays bounded.

    Records that are ready are delivered (``cowrie_enrichment_ready``) from inside
    this call, on the host's thread.

    :param events: the events, each a mapping as decoded from one line of
        ``cowrie.json``. Plugins must not modify them or keep them.
    :return: the events this plugin refused, as ``(index in events, reason)``
        pairs (for example a ``src_ip`` that is not an address), so that the host
        can report them with their file and line; ``None`` when all were usable.
    """


@hookspec
def cowrie_ingest_checkpoint() -> None:
    """Tell plugins that the host has committed.

    Called by the host, on the host's thread, whenever it commits its own work.
    Plugins may flush partly filled buffers and deliver, from inside this call,
    the records that are ready. The call does not wait for the network.
    """


@hookspec
def cowrie_ingest_finish() -> None:
    """Wait, delivering, while the run's work goes on: a batch host's last step before the end.

    Optional for hosts. Called by a batch host, on the host's thread, after the last
    ``cowrie_ingest_events`` and before ``cowrie_ingest_end``. Returns once every
    address the plugin collected has its record delivered (from inside this call),
    or when the work stops moving (no batch in flight, nothing answered for a
    while), or soon after ``cowrie_ingest_interrupted``. Not bounded by
    ``shutdown_timeout``: each batch is bounded by the plugin's own timeout and
    retries. Long-lived hosts do not call it. Records are delivered as they
    arrive, never on a timer.
    """


@hookspec
def cowrie_ingest_idle(seconds: float) -> bool | None:
    """The host has nothing to hand on and would sleep: plugins may wait instead.

    Optional for hosts. Called by a long-lived host (a follower at the end of its
    file), on the host's thread. A plugin waits on its own work for at most
    ``seconds``, delivering records as they arrive, and returns ``True`` when it
    waited. A host whose call got no ``True`` sleeps by itself.
    """


@hookspec
def cowrie_ingest_end() -> Mapping[str, Any] | None:
    """End an ingest run.

    Called by the host once, on the host's thread, after the last
    ``cowrie_ingest_events``. Returns when every address the plugin collected is
    either resolved (and delivered through ``cowrie_enrichment_ready`` from inside
    this call) or durably recorded as pending in the plugin's store, and in any
    case within the plugin's ``shutdown_timeout`` (a batch host that wants every
    answer first calls ``cowrie_ingest_finish``). A
    host that never calls it (crash, kill) loses nothing: what was collected but
    not resolved is re-collected on the next run or found as pending in the store.

    :return: the plugin's counters for the run (events, bad source addresses, new
        addresses, cache hits, batches, retries, failures, pending, delivered), or
        ``None``.
    """


@hookspec
def cowrie_ingest_interrupted() -> None:
    """Tell plugins that the host is stopping early (Ctrl-C, SIGTERM).

    Optional for hosts. Called by the host, on the host's thread (a signal handler
    may call it), before or during ``cowrie_ingest_end``. Plugins stop waiting for
    the network: ``cowrie_ingest_end`` then returns within the plugin's
    ``shutdown_timeout``, and what is unanswered stays pending for the next run.
    Must only set a flag: it may run in the middle of another hook call.
    """


@hookspec
def cowrie_ingest_progress() -> Mapping[str, int] | None:
    """Ask plugins for their counters so far, for a progress display.

    Optional for hosts; called on the host's thread between other calls, or from
    another thread of the host while it waits in ``cowrie_ingest_end``. Returns the
    same keys as ``cowrie_ingest_end`` (``None``: nothing to report).
    """


# -- results -------------------------------------------------------------------------


@hookspec
def cowrie_enrichment_ready(records: Sequence[Mapping[str, Any]]) -> None:
    """Receive enrichment records.

    Called by the enrichment plugin, always on the host's thread and only from
    inside one of the host's own calls of ``cowrie_ingest_events``,
    ``cowrie_ingest_checkpoint``, ``cowrie_ingest_finish``, ``cowrie_ingest_idle``
    or ``cowrie_ingest_end``. Implemented by the host, and by any other plugin that
    wants the records. In a batch run each
    address's record is delivered once; hosts treat a delivery as an upsert by
    ``ip``.

    :param records: one mapping per address, in the exported record shape:
        ``ip``, ``status`` (``enriched``, ``unannounced``, ``skipped`` or
        ``pending``), ``cymru``, ``maxmind``, ``expires_at`` and the merged
        ``asn``, ``as_name`` and ``country``. Absent values are ``None``.
    """
