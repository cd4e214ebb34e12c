"""``cowrie-enrich doctor``: each check says OK, or what is wrong and how to fix it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from .config import ConfigError, EnrichConfig, mask_url
from .maxmind import GeoDatabase, GeoDatabaseError
from .store import StoreError, open_store
from .store_schema import SCHEMA_VERSION, current_version

__all__ = ["run_checks"]

Check = tuple[bool, str]


def run_checks(settings: Callable[[], EnrichConfig], config_path: str | None) -> Iterator[Check]:
    """Run every check in order; stop after the config check when the config is unusable."""
    try:
        config = settings()
    except ConfigError as exc:
        yield False, f"config: {exc}"
        return
    yield True, f"config: {config_path or 'defaults (no --config file)'}"
    yield _check_database(config)
    for option, path, kind in (
        ("geoip_city", config.geoip_city, "city"),
        ("geoip_asn", config.geoip_asn, "asn"),
    ):
        yield _check_geoip(option, path, kind)
    yield _check_whois(config)


def _check_database(config: EnrichConfig) -> Check:
    url = mask_url(config.db)
    try:
        store = open_store(config.db, create=False)
    except StoreError as exc:
        return False, f"database: {exc}; check the URL and that the server runs"
    try:
        with store.engine.connect() as conn:
            version = current_version(conn)
    except sa.exc.SQLAlchemyError as exc:
        return False, f"database: {url}: {exc}"
    finally:
        store.close()
    if version == 0:
        return True, f"database: {url} reachable, empty (created on the first ingest)"
    if version < SCHEMA_VERSION:
        return (
            True,
            f"database: {url} at schema {version}; upgraded to {SCHEMA_VERSION} on the next run",
        )
    if version > SCHEMA_VERSION:
        return (
            False,
            f"database: {url} is at schema {version}, newer than this version; "
            "upgrade cowrie-enrich",
        )
    return True, f"database: {url} (schema {version})"


def _check_geoip(option: str, path: str | None, kind: str) -> Check:
    if not path:
        return True, f"{option}: not configured (records carry no MaxMind data for it)"
    try:
        database = GeoDatabase(path, "city" if kind == "city" else "asn")
    except FileNotFoundError:
        return False, f"{option}: {path} does not exist; download it from MaxMind or fix the path"
    except GeoDatabaseError as exc:
        return False, f"{option}: {exc}"
    age = (time.time() - database.built_at.timestamp()) / 86400
    database.close()
    advice = "; older than 30 days: update it (geoipupdate)" if age > 30 else ""
    return (
        True,
        f"{option}: {path} ({database.database_type}, built {database.built_at:%Y-%m-%d}){advice}",
    )


def _check_whois(config: EnrichConfig) -> Check:
    where = f"{config.cymru_host}:{config.cymru_port}"
    started = time.monotonic()
    try:
        with socket.create_connection(
            (config.cymru_host, config.cymru_port), timeout=min(10.0, config.timeout)
        ):
            pass
    except OSError as exc:
        return False, (
            f"whois: cannot reach {where} ({exc}); outbound TCP port {config.cymru_port} must be "
            "open. Without it, addresses stay pending and are retried on the next run"
        )
    return True, f"whois: {where} reachable ({(time.monotonic() - started) * 1000:.0f} ms)"
