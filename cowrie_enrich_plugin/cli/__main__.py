"""``python -m cowrie_enrich_plugin.cli``: the ``cowrie-enrich`` command."""

from ..command import run

run()
