"""The feeds' official formats, read whole into entries: a prefix and what it is.

Each reader takes the downloaded bodies by URL key (``url``, ``url_v4``, ...) and
returns :class:`Parsed`, or raises :class:`FeedFormatError` saying what is wrong and
where. A reader accepts only what its format allows: a page of HTML, an empty body,
a JSON document cut short or a listing without a single prefix is an error, never an
empty feed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "READERS",
    "Entry",
    "FeedFormatError",
    "Parsed",
    "Reader",
    "digest",
    "network",
]


class FeedFormatError(ValueError):
    """A downloaded body is not what the feed's format says; the message says where."""


class Entry(NamedTuple):
    """One listed prefix (canonical text) and what the feed says of it."""

    prefix: str
    service: str | None = None
    region: str | None = None
    #: the feed's own name of the entry: an Azure tag, a Spamhaus SBL id, a relay
    ident: str | None = None


class Parsed(NamedTuple):
    """A feed's entries and the version it gives itself (``None``: none given)."""

    entries: list[Entry]
    version: str | None


#: Reads the bodies of one feed, by URL key.
Reader = Callable[[Mapping[str, bytes]], Parsed]


def digest(bodies: Mapping[str, bytes]) -> str:
    """A version for a feed that gives none: the first 16 hex digits of its bytes' SHA-256."""
    sha = hashlib.sha256()
    for key in sorted(bodies):
        sha.update(key.encode() + b"\0" + bodies[key] + b"\0")
    return sha.hexdigest()[:16]


def network(text: str, where: str) -> str:
    """``text`` as a canonical prefix (a bare address becomes a /32 or /128).

    Host bits set (``10.0.0.1/8``) are refused: a feed that writes them is garbled.
    """
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        raise FeedFormatError(f"{where}: {text.strip()[:80]!r} is not a prefix ({exc})") from None


def _text(body: bytes, key: str) -> str:
    """The body as text, refused when empty, HTML, or not UTF-8."""
    head = body.lstrip()[:64].lower()
    if not head:
        raise FeedFormatError(f"{key}: the download is empty")
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        raise FeedFormatError(f"{key}: the download is an HTML page, not the feed")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedFormatError(f"{key}: not UTF-8 text at byte {exc.start}") from None


