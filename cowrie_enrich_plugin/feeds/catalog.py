"""What a feed is (its kind, provider, URLs, format, cadence, terms) and which feeds exist.

The twelve built-in feeds are defined here; a third-party package adds one through
the entry-point group ``cowrie_enrich.feeds``, naming a :class:`Feed`::

    # pyproject.toml
    [project.entry-points."cowrie_enrich.feeds"]
    my_list = "my_package:FEED"

    # my_package/__init__.py
    FEED = Feed(name="my_list", kind="scanner", provider="example",
                urls={"url": "https://example.net/list.txt"}, read=read_prefix_lists)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .formats import (
    Reader,
    read_aws,
    read_azure,
    read_geofeed,
    read_google,
    read_netset,
    read_oracle,
    read_prefix_lists,
    read_spamhaus,
    read_tor,
)
from .links import Linked

__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "INDEX_FOLDER",
    "MIRROR_FOLDER",
    "SECTION_KEYS",
    "Feed",
    "installed_feeds",
]

ENTRY_POINT_GROUP: Final = "cowrie_enrich.feeds"
#: The folders of the feeds' ``dir`` that are not feeds: the compiled indexes, and the
#: installed bodies under names that stay (:mod:`.installed`, :mod:`.mirror`).
INDEX_FOLDER: Final = "index"
MIRROR_FOLDER: Final = "mirror"
#: The keys of ``[plugins.enrich.feeds]`` itself, beside each feed's table.
SECTION_KEYS: Final = ("dir", "enabled", "refresh")
#: A feed's name is a folder of ``dir`` and a table of the config; a URL key, a file's
#: name in the mirror and a key of that table.
_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_KEY: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TAKEN: Final = frozenset({INDEX_FOLDER, MIRROR_FOLDER, *SECTION_KEYS})
_DAY: Final = 86_400.0


@dataclass(frozen=True)
class Feed:
    """One offline feed: where it comes from and how it is read.

    ``urls`` maps each URL key (``url``, ``url_v4``, ...) to its default; keys in
    ``optional`` may be set to ``""`` in the config to leave that part out.
    ``min_refresh`` is the shortest interval the publisher allows between downloads.
    ``linked`` names, for a URL key whose default is ``""``, the page its file is found
    on when the config does not set it (:mod:`.links`).
    """

    name: str
    kind: str
    provider: str
    urls: Mapping[str, str]
    read: Reader
    refresh: float = _DAY
    min_refresh: float = 0.0
    optional: frozenset[str] = field(default_factory=frozenset)
    #: the publisher's terms and the attribution it asks for, in one line
    terms: str = ""
    linked: Mapping[str, Linked] = field(default_factory=dict)


def _geofeed(name: str, provider: str, url: str, terms: str) -> Feed:
    return Feed(name, "hosting", provider, {"url": url}, read_geofeed, terms=terms)


#: The built-in feeds, by name, in the documented order.
BUILT_IN: Final[Mapping[str, Feed]] = {
    feed.name: feed
    for feed in (
        Feed(
            "aws",
            "cloud",
            "aws",
            {"url": "https://ip-ranges.amazonaws.com/ip-ranges.json"},
            read_aws,
            terms="Published by Amazon Web Services for anyone's use; no attribution asked.",
        ),
        Feed(
            "google",
            "cloud",
            "google",
            {"url": "https://www.gstatic.com/ipranges/cloud.json"},
            read_google,
            terms="Published by Google Cloud for customers' firewall rules; no attribution asked.",
        ),
        Feed(
            "azure",
            "cloud",
            "azure",
            # Published weekly under a new name, ServiceTags_Public_YYYYMMDD.json, linked
            # from its download page; ``url`` (a mirror) replaces the page.
            {"url": "", "page": "https://www.microsoft.com/en-us/download/details.aspx?id=56519"},
            read_azure,
            refresh=7 * _DAY,
            terms="Microsoft Azure Service Tags, under the Microsoft Download Center's terms.",
            linked={
                "url": Linked(
                    "page",
                    r"ServiceTags_Public_(\d{8})\.json",
                    frozenset({"download.microsoft.com"}),
                )
            },
        ),
        Feed(
            "oracle",
            "cloud",
            "oracle",
            {"url": "https://docs.oracle.com/en-us/iaas/tools/public_ip_ranges.json"},
            read_oracle,
            terms="Published by Oracle Cloud Infrastructure; no attribution asked.",
        ),
        Feed(
            "cloudflare",
            "cdn",
            "cloudflare",
            {
                "url_v4": "https://www.cloudflare.com/ips-v4",
                "url_v6": "https://www.cloudflare.com/ips-v6",
            },
            read_prefix_lists,
            terms="Published by Cloudflare for origin allow-lists; no attribution asked.",
        ),
        _geofeed(
            "digitalocean",
            "digitalocean",
            "https://digitalocean.com/geo/google.csv",
            "DigitalOcean's RFC 8805 geofeed, public.",
        ),
        _geofeed(
            "linode",
            "linode",
            "https://geoip.linode.com/",
            "Akamai/Linode's RFC 8805 geofeed, public.",
        ),
        _geofeed(
            "vultr",
            "vultr",
            "https://geofeed.constant.com/?text",
            "Vultr's RFC 8805 geofeed, public.",
        ),
        _geofeed(
            "hetzner",
            "hetzner",
            # the geofeed its RIPE inetnum objects name (RFC 9632 ``geofeed:``)
            "https://www.hetzner.com/geofeed.csv",
            "Hetzner's RFC 8805 geofeed, public.",
        ),
        Feed(
            "tor",
            "tor_exit",
            "tor",
            {
                "url": "https://check.torproject.org/exit-addresses",
                "onionoo_url": "https://onionoo.torproject.org/details?type=relay&running=true"
                "&fields=fingerprint,or_addresses,exit_policy_v6_summary",
            },
            read_tor,
            refresh=3_600.0,
            optional=frozenset({"onionoo_url"}),
            terms="The Tor Project's TorDNSEL and Onionoo data, CC BY 3.0 US: "
            "credit The Tor Project.",
        ),
        Feed(
            "spamhaus_drop",
            "drop",
            "spamhaus",
            {
                "url_v4": "https://www.spamhaus.org/drop/drop_v4.json",
                "url_v6": "https://www.spamhaus.org/drop/drop_v6.json",
            },
            read_spamhaus,
            min_refresh=3_600.0,
            terms="Spamhaus DROP: free for use with attribution to The Spamhaus Project; "
            "download at most once an hour.",
        ),
        Feed(
            "firehol_level1",
            "blocklist",
            "firehol",
            {"url": "https://iplists.firehol.org/files/firehol_level1.netset"},
            read_netset,
            terms="FireHOL's level 1 list, assembled from other lists under their own terms.",
        ),
    )
}


@functools.cache
def installed_feeds() -> Mapping[str, Feed]:
    """Every feed: the built-in ones, then those of ``cowrie_enrich.feeds`` entry points.

    A third-party feed may not take a built-in name. One whose name is not a plain
    name (a folder of ``dir`` and a table of the config: lower-case letters, digits,
    ``_`` and ``-``, a letter first, and not ``index``, ``mirror`` or a key of the
    feeds section), whose entry point does not load, which does not name a
    :class:`Feed` of its own name, or whose URL keys are not plain keys, is left out
    with a warning (a name is judged before its module is imported).
    """
    import logging
    from importlib.metadata import entry_points

    from ..hosts.discovery import entry_points as listed_entry_points
    from ..hosts.discovery import load_value

    # The fast reader of the reference host's discovery; importlib.metadata where it
    # cannot see the distributions (zip archives, eggs, custom finders).
    points = listed_entry_points(ENTRY_POINT_GROUP)
    if points is None:
        points = [(p.name, p.value) for p in entry_points(group=ENTRY_POINT_GROUP)]
    found: dict[str, Feed] = dict(BUILT_IN)
    warn = logging.getLogger(__name__).warning
    for name, value in points:
        if name in found:
            continue
        if not _NAME.fullmatch(name) or name in _TAKEN:
            warn(
                "feed %s (%s) is left out: a feed's name is lower-case letters, digits, _ "
                "and - (a letter first), and none of %s",
                name,
                value,
                ", ".join(sorted(_TAKEN)),
            )
            continue
        try:
            feed = load_value(value)
        except Exception as exc:  # a broken plugin must not stop the others
            warn("feed %s (%s) does not load: %s", name, value, exc)
            continue
        if not isinstance(feed, Feed) or feed.name != name:
            warn("feed %s (%s) names no Feed called %r", name, value, name)
            continue
        odd = [key for key in feed.urls if not _KEY.fullmatch(key) or key == "refresh"]
        if odd:
            warn(
                "feed %s (%s) is left out: its URL key(s) %s are not lower-case letters, "
                "digits and _ (a letter first), or are 'refresh'",
                name,
                value,
                ", ".join(map(repr, odd)),
            )
            continue
        found[name] = feed
    return found
