"""The suite's helpers: data it writes (:mod:`.data`), processes it starts (:mod:`.processes`),
PostgreSQL sessions it ends (:mod:`.postgres`).

Test modules import them from here, never from ``conftest.py`` or from another test
module; ``conftest.py`` holds only fixtures and hooks.
"""

from .data import (
    SHARED_DATA,
    Disguised,
    global_ips,
    host_config,
    refused_whois_config,
    shared_data,
    write_log,
)
from .postgres import end_other_sessions
from .processes import (
    assert_complete,
    clean_env,
    cowrie_enrich,
    feeds_env,
    pip_installed,
    run_ingest,
    write_config,
)

__all__ = [
    "SHARED_DATA",
    "Disguised",
    "assert_complete",
    "clean_env",
    "cowrie_enrich",
    "end_other_sessions",
    "feeds_env",
    "global_ips",
    "host_config",
    "pip_installed",
    "refused_whois_config",
    "run_ingest",
    "shared_data",
    "write_config",
    "write_log",
]
