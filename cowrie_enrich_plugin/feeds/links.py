"""A feed file published under a new name each time, found through the page that links it.

Microsoft publishes the Azure Service Tags weekly as ``ServiceTags_Public_YYYYMMDD.json``
and links the current file from its download page; there is no fixed URL. The update
reads the page, takes the newest link whose name matches, and downloads that. Only a
link to one of the publisher's hosts, or to the page's own host (a mirror serving both),
is followed: a page that names some other host is not a reason to download from it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from .formats import FeedFormatError

__all__ = ["Linked", "newest_link"]


@dataclass(frozen=True)
class Linked:
    """How a feed's file is found on a page.

    ``page`` is the URL key of the page; ``name`` a regular expression for the file's
    name whose first group orders the versions (the greatest is the newest); ``hosts``
    the publisher's hosts a link may point to besides the page's own.
    """

    page: str
    name: str
    hosts: frozenset[str]


def newest_link(page_url: str, body: bytes, linked: Linked) -> str:
    """The URL of the newest file ``body`` (the page at ``page_url``) links to.

    :raises FeedFormatError: the page names no such file on an allowed host.
    """
    text = body.decode("utf-8", errors="replace").replace("\\/", "/")  # JSON inside HTML
    # a link's text ends at a quote, whitespace or markup; it may be relative
    pattern = re.compile(r"""[^"'\s<>()\\]*?(""" + linked.name + ")")
    allowed = {*linked.hosts, urllib.parse.urlsplit(page_url).hostname}
    found: dict[str, str] = {}
    for match in pattern.finditer(text):
        url = urllib.parse.urljoin(page_url, match.group(0))
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname in allowed:
            version = match.group(2)
            if version not in found or url < found[version]:  # stable among equals
                found[version] = url
    if not found:
        raise FeedFormatError(
            f"{linked.page}: the page links no file named like {linked.name!r} on "
            f"{', '.join(sorted(str(h) for h in allowed))}"
        )
    return found[max(found)]
