"""A stand-in for the enrichment worker: the host-side floor of the ``host-floor`` scenario.

It speaks the engine's messages (``cowrie_enrich_plugin.channel``) but does no work:
every address it is handed comes back at once, in records of the real shape, in
messages of up to one batch. With it behind the plugin, a run measures what the
host's own thread pays (collecting, sending, receiving, delivering) when the
worker costs nothing, so that the host's share can be told from the worker's.
It is a measuring instrument for ``benchmarks/run.py``, not part of the package.
"""

from __future__ import annotations

import sys
from typing import Any

from cowrie_enrich_plugin.channel import (
    Done,
    End,
    Flush,
    NewAddresses,
    Ready,
    Records,
    SkippedAddresses,
    read_message,
    write_message,
)
from cowrie_enrich_plugin.counters import RunCounters
from cowrie_enrich_plugin.record import CymruAnswer, EnrichmentRecord, Status, utc_now

BATCH = 500


def main() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    if read_message(stdin) is None:
        return 2
    write_message(stdout, Ready())
    now = utc_now()
    answer = CymruAnswer(
        (64500,), "EXAMPLE-AS - Example, US", "192.0.2.0/24", "US", "arin", None, now
    )
    template = EnrichmentRecord("0.0.0.0", Status.ENRICHED, answer, None, now).to_dict()
    waiting: list[dict[str, Any]] = []
    delivered = 0
    while True:
        message = read_message(stdin)
        if message is None:
            return 3
        if isinstance(message, NewAddresses | SkippedAddresses):
            waiting.extend({**template, "ip": ip} for ip in message.ips)
        while len(waiting) >= BATCH or (waiting and isinstance(message, Flush | End)):
            part, waiting = waiting[:BATCH], waiting[BATCH:]
            write_message(stdout, Records(part, None))
            delivered += len(part)
        if isinstance(message, End):
            write_message(stdout, Done(RunCounters(resolved=delivered)))
            return 0


if __name__ == "__main__":
    sys.exit(main())
