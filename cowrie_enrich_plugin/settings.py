"""The enrichment plugin's settings: each key, its type, range and default.

:class:`EnrichConfig` holds a run's checked values; :data:`RULES` says what each
top-level key accepts. Where the values come from (the host's TOML section, the
environment, the command line) and in which order is :mod:`.config`'s business;
the sources read their own keys' rules here (:func:`rules_of`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from .checks import Setting, check_value
from .dburl import mask_url
from .errors import ConfigError
from .feeds.settings import FeedsConfig
from .sources.cymru import MAX_BACKOFF_SECONDS, MAX_BATCH_SIZE

#: The plugin's name: its entry point and its section, ``[plugins.enrich]``.
PLUGIN_NAME: Final = "enrich"

__all__ = ["DEFAULTS", "LIVE_FLUSH_INTERVAL", "RULES", "EnrichConfig", "check_setting", "rules_of"]

#: ``flush_interval`` of a long-lived run when none is configured.
LIVE_FLUSH_INTERVAL: Final = 30.0


@dataclass(frozen=True)
class EnrichConfig:
    """The validated settings of the enrichment plugin (``docs/configuration.rst``)."""

    db: str = "sqlite:///cowrie-enrich.db"
    cymru_host: str = "whois.cymru.com"
    cymru_port: int = 43
    batch_size: int = MAX_BATCH_SIZE
    concurrency: int = 2
    timeout: float = 30.0
    retries: int = 4
    flush_interval: float = 5.0
    ttl_days: float = 30.0
    negative_ttl_hours: float = 24.0
    geoip_city: str | None = None
    geoip_asn: str | None = None
    #: Where the network and database work runs: a worker process beside the host
    #: (default; keeps the host's own thread free) or a thread of the host's process.
    worker: str = "process"
    #: The longest ``cowrie_ingest_end`` waits, in seconds, in any run.
    shutdown_timeout: float = 10.0
    #: ``batch``: a run that ends (each address delivered once); ``long-lived``: a host
    #: that runs for weeks (pending addresses retried in the background and delivered
    #: again, expired records refreshed when seen again, memory bounded).
    lifecycle: str = "batch"
    #: Addresses a long-lived run's host side remembers; the store holds the rest (the
    #: engine keeps only what is in flight).
    working_set: int = 100_000
    #: A long-lived run delivers each record once, and again only when it changes, even
    #: after its address left the working set; ``true`` delivers it again whenever its
    #: address comes back after that (for hosts that keep no records of their own, such
    #: as the ``enrich`` filter, which adds the record to every event).
    redeliver: bool = False
    #: A long-lived run's first background retry of a pending address, in seconds;
    #: each further failure doubles it, up to 16 times.
    retry_interval: float = 300.0
    #: ``host:port`` of a Prometheus ``/metrics`` endpoint for long-lived runs (empty: off).
    metrics_listen: str | None = None
    #: This sensor's name among those sharing the database (empty: the host's name): its
    #: output holds its own input's addresses, and the records it delivered pending are
    #: owed to it finished, across restarts.
    sensor: str = ""
    #: The enabled sources besides Cymru and MaxMind: (name, ((key, value), ...)).
    #: (Not in the repr: a source's settings may hold an API key.)
    sources: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = field(default=(), repr=False)
    #: The offline feeds (``[plugins.enrich.feeds]``); none unless configured.
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    #: The (source, key) pairs of :attr:`sources` known to hold no secret: only those
    #: are shown (a config built without :func:`.config.resolve_config` shows none).
    public_settings: frozenset[tuple[str, str]] = field(
        default=frozenset(), repr=False, compare=False
    )

    def source_settings(self, name: str) -> dict[str, Any]:
        """The checked settings of the enabled source ``name``."""
        return dict(dict(self.sources)[name])

    @property
    def long_lived(self) -> bool:
        """Whether the host runs for weeks (see ``lifecycle``)."""
        return self.lifecycle == "long-lived"

    @property
    def sensor_name(self) -> str:
        """``sensor``, or this host's name."""
        return self.sensor or socket.gethostname()

    @property
    def longest_batch_seconds(self) -> float:
        """The longest one whois batch can take: every attempt times out, with backoff."""
        return (self.timeout + MAX_BACKOFF_SECONDS) * self.retries

    @property
    def lease_seconds(self) -> float:
        """How long a lease holds (whois's batch, a network source's call), with margin."""
        return self.longest_batch_seconds + 30.0

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping (the database URL's password masked)."""
        values = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("sources", "feeds")
        }
        values["db"] = mask_url(self.db)
        values["feeds"] = {
            "enabled": list(self.feeds.enabled),
            "dir": self.feeds.dir,
            **{
                name: {k: mask_url(str(v)) for k, v in items} for name, items in self.feeds.settings
            },
        }
        values.pop("public_settings")
        for name, items in self.sources:
            values[name] = {
                key: value if (name, key) in self.public_settings or not value else "***"
                for key, value in items
            }
        return values


DEFAULTS: Final = EnrichConfig()


RULES: Final[Mapping[str, Setting]] = {
    "db": Setting(str),
    "cymru_host": Setting(str),
    "cymru_port": Setting(int, low=1, high=65535),
    "batch_size": Setting(int, low=1, high=MAX_BATCH_SIZE),
    "concurrency": Setting(int, low=1, high=8),
    "timeout": Setting(float, low=0, high=600, low_open=True),
    "retries": Setting(int, low=1, high=20),
    "flush_interval": Setting(float, low=0, high=3600, low_open=True),
    "ttl_days": Setting(float, low=0, high=3650, low_open=True),
    "negative_ttl_hours": Setting(float, low=0, high=87600, low_open=True),
    "geoip_city": Setting(str, optional=True),
    "geoip_asn": Setting(str, optional=True),
    "worker": Setting(str, choices=("process", "thread")),
    "shutdown_timeout": Setting(float, low=0, high=3600, low_open=True),
    "lifecycle": Setting(str, choices=("batch", "long-lived")),
    "working_set": Setting(int, low=1000, high=100_000_000),
    "retry_interval": Setting(float, low=0, high=86_400, low_open=True),
    "redeliver": Setting(bool),
    "metrics_listen": Setting(str, optional=True),
    "sensor": Setting(str),
}


def check_setting(key: str, value: object, where: str) -> Any:
    """``value`` of the top-level ``key``, checked (``where`` names its origin in messages).

    :raises ConfigError: naming the key and what it accepts.
    """
    value = check_value(key, RULES[key], value, where)
    if key == "metrics_listen" and value is not None:
        host, sep, port = str(value).rpartition(":")
        if (
            not sep
            or not port.isdigit()
            or not 0 < int(port) < 65536
            or not _bare_host(host.strip("[]") or "127.0.0.1")
        ):
            raise ConfigError(f"{where}: metrics_listen = {value!r} must be HOST:PORT")
    if key == "sensor" and len(str(value)) > 160:  # the store's column
        raise ConfigError(f"{where}: sensor must be at most 160 characters")
    if key == "cymru_host" and not _bare_host(str(value)):
        raise ConfigError(f"{where}: cymru_host = {value!r} must be a bare host name or address")
    return value


def _bare_host(text: str) -> bool:
    """A host name, an IPv4 address or an IPv6 address (unbracketed): no port, no path."""
    if ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True
    return not any(c.isspace() or c in "/@[]" for c in text)


def rules_of(*keys: str) -> dict[str, Setting]:
    """The rules of some top-level keys, with their defaults (the built-in sources')."""
    return {key: dataclasses.replace(RULES[key], default=getattr(DEFAULTS, key)) for key in keys}
