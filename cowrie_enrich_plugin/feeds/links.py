"""A feed file published under a new name each time, found through the page that links it.

Microsoft publishes the Azure Service Tags weekly as ``ServiceTags_Public_YYYYMMDD.json``
and links the current file from its download page; there is no fixed URL. The update
reads the page, takes the newest link whose name matches, and downloads that. Only a
link to one of the publisher's hosts, or to the page's own host (a mirror serving both),
is taken: a page that names some other host is not a reason to download from it. (An
HTTP redirect of the page or the file is followed as for every feed.)
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
    # A link's text ends at a quote, whitespace or markup; it is absolute, or relative
    # with a folder (a bare name is the page's text about the file, not a link to it).
    pattern = re.compile(r"""[^"'\s<>()\\=]*/(""" + linked.name + ")")
    page = urllib.parse.urlsplit(page_url)
    found: dict[str, tuple[int, str]] = {}
    for match in pattern.finditer(text):
        try:
            url = urllib.parse.urljoin(page_url, match.group(0))
            parts = urllib.parse.urlsplit(url)
            host = parts.hostname
        except ValueError:  # not a URL after all (a stray bracket): not a link
            continue
        # The publisher's hosts first, then the page's own (a mirror); never plain HTTP
        # from a page read over HTTPS.
        rank = 0 if host in linked.hosts else 1 if host == page.hostname else None
        if rank is None or parts.scheme not in ("http", "https"):
            continue
        if parts.scheme == "http" and page.scheme == "https":
            continue
        version = match.group(2)
        if version not in found or (rank, url) < found[version]:
            found[version] = (rank, url)
    if not found:
        allowed = {*linked.hosts, page.hostname}
        raise FeedFormatError(
            f"{linked.page}: the page links no file named like {linked.name!r} on "
            f"{', '.join(sorted(str(h) for h in allowed))}"
        )
    return found[max(found)][1]
