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
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from itertools import repeat
from operator import itemgetter
from typing import IO, Any, Final

import pluggy

from ..counters import RunCounters
from ..ecs import NAMESPACE, to_ecs
from ..fastjson import json_loads
from ..hookspecs import hookimpl
from .kit import SignalState, end_run, live_stats, stopping_on_signals
from .lines import MAX_WAITING, Batch, Waiting, all_end_with_brace, parse_batch

__all__ = ["MAX_WAITING", "StreamSummary", "enrich_stream"]

#: Bytes per read: of 64, 128 and 256 KiB, 128 was the fastest here (fewer turns of the
#: loop, lines still in the cache when written).
_READ_BYTES: Final = 1 << 17
_IDLE: Final = 0.05
_MAX_LINE: Final = 4 * 1024 * 1024
_WITHOUT_BRACE: Final = itemgetter(slice(None, -2))  # a line less its "}\n"
_KEY: Final = "enrich"  # the member the native format adds


@dataclass
class StreamSummary:
    """What a filter run did."""

    lines: int = 0
    #: events that went out with a final record (enriched, unannounced, skipped)
    enriched: int = 0
    #: events that went out with no record yet, or a pending one
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
        #: native format: what replaces an event's closing brace (``,"enrich":{...}}\n``)
        self.tails: dict[str, bytes] = {}
        #: addresses whose kept record is a pending one (their events go out pending)
        self.unanswered: set[str] = set()

    @hookimpl
    def cowrie_enrichment_ready(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Keep each record (an upsert), rendered once for every event that follows."""
        fragments, tails, native = self.fragments, self.tails, self.fmt != "ecs"
        unanswered = self.unanswered
        for record in records:
            ip = str(record["ip"])
            fragments.pop(ip, None)
            fragments[ip] = fragment = self.render(record)
            if native:
                tails[ip] = b"," + fragment + b"}\n"
            if record["status"] == "pending":
                unanswered.add(ip)
            else:
                unanswered.discard(ip)
        while len(fragments) > self.limit:
            ip, _fragment = fragments.popitem(last=False)
            tails.pop(ip, None)
            unanswered.discard(ip)

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
    waiting = Waiting()
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
    waiting: Waiting,
    keys: tuple[bytes, ...],
    hold: float,
    progress: Callable[[StreamSummary, RunCounters], None] | None,
    stop: SignalState,
) -> None:
    hook = pm.hook
    fd = source.fileno()
    canonical: dict[str, str | None] = {}
    names = tuple(key.strip(b'"').decode() for key in keys)  # the members added
    partial = b""
    #: a line longer than ``_MAX_LINE`` is being passed through, piece by piece
    runaway = False
    ended = False
    next_flush = 0.0
    while (not ended or waiting) and not stop.came:
        data = b""
        if not ended:
            ready, _, _ = select.select([fd], [], [], _IDLE if not waiting else 0.01)
            if ready:
                data = os.read(fd, _READ_BYTES)
                ended = not data
        # Lines keep their newline: BytesIO finds them with memchr, a third of split's cost.
        lines = BytesIO(data).readlines() if data else []
        if lines:
            if partial:  # the line left over from the last read goes on here
                lines[0] = partial + lines[0]
            partial = lines.pop() if lines[-1][-1:] != b"\n" else b""
        if ended and partial:  # the last line goes out with a newline
            lines.append(partial + b"\n")
            partial = b""
        elif ended and runaway and not lines:  # a runaway last line ends here
            lines.append(b"\n")
        now = time.monotonic()
        if runaway and lines:  # the end of a runaway line: through as it is, not parsed
            waiting.add(Batch([lines.pop(0)], [None], now, False))
            summary.lines += 1
            runaway = False
        piece = b""
        if len(partial) > _MAX_LINE:  # a runaway line goes through as it is, in pieces
            piece, partial, runaway = partial, b"", True
        summary.lines += len(lines)
        batch, events, positions, missing = parse_batch(lines, canonical, now)
        summary.no_address += missing
        # An event with a member of those added already is rebuilt, not appended to:
        # judged on the parsed event, so that a name written with escapes counts too.
        batch.keyed = set()
        if any(map(dict.__contains__, events, repeat(names[0]))) or (
            len(names) > 1 and any(map(dict.__contains__, events, repeat(names[1])))
        ):
            keyed = [i for i, event in enumerate(events) if not event.keys().isdisjoint(names)]
            batch.keyed = {positions[i] for i in keyed} if positions else set(keyed)
        if len(keys) == 1:
            batch.plain = not batch.keyed and all_end_with_brace(lines)
        waiting.add(batch)
        if piece:
            waiting.add(Batch([piece], [None], now, False))
        # An empty chunk still lets the plugin deliver what became ready.
        for refused in hook.cowrie_ingest_events(events=events):
            for index, _reason in refused or ():
                # not a usable address: the event passes through untouched
                batch.ips[index if positions is None else positions[index]] = None
                summary.no_address += 1
        if len(waiting) > MAX_WAITING:  # the oldest go out as they are
            _emit(sink, records, summary, waiting, keys, now, hold, final=True, keep=MAX_WAITING)
        # A line that waits for a new address's record asks for the batch to go now
        # (at most every hold/2 s), rather than after the polite flush_interval.
        now = time.monotonic()
        head = waiting.head()
        if (
            head is not None
            and now >= next_flush
            and (ended or now - head[1] >= hold / 2)
            and head[0] is not None
            and head[0] not in records.fragments
        ):
            hook.cowrie_ingest_checkpoint()
            next_flush = now + max(hold / 2, 0.5)
        _emit(sink, records, summary, waiting, keys, time.monotonic(), hold)
        sink.flush()
        if progress is not None:
            progress(summary, live_stats(pm))


def _emit(
    sink: IO[bytes],
    records: _Records,
    summary: StreamSummary,
    waiting: Waiting,
    keys: tuple[bytes, ...],
    now: float,
    hold: float,
    *,
    final: bool = False,
    keep: int = 0,
) -> None:
    """Write the lines at the head that may go: in order, each once."""
    fragments, tails, unanswered = records.fragments, records.tails, records.unanswered
    batches = waiting.batches
    enriched = passed = pending = 0
    while batches and waiting.count > keep:
        batch = batches[0]
        lines, ips, start, arrived = batch.lines, batch.ips, batch.start, batch.arrived
        end = min(len(lines), start + waiting.count - keep)
        if batch.plain and ips[start] in tails:  # each an event with its record? all at once
            some = ips if start == 0 and end == len(ips) else ips[start:end]
            added = list(map(tails.get, some))  # type: ignore[arg-type]
            if None not in added:
                parts: list[bytes | None] = [None] * (2 * len(added))
                parts[::2] = map(_WITHOUT_BRACE, lines[start:end] if some is not ips else lines)
                parts[1::2] = added
                sink.write(b"".join(parts))  # type: ignore[arg-type]
                late = sum(map(unanswered.__contains__, some)) if unanswered else 0
                enriched += len(added) - late
                pending += late
                _written(waiting, batch, end)
                continue
        out: list[bytes] = []
        add = out.append
        index = start
        while index < end:
            line, ip = lines[index], ips[index]
            if ip is None:  # a piece of a runaway line has no newline
                add(line)
                passed += line[-1:] == b"\n"
            else:
                fragment = fragments.get(ip)
                if fragment is None:
                    if not final and now - arrived < hold:
                        break
                    fragment = records.pending(ip)
                    pending += 1
                elif ip in unanswered:
                    pending += 1
                else:
                    enriched += 1
                keyed = None if batch.keyed is None else index in batch.keyed
                size = len(line) - (line[-1:] == b"\n")  # the last line may lack one
                brace, pair = line[size - 1 : size], line[max(size - 2, 0) : size]
                if keyed is False and brace == b"}" and pair != b"{}":
                    add(line[: size - 1] + b"," + fragment + b"}\n")  # the common case, inline
                else:
                    add(_added(line, fragment, keys, keyed))
            index += 1
        if out:
            sink.write(b"".join(out))
        _written(waiting, batch, index)
        if index < end:  # a line waits for its record: so do the ones after it
            break
    summary.enriched += enriched
    summary.passed_through += passed
    summary.pending += pending


def _written(waiting: Waiting, batch: Batch, upto: int) -> None:
    """The lines of ``batch`` before ``upto`` are written."""
    waiting.count -= upto - batch.start
    if upto == len(batch.lines):
        waiting.batches.popleft()
    else:
        batch.start = upto


def _added(
    line: bytes, fragment: bytes, keys: tuple[bytes, ...], keyed: bool | None = None
) -> bytes:
    """``line`` (a JSON object) with ``fragment``'s members added after its last one.

    ``keyed``: whether the event has such a member already (``None``: whether its
    text holds one of ``keys``).
    """
    body = line.rstrip()
    if keyed is None:
        keyed = any(key in body for key in keys)
    if body.endswith(b"}") and not keyed:
        inner = body[:-1].rstrip()
        joiner = b"" if inner.endswith(b"{") else b","
        return inner + joiner + fragment + b"}\n"
    # The event already has such a key (or is oddly written): rebuild it whole.
    try:
        event = json_loads(line)
        members = json_loads(b"{" + fragment + b"}")
        _merge(event, members)
        return json.dumps(event).encode() + b"\n"
    except (ValueError, RecursionError):  # nested deeper than the writer goes: as it is
        return line if line[-1:] == b"\n" else line + b"\n"


def _merge(event: dict[str, Any], members: dict[str, Any]) -> None:
    """Add ``members`` to ``event``; an object both have is merged, ours winning per field.

    So that an event's own ``source.port`` stays beside the ECS ``source.ip`` and
    ``source.as`` added (a native ``enrich`` member is ours whole, and replaced whole).
    """
    for key, value in members.items():
        mine = event.get(key)
        if key != _KEY and isinstance(mine, dict) and isinstance(value, dict):
            _merge(mine, value)
        else:
            event[key] = value
