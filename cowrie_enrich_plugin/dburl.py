"""What the ``db`` setting names, read without importing SQLAlchemy (safe in the host).

``postgres://`` (a common spelling, which SQLAlchemy refuses) and ``postgresql://``
are read as ``postgresql+psycopg://``. A SQLite URL names a file whose folder must
exist; the reference host and the plugin check it at start, the store again when it
opens.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError, StoreError

__all__ = ["check_db_location", "mask_url", "normalize_db_url", "scrub", "sqlite_file"]


def mask_url(url: str) -> str:
    """``url`` as it may be shown: any password replaced by ``***``.

    Every message, log line and file that names the database goes through here, in
    every failure mode; it reads the text itself, so that a URL no parser accepts is
    masked too. The password is all between the user's ``:`` and the last ``@``: it
    may hold ``/``, ``#``, ``?`` or ``@`` itself (more is masked than needed, never less).
    """
    # libpq takes a password as a query parameter too (``?password=...``).
    url = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")
    if at < 0:
        return url
    credentials = rest[:at]
    user, colon, _password = credentials.partition(":")
    if not colon:
        return url
    return f"{scheme}{sep}{user}:***{rest[at:]}"


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with every piece of its password masked.

    A password written with a raw ``@`` or ``/`` is split by the URL's parser, and a
    piece of it can come back in the driver's words (as a host name it cannot find).
    """
    _scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    _user, colon, password = rest[: max(at, 0)].partition(":")
    if not sep or at < 0 or not colon or not password:
        return text
    pieces = {password, *re.split(r"[@/:?#]", password)}
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 3:
            text = text.replace(piece, "***")
    return text


def normalize_db_url(url: str) -> str:
    """``url`` with the ``postgres`` scheme spelled as SQLAlchemy wants it, and a driver.

    :raises ConfigError: naming ``db`` when it is not a URL at all.
    """
    scheme, sep, _rest = url.partition("://")
    if not sep or not scheme or any(c.isspace() for c in scheme):
        raise ConfigError(
            f"db = {mask_url(url)!r} is not a database URL; write e.g. sqlite:///cowrie-enrich.db "
            "or postgresql+psycopg://user@host/dbname"
        )
    if scheme in ("postgres", "postgresql"):
        # The driver the ``postgresql`` extra installs (psycopg 3); SQLAlchemy's own
        # default differs between versions (psycopg2 before 2.1).
        return "postgresql+psycopg" + url[len(scheme) :]
    if scheme.startswith("postgres+"):
        return "postgresql" + url[len("postgres") :]
    return url


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (``None``: not SQLite, or in memory)."""
    scheme, _, rest = normalize_db_url(url).partition("://")
    if scheme.split("+")[0] != "sqlite":
        return None
    path = rest[1:].split("?")[0] if rest.startswith("/") else ""
    if path in ("", ":memory:"):
        return None
    return Path(path)


def check_db_location(url: str, *, must_exist: bool = False) -> None:
    """Refuse a SQLite file whose folder (or, with ``must_exist``, itself) is absent.

    :raises StoreError: naming the missing folder or file.
    :raises ConfigError: when ``url`` is not a database URL.
    """
    path = sqlite_file(url)
    if path is None:
        return
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot open the database {mask_url(url)!r}: "
            f"the directory {path.parent} does not exist"
        )
    if must_exist and not path.exists():
        raise StoreError(
            f"no database at {path}: nothing has been enriched with this db yet "
            "(run cowrie-enrich ingest first, or check --db)"
        )
