"""``python -m cowrie_enrich_plugin.engine``: the worker process beside a host (see transport)."""

import sys

from .serve import main

sys.exit(main())
