"""Tests of the offline feeds."""

from __future__ import annotations

import json
from typing import Any


def feeds_toml(section: dict[str, Any]) -> str:
    """A host config file: ``[plugins.enrich]``'s keys, then its ``feeds`` table and subtables.

    Written by hand: TOML wants every key of a table before its subtables.
    """
    feeds = section.get("feeds", {})
    lines = ["[plugins]", 'enabled = ["enrich"]', "[plugins.enrich]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in section.items() if k != "feeds"]
    lines.append("[plugins.enrich.feeds]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in feeds.items() if not isinstance(v, dict)]
    for name, table in feeds.items():
        if isinstance(table, dict):
            lines.append(f"[plugins.enrich.feeds.{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
