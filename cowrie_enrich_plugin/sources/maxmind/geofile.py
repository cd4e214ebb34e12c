"""Is a MaxMind file usable as the kind asked for? Needs only ``maxminddb``.

Light enough for the host's process: the plugin checks the configured files at
``cowrie_ingest_start``, so a wrong or corrupt file is refused at start even though
the lookups themselves run in the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from ...errors import GeoDatabaseError

__all__ = ["ACCEPTED", "Kind", "check_file", "check_type", "option_name", "unreadable"]

Kind = Literal["city", "asn"]

#: The database types each slot takes (words of MaxMind's ``database_type``).
ACCEPTED: Final[dict[str, tuple[str, ...]]] = {
    "city": ("City", "Country", "Enterprise"),
    "asn": ("ASN", "ISP"),
}


def option_name(kind: Kind) -> str:
    """The configuration key of a slot."""
    return "geoip_city" if kind == "city" else "geoip_asn"


def unreadable(path: Path, kind: Kind, exc: Exception) -> GeoDatabaseError:
    """The error for a file that is not a MaxMind database at all."""
    return GeoDatabaseError(
        f"{option_name(kind)} file {path} is not a readable MaxMind database: {exc}"
    )


def check_type(path: Path, kind: Kind, database_type: str) -> None:
    """Refuse a file whose ``database_type`` does not fit the slot."""
    if not any(word in database_type for word in ACCEPTED[kind]):
        option = option_name(kind)
        wanted = " or ".join(ACCEPTED[kind])
        raise GeoDatabaseError(
            f"{option} file {path} is a {database_type} database; "
            f"{option} needs a {wanted} database"
        )


def check_file(path: str | Path, kind: Kind) -> None:
    """Open ``path``'s metadata and check it fits the slot.

    :raises GeoDatabaseError: naming the file and what is wrong.
    """
    import maxminddb

    file = Path(path)
    try:
        reader = maxminddb.open_database(str(file), maxminddb.MODE_MMAP)
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
        raise unreadable(file, kind, exc) from exc
    try:
        check_type(file, kind, str(reader.metadata().database_type))
    finally:
        reader.close()
