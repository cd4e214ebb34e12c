"""The ``cowrie-enrich`` command: the reference host and the operator's tools.

Each command lives in a module of its own; :mod:`.options` holds what they share
(common options, exit codes). The store, whois and MaxMind modules (SQLAlchemy,
geoip2) are imported by the commands that use them: ``ingest`` runs them in its
worker process, never in this one.
"""

from __future__ import annotations

import importlib
from typing import Final

import click

__all__ = ["main"]

#: Each command's module and name there, imported when the command runs (or help lists
#: it): ``enrich``, a filter started per pipeline, does not wait for the others.
_COMMANDS: Final = {
    "ingest": (".ingest", "ingest"),
    "enrich": (".enrich", "enrich"),
    "consume": (".consume", "consume"),
    "lookup": (".records", "lookup"),
    "export": (".records", "export"),
    "cache": (".cache", "cache"),
    "doctor": (".doctor", "doctor"),
    "feeds": (".feeds", "feeds"),
    "cowrie-install": (".cowrie_install", "cowrie_install"),
}


class _Commands(click.Group):
    """A group whose commands are imported when they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _COMMANDS:
            module, name = _COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module, __name__), name)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cowrie-enrich-plugin")
def main() -> None:
    """Enrich Cowrie honeypot attacker IPs with Team Cymru bulk whois and MaxMind GeoIP2."""
