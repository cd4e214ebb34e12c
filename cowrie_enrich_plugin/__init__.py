"""cowrie-enrich: Team Cymru and MaxMind enrichment for Cowrie honeypot logs, as a pluggy plugin.

The host contract is in :mod:`cowrie_enrich_plugin.hookspecs`; the plugin registers
under the ``cowrieprocessor`` entry-point group; ``cowrie-enrich`` is the reference host.
"""

from __future__ import annotations

from .record import CymruAnswer, EnrichmentRecord, GeoAnswer, Status

__all__ = ["CymruAnswer", "EnrichmentRecord", "GeoAnswer", "Status", "__version__"]

__version__ = "0.1.0"
