"""The cache: records and the work queue in a SQLAlchemy database (SQLite or PostgreSQL).

:class:`Store` is the façade (:mod:`.facade`); :mod:`.schema` holds the tables and
their migrations, :mod:`.rows` how a record becomes a row, :mod:`.sql` and
:mod:`.bulk` the statements, :mod:`.outcomes` how whois batches' outcomes are written,
:mod:`.leases` who holds a lease, :mod:`.retry` which database errors pass.
"""

from ..errors import StoreError
from .census import StoreStats
from .facade import Store
from .opening import open_store
from .schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "StoreStats",
    "open_store",
]
