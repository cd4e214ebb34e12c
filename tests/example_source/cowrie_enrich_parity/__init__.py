"""The parity of an address's last byte, as a cowrie-enrich source (an example)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from cowrie_enrich_plugin.checks import Setting
from cowrie_enrich_plugin.sources.plugin import Lookup


class ParityLookup:
    """Answers every address; counts its calls so that tests can see the cache work."""

    batch_size = 50
    concurrency = 2

    def __init__(self, ttl_hours: float, label: str) -> None:
        self.ttl = dt.timedelta(hours=ttl_hours)
        self.negative_ttl = dt.timedelta(hours=ttl_hours)
        self.label = label
        self.calls = 0
        self._lock = threading.Lock()

    def lookup(self, ips: Sequence[str]) -> Lookup:
        with self._lock:
            self.calls += 1
        result = Lookup(requests=1)
        for ip in ips:
            last = ipaddress.ip_address(ip).packed[-1]
            result.answers[ip] = {"parity": "even" if last % 2 == 0 else "odd", "label": self.label}
        return result

    def close(self) -> None:
        pass


class ParityPlugin:
    settings: ClassVar[dict[str, Setting]] = {
        "ttl_hours": Setting(float, 48.0, low=0, high=10_000, low_open=True),
        "label": Setting(str, "parity"),
    }

    def open(self, settings: Mapping[str, Any]) -> ParityLookup:
        return ParityLookup(float(settings["ttl_hours"]), str(settings["label"]))

    def check(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        return "OK", f"answers from memory, fresh for {settings['ttl_hours']:g} h"


SOURCE = ParityPlugin()
