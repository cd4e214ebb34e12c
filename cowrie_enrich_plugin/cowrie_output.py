"""A Cowrie output plugin: every attacker address enriched inside the honeypot itself.

Cowrie imports output plugins only from its own ``cowrie/output/`` folder, so
enabling this one is one file there, ``cowrie/output/enrich.py``, holding
``from cowrie_enrich_plugin.cowrie_output import Output`` (``cowrie-enrich
cowrie-install`` writes it and says where), and a section in ``cowrie.cfg``::

    [output_enrich]
    enabled = true
    db = sqlite:////var/lib/cowrie/enrich.db
    greynoise_api_key = ...        # a source's keys as <source>_<key>
    result_format = ecs            # ECS fields (source.*) in the event (default: native)

The keys are those of ``[plugins.enrich]``, written as Cowrie's strings and
converted and checked the same way. The plugin is a long-lived host of the hooks:
``write`` runs on Cowrie's reactor thread and only hands the address on (the
network and database work happens in the worker process); results are polled once a
second and come back as ``cowrie.enrich.result`` events with the ``session`` and
``src_ip`` of the first event of that address, the record under ``enrich``. A
pending record that later resolves, or an expired one refreshed, comes back once
more. At shutdown it waits at most ``shutdown_timeout`` seconds; what is unanswered
stays pending in the store and is resolved after the next start. A setting it
cannot start with (a typo, a missing extra, a database it cannot open) is one error
line in ``cowrie.log`` naming it, and Cowrie runs on without this output.

Works with Cowrie 3.x, which gives output plugins ``dispatch``. Cowrie 2.x has no
``dispatch``: there this plugin would have to emit its events with
``twisted.python.log.msg(eventid=..., ...)`` instead, and 2.x's Python 2-era
``cowrie.core.output.Output.emit`` path would call ``write`` with ``src_ip`` as
``bytes`` in some events.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

import cowrie.core.output
from cowrie.core.config import CowrieConfig
from twisted.internet import task
from twisted.logger import Logger

from .config import PLUGIN_NAME, section_from_strings
from .ecs import to_ecs
from .errors import ConfigError, GeoDatabaseError, StoreError, WorkerError
from .hookspecs import hookimpl
from .hosts.kit import end_run, make_plugin_manager

__all__ = ["RESULT_EVENT", "Output"]

RESULT_EVENT: Final = "cowrie.enrich.result"
SECTION: Final = "output_enrich"
#: How often ready records are collected from the worker, in seconds.
_POLL_SECONDS: Final = 1.0
#: The keys of ``[output_enrich]`` that are Cowrie's or this host's, not the plugin's.
_HOST_KEYS: Final = ("enabled", "result_format")
#: Sessions remembered (the first event of each address) for attributing results.
_REMEMBERED: Final = 100_000


class Output(cowrie.core.output.Output):  # type: ignore[misc]
    """The ``enrich`` output engine (``[output_enrich]``)."""

    _log = Logger()

    #: ``None`` until started, and for good when it could not start
    pm: Any = None

    def start(self) -> None:
        """Read ``[output_enrich]``, start the plugin's engine and the poll loop.

        What the operator must mend is said in one line; Cowrie runs on without it.
        """
        try:
            self._start()
        except (ConfigError, GeoDatabaseError, StoreError, WorkerError) as exc:
            self.pm = None
            self._log.error(
                "enrich: not started: {why}; Cowrie runs on without enrichment until "
                "[output_enrich] is mended and Cowrie restarted",
                why=str(exc),
            )

    def _start(self) -> None:
        items = {
            key: value
            for key, value in CowrieConfig.items(SECTION, raw=True)
            if key not in _HOST_KEYS and CowrieConfig.has_option(SECTION, key)
        }
        result_format = CowrieConfig.get(SECTION, "result_format", fallback="native").strip()
        if result_format not in ("native", "ecs"):
            raise ConfigError(
                f"[{SECTION}]: result_format = {result_format!r} is not allowed; "
                "result_format must be native or ecs"
            )
        self.ecs = result_format == "ecs"
        section = section_from_strings(items, f"[{SECTION}]", _HOST_KEYS)
        section.setdefault("lifecycle", "long-lived")
        self.host_config = {"plugins": {PLUGIN_NAME: section}}
        self.first_seen: OrderedDict[str, tuple[object, object]] = OrderedDict()
        # This package's plugin alone: Cowrie's process loads no one else's entry points.
        pm = make_plugin_manager(
            self.host_config, own={"cowrie": _Results(self)}, entry_points=False
        )
        pm.hook.cowrie_ingest_start(config=self.host_config, pluginmanager=pm)
        self.pm = pm
        self.loop = task.LoopingCall(self._poll)
        self.loop.start(_POLL_SECONDS, now=False)

    def write(self, event: dict[str, Any]) -> None:
        """Hand the event's address on (cheap: no network, no database here)."""
        if self.pm is None:
            return
        if str(event.get("eventid", "")).startswith("cowrie.enrich."):
            return  # our own results are not enriched again
        ip = event.get("src_ip")
        if not isinstance(ip, str):
            return
        if ip not in self.first_seen:
            self.first_seen[ip] = (event.get("session"), ip)
            if len(self.first_seen) > _REMEMBERED:
                self.first_seen.popitem(last=False)
        self.pm.hook.cowrie_ingest_events(events=(event,))

    def _poll(self) -> None:
        """Deliver what is ready (an empty chunk of events polls without flushing)."""
        try:
            self.pm.hook.cowrie_ingest_events(events=())
        except Exception:
            self._log.failure("enrich: collecting results failed")

    def stop(self) -> None:
        """Stop within ``shutdown_timeout``; what is unanswered stays pending."""
        if self.pm is None:
            return
        if self.loop.running:
            self.loop.stop()
        try:
            self.pm.hook.cowrie_ingest_interrupted()
            end_run(self.pm)
        except Exception:
            self._log.failure("enrich: ending failed; unanswered addresses stay pending")

    def emit_result(self, record: Mapping[str, Any]) -> None:
        """One ``cowrie.enrich.result`` event for a record."""
        ip = str(record["ip"])
        session, src_ip = self.first_seen.get(ip, (None, ip))
        asn, country = record.get("asn"), record.get("country")
        # ECS's fields go where dashboards look for them (source.*, and the package's
        # own namespace), the native record under "enrich".
        fields = to_ecs(record) if self.ecs else {"enrich": dict(record)}
        self.dispatch(
            eventid=RESULT_EVENT,
            session=session,
            src_ip=src_ip,
            **fields,
            message=(
                f"enrich: {ip} {record['status']}"
                + (f" AS{asn}" if asn is not None else "")
                + (f" {country}" if country else "")
            ),
        )


class _Results:
    """The host's ``cowrie_enrichment_ready``: each record becomes a Cowrie event."""

    def __init__(self, output: Output) -> None:
        self.output = output

    @hookimpl
    def cowrie_enrichment_ready(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Dispatch one result event per record (skipped addresses included)."""
        for record in records:
            self.output.emit_result(record)