def _json(body: bytes, key: str) -> Any:
    text = _text(body, key)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FeedFormatError(
            f"{key}: not whole JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def _member(data: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get(name), kind):
        raise FeedFormatError(f"{where}: no {name!r} {kind.__name__} where the format has one")
    return data[name]


def _optional(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value)
    if not text.isascii():  # a JSON escape may spell a lone surrogate, which UTF-8 cannot hold
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


#: A feed's version: a string as an entry's values are.
_version = _optional


def read_aws(bodies: Mapping[str, bytes]) -> Parsed:
    """AWS ``ip-ranges.json``: ``prefixes`` and ``ipv6_prefixes``, ``syncToken``."""
    data = _json(bodies["url"], "url")
    entries: list[Entry] = []
    for listing, member in (("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")):
        for n, item in enumerate(_member(data, listing, list, "url")):
            where = f"url: {listing}[{n}]"
            prefix = network(str(_member(item, member, str, where)), where)
            entries.append(
                Entry(prefix, _optional(item.get("service")), _optional(item.get("region")))
            )
    return Parsed(entries, _version(data.get("syncToken")))


def read_google(bodies: Mapping[str, bytes]) -> Parsed:
    """Google Cloud ``cloud.json``: ``prefixes`` of ``ipv4Prefix`` or ``ipv6Prefix``."""
    data = _json(bodies["url"], "url")
    entries: list[Entry] = []
    for n, item in enumerate(_member(data, "prefixes", list, "url")):
        where = f"url: prefixes[{n}]"
        if not isinstance(item, dict):
            raise FeedFormatError(f"{where}: not an object")
        text = item.get("ipv4Prefix") or item.get("ipv6Prefix")
        if not isinstance(text, str):
            raise FeedFormatError(f"{where}: neither ipv4Prefix nor ipv6Prefix")
        entries.append(
            Entry(
                network(text, where), _optional(item.get("service")), _optional(item.get("scope"))
            )
        )
    return Parsed(entries, _version(data.get("syncToken")))


def read_azure(bodies: Mapping[str, bytes]) -> Parsed:
    """Azure Service Tags: ``values[{name, properties{region, systemService, ...}}]``.

    Each tag's ``properties.addressPrefixes`` are its entries.
    """
    data = _json(bodies["url"], "url")
    entries: list[Entry] = []
    for n, tag in enumerate(_member(data, "values", list, "url")):
        where = f"url: values[{n}]"
        name = _optional(tag.get("name")) if isinstance(tag, dict) else None
        props = _member(tag, "properties", dict, where)
        service = _optional(props.get("systemService")) or name
        region = _optional(props.get("region"))
        for text in _member(props, "addressPrefixes", list, where):
            entries.append(Entry(network(str(text), where), service, region, name))
    return Parsed(entries, _version(data.get("changeNumber")))


def read_oracle(bodies: Mapping[str, bytes]) -> Parsed:
    """Oracle Cloud ``public_ip_ranges.json``: ``regions[{region, cidrs[{cidr, tags}]}]``."""
    data = _json(bodies["url"], "url")
    entries: list[Entry] = []
    for n, region in enumerate(_member(data, "regions", list, "url")):
        where = f"url: regions[{n}]"
        name = _optional(region.get("region")) if isinstance(region, dict) else None
        for item in _member(region, "cidrs", list, where):
            prefix = network(str(_member(item, "cidr", str, where)), where)
            tags = item.get("tags")
            service = _optional(",".join(map(str, tags))) if isinstance(tags, list) else None
            entries.append(Entry(prefix, service, name))
    return Parsed(entries, _version(data.get("last_updated_timestamp")))


def _lines(body: bytes, key: str) -> Iterable[tuple[int, str]]:
    """The numbered lines of a text body that are neither blank nor ``#`` comments."""
    for number, line in enumerate(_text(body, key).splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text:
            yield number, text


def _listing(body: bytes, key: str) -> list[Entry]:
    return [Entry(network(text, f"{key}: line {n}")) for n, text in _lines(body, key)]


def read_prefix_lists(bodies: Mapping[str, bytes]) -> Parsed:
    """One prefix a line in each body (Cloudflare's ``ips-v4`` and ``ips-v6``)."""
    entries = [entry for key in sorted(bodies) for entry in _listing(bodies[key], key)]
    return Parsed(entries, None)


def read_netset(bodies: Mapping[str, bytes]) -> Parsed:
    """FireHOL's netset: ``#`` comments, prefixes and single addresses."""
    return read_prefix_lists(bodies)


def read_geofeed(bodies: Mapping[str, bytes]) -> Parsed:
    """An RFC 8805 geofeed: ``prefix,country,region,city,postal`` with ``#`` comments.

    The label's region is the feed's region code (``US-NJ``), else its country.
    """
    entries: list[Entry] = []
    text = "\n".join(
        line if not line.lstrip().startswith("#") else ""
        for line in _text(bodies["url"], "url").splitlines()
    )
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not row[0].strip():
            continue
        where = f"url: line {number}"
        cells = [cell.strip() for cell in row] + [""] * 4
        entries.append(Entry(network(cells[0], where), None, cells[2] or cells[1] or None))
    return Parsed(entries, None)


def read_tor(bodies: Mapping[str, bytes]) -> Parsed:
    """TorDNSEL's ``exit-addresses`` (IPv4), and Onionoo ``details`` for IPv6 exits."""
    entries: list[Entry] = []
    relay: str | None = None
    for number, line in _lines(bodies["url"], "url"):
        word, _, rest = line.partition(" ")
        if word == "ExitNode":
            relay = rest.strip() or None
        elif word == "ExitAddress":
            address = rest.split(" ", 1)[0]
            entries.append(Entry(network(address, f"url: line {number}"), None, None, relay))
        elif word not in ("Published", "LastStatus"):
            raise FeedFormatError(f"url: line {number}: {word[:40]!r} is not an exit-list field")
    if "onionoo_url" in bodies:
        entries.extend(_onionoo_exits(bodies["onionoo_url"]))
    return Parsed(entries, None)


def _accepts_any(summary: Any) -> bool:
    """Whether an Onionoo exit-policy summary lets anything out."""
    if not isinstance(summary, dict):
        return False
    if summary.get("accept"):
        return True
    rejected = summary.get("reject")
    return isinstance(rejected, list) and rejected != ["1-65535"]


def _onionoo_exits(body: bytes) -> list[Entry]:
    data = _json(body, "onionoo_url")
    found: list[Entry] = []
    for n, relay in enumerate(_member(data, "relays", list, "onionoo_url")):
        if not isinstance(relay, dict) or not _accepts_any(relay.get("exit_policy_v6_summary")):
            continue
        for address in relay.get("or_addresses") or ():
            text = str(address)
            if text.startswith("["):
                where = f"onionoo_url: relays[{n}]"
                found.append(
                    Entry(
                        network(text[1:].split("]", 1)[0], where),
                        None,
                        None,
                        _optional(relay.get("fingerprint")),
                    )
                )
    return found


def read_spamhaus(bodies: Mapping[str, bytes]) -> Parsed:
    """Spamhaus DROP JSON lines: ``{cidr, sblid, rir}``, then a ``metadata`` line.

    The metadata line must be there and its ``records`` count must match: a listing
    cut short is refused.
    """
    entries: list[Entry] = []
    stamps: list[str] = []
    for key in sorted(bodies):
        metadata: dict[str, Any] | None = None
        count = 0
        for number, line in _lines(bodies[key], key):
            where = f"{key}: line {number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                raise FeedFormatError(f"{where}: not a JSON object") from None
            if not isinstance(item, dict):
                raise FeedFormatError(f"{where}: not a JSON object")
            if item.get("type") == "metadata":
                metadata = item
                continue
            prefix = network(str(_member(item, "cidr", str, where)), where)
            entries.append(
                Entry(prefix, None, _optional(item.get("rir")), _optional(item.get("sblid")))
            )
            count += 1
        if metadata is None:
            raise FeedFormatError(f"{key}: no metadata line: the listing is cut short")
        records = metadata.get("records")
        if isinstance(records, int) and records != count:
            raise FeedFormatError(f"{key}: {count} entries where the metadata says {records}")
        stamps.append(_version(metadata.get("timestamp")) or "")
    return Parsed(entries, "/".join(stamps) if any(stamps) else None)


#: The readers by format name (the name a feed's definition uses).
READERS: dict[str, Reader] = {
    "aws": read_aws,
    "google": read_google,
    "azure": read_azure,
    "oracle": read_oracle,
    "prefix-lists": read_prefix_lists,
    "geofeed": read_geofeed,
    "tor": read_tor,
    "spamhaus-drop": read_spamhaus,
    "netset": read_netset,
}
