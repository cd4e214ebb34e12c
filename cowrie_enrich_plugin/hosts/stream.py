"""``cowrie-enrich enrich``: a filter, Cowrie's JSON lines in, the same events out, enriched.

Every line comes out once, in the order it came in. An event whose ``src_ip`` has a
record comes out with it added (``"enrich": <record>``, or ECS objects with
``--format ecs``); an event of an address not answered yet waits for its record at
most ``hold`` seconds, then goes out marked pending, and the answer follows in later
events of that address. Lines that are not events, and events without a usable
``src_ip``, pass through untouched and are counted. The event's own bytes are kept:
the enrichment is added after its last key, so the filter costs little more than
reading the lines.

Memory stays bounded however long the stream or the hold: at most
:data:`MAX_WAITING` lines wait (the oldest then goes out pending), and the records
kept for adding are bounded by ``working_set``. It is a long-lived host: pending
addresses are retried in the background and expired records refreshed.
"""

from __future__ import annotations

import json
import os
import select
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final

import pluggy

from ..addresses import InvalidAddress, classify
from ..counters import RunCounters
from ..ecs import NAMESPACE, to_ecs
from ..hookspecs import hookimpl
from .logreader import json_loads
from .reference import SignalState, end_run, live_stats, stopping_on_signals

__all__ = ["MAX_WAITING", "StreamSummary", "enrich_stream"]

#: Lines that may wait for records at once.
MAX_WAITING: Final = 200_000
_READ_BYTES: Final = 1 << 16
_IDLE: Final = 0.05
_MAX_LINE: Final = 4 * 1024 * 1024
_NOT_EVENT: Final = object()


@dataclass
class StreamSummary:
    """What a filter run did."""

    lines: int = 0
    enriched: int = 0
    pending: int = 0
    passed_through: int = 0
    no_address: int = 0
    plugin: RunCounters | None = None
    interrupted: bool = False


