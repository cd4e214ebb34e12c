"""Write small MaxMind databases at test time with ``mmdb-writer`` (known networks, known fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

CITY_NETWORKS: dict[str, dict[str, Any]] = {
    "81.2.69.0/24": {
        "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
        "city": {"names": {"en": "London"}},
        "location": {"latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": 10},
    },
    "2a02:cf40::/32": {
        "country": {"iso_code": "NO", "names": {"en": "Norway"}},
        "city": {"names": {"en": "Oslo"}},
        "location": {"latitude": 59.9127, "longitude": 10.7461, "accuracy_radius": 50},
    },
    "5.6.0.0/16": {
        "country": {"iso_code": "DE", "names": {"en": "Germany"}},
        "location": {"latitude": 51.0, "longitude": 9.0, "accuracy_radius": 500},
    },
}

ASN_NETWORKS: dict[str, dict[str, Any]] = {
    "1.128.0.0/11": {
        "autonomous_system_number": 1221,
        "autonomous_system_organization": "Telstra Pty Ltd",
    },
    "81.2.69.0/24": {
        "autonomous_system_number": 20712,
        "autonomous_system_organization": "Andrews & Arnold Ltd",
    },
}


def write_mmdb(path: Path, database_type: str, networks: dict[str, dict[str, Any]]) -> Path:
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description={"en": f"cowrie-enrich test {database_type}"},
    )
    for network, content in networks.items():
        writer.insert_network(IPSet([network]), content)
    writer.to_db_file(str(path))
    return path


def write_city(path: Path, networks: dict[str, dict[str, Any]] | None = None) -> Path:
    return write_mmdb(path, "GeoLite2-City", networks or CITY_NETWORKS)


def write_asn(path: Path, networks: dict[str, dict[str, Any]] | None = None) -> Path:
    return write_mmdb(path, "GeoLite2-ASN", networks or ASN_NETWORKS)
