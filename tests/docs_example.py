"""Load ``docs/example_host.py`` (the documented host) as a module, for tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example_host.py"


def run_example_host(log: str, config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Run the documented host over ``log`` and return the records it received, by IP."""
    spec = importlib.util.spec_from_file_location("example_host", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.main(log, config).records)