class _Records:
    """The host side of the hooks: the newest record per address, as JSON ready to add."""

    def __init__(self, fmt: str, limit: int) -> None:
        self.fmt = fmt
        self.limit = limit
        self.fragments: OrderedDict[str, bytes] = OrderedDict()

    @hookimpl
    def cowrie_enrichment_ready(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Keep each record (an upsert), rendered once for every event that follows."""
        for record in records:
            ip = str(record["ip"])
            self.fragments.pop(ip, None)
            self.fragments[ip] = self.render(record)
        while len(self.fragments) > self.limit:
            self.fragments.popitem(last=False)

    def render(self, record: Mapping[str, Any]) -> bytes:
        """The members to add to an event, as JSON text (without braces)."""
        if self.fmt == "ecs":
            members = to_ecs(record)
            return ",".join(
                f"{json.dumps(key)}:{json.dumps(value)}" for key, value in members.items()
            ).encode()
        return b'"enrich":' + json.dumps(record).encode()

    def pending(self, ip: str) -> bytes:
        """The members for an address whose record is not ready."""
        return self.render({"ip": ip, "status": "pending"})


def enrich_stream(
    source: IO[bytes],
    sink: IO[bytes],
    host_config: Mapping[str, Any],
    *,
    pm: pluggy.PluginManager,
    fmt: str = "native",
    hold: float = 5.0,
    working_set: int = 100_000,
    progress: Callable[[StreamSummary, RunCounters], None] | None = None,
) -> StreamSummary:
    """Filter ``source`` into ``sink`` until end of input or a signal."""
    records = _Records(fmt, working_set)
    pm.register(records, name="enrich-filter")
    summary = StreamSummary()
    keys = (b'"' + NAMESPACE.encode() + b'"', b'"source"') if fmt == "ecs" else (b'"enrich"',)
    waiting: deque[tuple[bytes, str | None, float]] = deque()
    hook = pm.hook
    try:
        with stopping_on_signals(pm, cut=False) as stop:
            try:
                hook.cowrie_ingest_start(config=host_config, pluginmanager=pm)
                _run(source, sink, pm, records, summary, waiting, keys, hold, progress, stop)
            finally:
                summary.interrupted = stop.came
                stop.ending = True
                summary.plugin = end_run(pm)
                _emit(sink, records, summary, waiting, keys, time.monotonic(), 0.0, final=True)
                sink.flush()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        pm.unregister(records)
    return summary


def _run(
    source: IO[bytes],
    sink: IO[bytes],
    pm: pluggy.PluginManager,
    records: _Records,
    summary: StreamSummary,
    waiting: deque[tuple[bytes, str | None, float]],
    keys: tuple[bytes, ...],
    hold: float,
    progress: Callable[[StreamSummary, RunCounters], None] | None,
    stop: SignalState,
) -> None:
    hook = pm.hook
    fd = source.fileno()
    canonical: dict[str, str | None] = {}
    partial = b""
    ended = False
    next_flush = 0.0
    while (not ended or waiting) and not stop.came:
        data = b""
        if not ended:
            ready, _, _ = select.select([fd], [], [], _IDLE if not waiting else 0.01)
            if ready:
                data = os.read(fd, _READ_BYTES)
                ended = not data
        lines = (partial + data).split(b"\n") if data else []
        partial = lines.pop() if lines else partial
        if len(partial) > _MAX_LINE:  # a runaway line goes through as it is
            lines.append(partial)
            partial = b""
        if ended and partial:
            lines.append(partial)
            partial = b""
        now = time.monotonic()
        events: list[dict[str, Any]] = []
        positions: list[int] = []
        append, remember = waiting.append, canonical.get
        summary.lines += len(lines)
        for line in lines:
            try:
                event = json_loads(line)
            except ValueError:
                append((line, None, now))
                continue
            ip = None
            if type(event) is dict:
                value = event.get("src_ip")
                ip = remember(value) if type(value) is str else None
                if ip is None:
                    ip = _address(value, canonical)
                if ip is None:
                    summary.no_address += 1
                else:
                    events.append(event)
                    positions.append(len(waiting))
            append((line, ip, now))
        # An empty chunk still lets the plugin deliver what became ready.
        for refused in hook.cowrie_ingest_events(events=events):
            for index, _reason in refused or ():
                # not a usable address: the event passes through untouched
                line, _ip, at = waiting[positions[index]]
                waiting[positions[index]] = (line, None, at)
                summary.no_address += 1
        if len(waiting) > MAX_WAITING:  # the oldest go out as they are
            _emit(sink, records, summary, waiting, keys, now, hold, final=True, keep=MAX_WAITING)
        # A line that waits for a new address's record asks for the batch to go now
        # (at most every hold/2 s), rather than after the polite flush_interval.
        now = time.monotonic()
        head = waiting[0] if waiting else None
        if (
            head is not None
            and now >= next_flush
            and (ended or now - head[2] >= hold / 2)
            and head[1] is not None
            and head[1] not in records.fragments
        ):
            hook.cowrie_ingest_checkpoint()
            next_flush = now + max(hold / 2, 0.5)
        _emit(sink, records, summary, waiting, keys, time.monotonic(), hold)
        sink.flush()
        if progress is not None:
            progress(summary, live_stats(pm))


def _address(value: object, canonical: dict[str, str | None]) -> str | None:
    """The canonical address a ``src_ip`` value names (``None``: none); remembered."""
    if not isinstance(value, str):
        return None
    if value in canonical:
        return canonical[value]
    verdict = classify(value)
    ip = None if isinstance(verdict, InvalidAddress) else verdict.ip
    if len(canonical) >= MAX_WAITING:
        canonical.clear()
    canonical[value] = ip
    return ip


def _emit(
    sink: IO[bytes],
    records: _Records,
    summary: StreamSummary,
    waiting: deque[tuple[bytes, str | None, float]],
    keys: tuple[bytes, ...],
    now: float,
    hold: float,
    *,
    final: bool = False,
    keep: int = 0,
) -> None:
    """Write the lines at the head that may go: in order, each once."""
    fragments = records.fragments
    out: list[bytes] = []
    add = out.append
    head, pop = waiting.__getitem__, waiting.popleft
    key = keys[0]
    enriched = passed = pending = 0
    while len(waiting) > keep:
        line, ip, arrived = head(0)
        if ip is None:
            add(line + b"\n")
            passed += 1
        else:
            fragment = fragments.get(ip)
            if fragment is None:
                if not final and now - arrived < hold:
                    break
                fragment = records.pending(ip)
                pending += 1
            else:
                enriched += 1
            if line[-1:] == b"}" and key not in line and len(keys) == 1 and line[-2:] != b"{}":
                add(line[:-1] + b"," + fragment + b"}\n")  # the common case, inline
            else:
                add(_added(line, fragment, keys))
        pop()
    summary.enriched += enriched
    summary.passed_through += passed
    summary.pending += pending
    if out:
        sink.write(b"".join(out))


def _added(line: bytes, fragment: bytes, keys: tuple[bytes, ...]) -> bytes:
    """``line`` (a JSON object) with ``fragment``'s members added after its last one."""
    body = line.rstrip()
    if body.endswith(b"}") and not any(key in body for key in keys):
        inner = body[:-1].rstrip()
        joiner = b"" if inner.endswith(b"{") else b","
        return inner + joiner + fragment + b"}\n"
    # The event already has such a key (or is oddly written): rebuild it whole.
    event = json_loads(line)
    members = json_loads(b"{" + fragment + b"}")
    event.update(members)
    return json.dumps(event).encode() + b"\n"
