"""GreyNoise's answers in the record's shape: typed, and the same for both offerings.

A field of the wrong type (or an overlong string) is stored as ``null``; an
enterprise quick-check profile is read into the community answer's fields.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["COMMUNITY_FIELDS", "not_observed", "quick", "typed"]

#: The fields of a community answer that the record keeps.
COMMUNITY_FIELDS: Final = ("noise", "riot", "classification", "name", "link", "last_seen")


def not_observed() -> dict[str, Any]:
    """The section of an address GreyNoise has not observed."""
    return {
        "noise": False,
        "riot": False,
        "classification": None,
        "name": None,
        "link": None,
        "last_seen": None,
    }


#: The type each stored field must have (anything else is stored as ``null``).
_TYPES: Final[dict[str, type]] = {
    "noise": bool,
    "riot": bool,
    "classification": str,
    "name": str,
    "link": str,
    "last_seen": str,
    "trust_level": str,
}


def typed(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` with every field of the wrong type (or an overlong string) made ``None``."""
    typed: dict[str, Any] = {}
    for key, value in answer.items():
        kind = _TYPES.get(key)
        good = kind is not None and type(value) is kind
        if good and kind is str and len(value) > 1000:
            good = False
        typed[key] = value if good else None
    return typed


def quick(item: dict[str, Any]) -> dict[str, Any]:
    """An enterprise quick-check profile in the community answer's shape."""
    scanner = item.get("internet_scanner_intelligence")
    business = item.get("business_service_intelligence")
    scanner = scanner if isinstance(scanner, dict) else {}
    business = business if isinstance(business, dict) else {}
    riot = bool(business.get("found"))
    return {
        "noise": bool(scanner.get("found")),
        "riot": riot,
        # as the community API says it: a known business service is "benign"
        "classification": scanner.get("classification") or ("benign" if riot else None),
        "name": business.get("name") or scanner.get("actor") or None,
        "link": f"https://viz.greynoise.io/ip/{item['ip']}",
        "last_seen": scanner.get("last_seen") or None,
        "trust_level": business.get("trust_level") or None,
    }
