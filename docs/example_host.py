"""A complete small host for the cowrie-enrich plugin (run by the test suite)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

import cowrie_enrich_plugin.hookspecs as hookspecs


class MyHost:
    """Keeps the records it is handed; a real host would write them to its database."""

    def __init__(self) -> None:
        self.records: dict[str, Mapping[str, Any]] = {}

    @hookspecs.hookimpl
    def cowrie_enrichment_ready(self, records: Sequence[Mapping[str, Any]]) -> None:
        for record in records:
            self.records[record["ip"]] = record


def main(log_path: str, config: Mapping[str, Any]) -> MyHost:
    pm = pluggy.PluginManager("cowrieprocessor")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints("cowrieprocessor")
    pm.check_pending()
    host = MyHost()
    pm.register(host)

    pm.hook.cowrie_ingest_start(config=config, pluginmanager=pm)
    try:
        with open(log_path, "rb") as log:
            chunk: list[dict[str, Any]] = []
            for line in log:
                chunk.append(json.loads(line))
                if len(chunk) == 1000:
                    pm.hook.cowrie_ingest_events(events=chunk)
                    chunk = []
            if chunk:
                pm.hook.cowrie_ingest_events(events=chunk)
        # Optional: wait for every answer the network gives (the end alone is bounded by
        # shutdown_timeout, and leaves what is unanswered pending for the next run).
        pm.hook.cowrie_ingest_finish()
    finally:
        pm.hook.cowrie_ingest_end()
    return host


if __name__ == "__main__":
    found = main(sys.argv[1], {"plugins": {"enrich": {"db": "sqlite:///enrich.db"}}})
    for ip, record in sorted(found.records.items()):
        print(ip, record["status"], record["asn"], record["country"])
