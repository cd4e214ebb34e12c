"""``python -I -m cowrie_enrich_plugin.engine``: the worker process beside a host."""

import sys

from .serve import main

sys.exit(main())
