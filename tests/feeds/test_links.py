"""Finding a renamed feed file on the page that links it."""

from __future__ import annotations

import pytest

from cowrie_enrich_plugin.feeds.catalog import BUILT_IN
from cowrie_enrich_plugin.feeds.formats import FeedFormatError
from cowrie_enrich_plugin.feeds.links import newest_link

AZURE = BUILT_IN["azure"].linked["url"]
PAGE = "https://www.microsoft.com/en-us/download/details.aspx?id=56519"
FILE = "https://download.microsoft.com/download/7/1/D/71D86715-5596-4529-9B13-DA13A5DE5B63/"


def test_the_newest_file_on_an_allowed_host_wins() -> None:
    page = (
        f'<a href="{FILE}ServiceTags_Public_20261123.json">old</a>'
        # the page's data, JSON with escaped slashes
        + '{"url":"'
        + FILE.replace("/", "\\/")
        + 'ServiceTags_Public_20261130.json"}'
        # newer, but on a host that is neither Microsoft's nor the page's
        + '<a href="https://evil.example/ServiceTags_Public_20991231.json">x</a>'
        + "<a href='https://download.microsoft.com.evil.example/ServiceTags_Public_20991230.json'>"
    ).encode()
    assert newest_link(PAGE, page, AZURE) == FILE + "ServiceTags_Public_20261130.json"


def test_a_relative_link_is_on_the_pages_own_host() -> None:
    mirror = "http://mirror.example:8080/azure/index.html"
    body = b'<a href="files/ServiceTags_Public_20261130.json">file</a>'
    assert newest_link(mirror, body, AZURE) == (
        "http://mirror.example:8080/azure/files/ServiceTags_Public_20261130.json"
    )


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>Service unavailable</html>", b'<a href="ServiceTags_Public_2026.json">'],
)
def test_a_page_without_the_link_names_what_was_looked_for(body: bytes) -> None:
    with pytest.raises(FeedFormatError, match="ServiceTags_Public_"):
        newest_link(PAGE, body, AZURE)


def test_a_mirror_page_names_the_file_and_links_it() -> None:
    """A bare name is text about the file; a stray bracket, plain HTTP from an HTTPS page
    and another host are not links to follow."""
    mirror = "https://mirror.example/azure/"
    body = (
        b'{"name":"ServiceTags_Public_20261130.json"}'
        b'<a href="http://[x/ServiceTags_Public_20261130.json">broken</a>'
        b'<a href="http://mirror.example/ServiceTags_Public_20261130.json">plain</a>'
        b'<a href="/azure/files/ServiceTags_Public_20261130.json">file</a>'
    )
    assert newest_link(mirror, body, AZURE) == (
        "https://mirror.example/azure/files/ServiceTags_Public_20261130.json"
    )
    # the publisher's own host wins over the page's among links to one version
    both = body + f'<a href="{FILE}ServiceTags_Public_20261130.json">'.encode()
    assert newest_link(mirror, both, AZURE) == FILE + "ServiceTags_Public_20261130.json"
