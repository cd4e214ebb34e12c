"""The record in Elastic Common Schema names: one table, used by every ``--format ecs``.

:data:`ECS_FIELDS` maps each fact that has a true ECS home to its field; the rest of
the record (status, BGP prefix, registry, allocation date, every origin AS, Cymru's
and MaxMind's own sections, every other source) goes under one custom namespace,
:data:`NAMESPACE`. ``docs/ecs.rst`` shows the same table, and the tests check both
against ECS's own field definitions (``tests/data/ecs``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["ECS_FIELDS", "NAMESPACE", "to_ecs"]

#: The custom namespace for what ECS has no field for.
NAMESPACE: Final = "cowrie_enrich"

Extract = Callable[[Mapping[str, Any]], Any]


def _maxmind(key: str) -> Extract:
    return lambda record: (record.get("maxmind") or {}).get(key)


def _location(record: Mapping[str, Any]) -> dict[str, float] | None:
    geo = record.get("maxmind") or {}
    lat, lon = geo.get("latitude"), geo.get("longitude")
    if lat is None or lon is None:
        return None
    return {"lat": float(lat), "lon": float(lon)}


def _country(record: Mapping[str, Any]) -> Any:
    """The merged country: MaxMind's, else Cymru's registry country."""
    return record.get("country")


#: (ECS field, what the record gives it, where it comes from), in output order.
ECS_FIELDS: Final[tuple[tuple[str, Extract, str], ...]] = (
    ("source.ip", lambda r: r.get("ip"), "ip"),
    ("source.as.number", lambda r: r.get("asn"), "asn (Cymru's first origin AS, else MaxMind's)"),
    ("source.as.organization.name", lambda r: r.get("as_name"), "as_name (from the same source)"),
    ("source.geo.country_iso_code", _country, "country (MaxMind's, else Cymru's registry)"),
    ("source.geo.country_name", _maxmind("country_name"), "maxmind.country_name"),
    ("source.geo.city_name", _maxmind("city"), "maxmind.city"),
    ("source.geo.location", _location, "maxmind.latitude, maxmind.longitude"),
)

#: Record keys whose facts the ECS fields above carry in full.
_CARRIED: Final = frozenset({"ip", "asn", "as_name", "country"})


def to_ecs(record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"source": {...}, "cowrie_enrich": {...}}`` for one record; absent values left out.

    ECS fields are nested objects (``source.as.number`` is
    ``{"source": {"as": {"number": ...}}}``), as Elasticsearch documents hold them.
    """
    out: dict[str, Any] = {}
    for field, extract, _origin in ECS_FIELDS:
        value = extract(record)
        if value is None:
            continue
        node = out
        *parents, leaf = field.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    custom = {key: value for key, value in record.items() if key not in _CARRIED}
    cymru = record.get("cymru") or {}
    for key in ("prefix", "registry", "allocated", "asns"):
        if cymru.get(key) is not None:
            custom[key] = cymru[key]
    out[NAMESPACE] = custom
    return out
