"""The ``cowrie-enrich`` command: the reference host and the operator's tools.

Each command lives in a module of its own; :mod:`.options` holds what they share
(common options, exit codes). The store, whois and MaxMind modules (SQLAlchemy,
geoip2) are imported by the commands that use them: ``ingest`` runs them in its
worker process, never in this one.
"""

from __future__ import annotations

import click

from .cache import cache
from .cowrie_install import cowrie_install
from .doctor import doctor
from .enrich import enrich
from .ingest import ingest
from .records import export, lookup

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cowrie-enrich-plugin")
def main() -> None:
    """Enrich Cowrie honeypot attacker IPs with Team Cymru bulk whois and MaxMind GeoIP2."""


for _command in (ingest, enrich, lookup, export, cache, doctor, cowrie_install):
    main.add_command(_command)
