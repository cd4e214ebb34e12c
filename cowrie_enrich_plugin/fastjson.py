"""Parsing JSON: with orjson when the ``fast`` extra is installed, else the standard library.

orjson reads the same values two to three times as fast. Both take ``bytes`` or
``str`` and raise a ``ValueError`` for what is not JSON; on nesting too deep, the
standard library raises ``RecursionError`` where orjson raises ``ValueError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["json_loads"]

try:
    import orjson

    json_loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - the extra is not installed
    json_loads = json.loads
