"""A loopback HTTP server for feeds, able to misbehave, and sample feeds in the official formats.

:class:`FeedServer` serves bytes by path with an ``ETag`` and a ``Last-Modified``,
answers conditional requests with ``304``, and counts what it was asked. Per path it
can misbehave (:meth:`FeedServer.misbehave`): ``"html"`` (an error page with
``200``), ``"empty"``, ``"truncate"`` (half the body, honest length), ``"short"``
(half the body, the whole length announced), ``"500"``.

:func:`sample_feeds` writes the twelve built-in feeds in their formats, and
:func:`feeds_table` points a ``[plugins.enrich.feeds]`` table at a server holding
them::

    with FeedServer(sample_feeds()) as server:
        section = {"feeds": feeds_table(server, tmp_path / "feeds")}
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

__all__ = ["SAMPLE_PATHS", "FeedServer", "feeds_table", "sample_feeds"]

#: Where :func:`sample_feeds` puts each built-in feed's URL keys.
SAMPLE_PATHS: Final[Mapping[str, Mapping[str, str]]] = {
    "aws": {"url": "/aws/ip-ranges.json"},
    "google": {"url": "/google/cloud.json"},
    "azure": {"page": "/azure/details.aspx"},
    "oracle": {"url": "/oracle/public_ip_ranges.json"},
    "cloudflare": {"url_v4": "/cloudflare/ips-v4", "url_v6": "/cloudflare/ips-v6"},
    "digitalocean": {"url": "/digitalocean/google.csv"},
    "linode": {"url": "/linode/geofeed.csv"},
    "vultr": {"url": "/vultr/geofeed.csv"},
    "hetzner": {"url": "/hetzner/geofeed.csv"},
    "tor": {"url": "/tor/exit-addresses", "onionoo_url": "/tor/details.json"},
    "spamhaus_drop": {"url_v4": "/spamhaus/drop_v4.json", "url_v6": "/spamhaus/drop_v6.json"},
    "firehol_level1": {"url": "/firehol/firehol_level1.netset"},
}


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=1).encode()


def _spamhaus(rows: list[tuple[str, str, str]], stamp: int) -> bytes:
    lines = [json.dumps({"cidr": c, "sblid": s, "rir": r}) for c, s, r in rows]
    meta = {"type": "metadata", "timestamp": stamp, "size": 0, "records": len(rows)}
    return ("\n".join([*lines, json.dumps(meta)]) + "\n").encode()


def _azure_page(version: int) -> bytes:
    """Microsoft's download page, as far as the update reads it: links to the current file.

    A link to the file on a host that is neither Microsoft's nor this server is there
    too, newer, as a trap: it must not be followed.
    """
    name = f"ServiceTags_Public_{20261200 + version}.json"
    return (
        "<html><body><h1>Azure IP Ranges and Service Tags</h1>"
        f'<a href="/azure/{name}" class="download">Download</a>'
        '<script>{"url":"https:\\/\\/elsewhere.example\\/ServiceTags_Public_29991231.json"}'
        "</script></body></html>"
    ).encode()


def _geofeed(*rows: str) -> bytes:
    return ("\n".join(rows) + "\n").encode()


def sample_feeds(version: int = 1) -> dict[str, bytes]:
    """The twelve built-in feeds, small, by :data:`SAMPLE_PATHS` path; ``version`` changes them.

    Every version lists the same well-known prefixes; a higher ``version`` adds one
    more prefix to each feed and changes the versions the feeds give themselves.
    """
    v = version
    stamp = 1764892800 + v
    aws_v4 = [
        ("3.5.140.0/22", "AMAZON", "ap-northeast-2"),
        ("3.5.140.0/22", "EC2", "ap-northeast-2"),
        ("3.0.0.0/9", "AMAZON", "GLOBAL"),
        ("52.94.76.0/22", "AMAZON", "us-west-2"),
        (f"18.{v}.0.0/16", "EC2", "eu-west-1"),
    ]
    aws_v6 = [("2600:1f00::/24", "AMAZON", "GLOBAL"), ("2600:1f14::/35", "EC2", "us-west-2")]
    files = {
        "/aws/ip-ranges.json": _json(
            {
                "syncToken": str(stamp),
                "createDate": "2026-12-05-00-00-00",
                "prefixes": [
                    {"ip_prefix": p, "region": r, "service": s, "network_border_group": r}
                    for p, s, r in aws_v4
                ],
                "ipv6_prefixes": [
                    {"ipv6_prefix": p, "region": r, "service": s, "network_border_group": r}
                    for p, s, r in aws_v6
                ],
            }
        ),
        "/google/cloud.json": _json(
            {
                "syncToken": str(stamp * 1000),
                "creationTime": "2026-12-05T00:00:00.000000",
                "prefixes": [
                    {
                        "ipv4Prefix": "34.0.0.0/15",
                        "service": "Google Cloud",
                        "scope": "us-central1",
                    },
                    {
                        "ipv4Prefix": f"35.{200 + v}.0.0/16",
                        "service": "Google Cloud",
                        "scope": "europe-west1",
                    },
                    {
                        "ipv6Prefix": "2600:1900::/35",
                        "service": "Google Cloud",
                        "scope": "us-central1",
                    },
                ],
            }
        ),
        "/azure/details.aspx": _azure_page(v),
        f"/azure/ServiceTags_Public_{20261200 + v}.json": _json(
            {
                "changeNumber": 300 + v,
                "cloud": "Public",
                "values": [
                    {
                        "name": "AzureCloud.eastus",
                        "id": "AzureCloud.eastus",
                        "properties": {
                            "changeNumber": 10,
                            "region": "eastus",
                            "regionId": 32,
                            "platform": "Azure",
                            "systemService": "",
                            "addressPrefixes": [
                                "20.42.0.0/16",
                                f"40.{70 + v}.0.0/16",
                                "2603:1030::/40",
                            ],
                        },
                    },
                    {
                        "name": "AppService.EastUS",
                        "id": "AppService.EastUS",
                        "properties": {
                            "changeNumber": 4,
                            "region": "eastus",
                            "platform": "Azure",
                            "systemService": "AzureAppService",
                            "addressPrefixes": ["20.42.4.0/24"],
                        },
                    },
                ],
            }
        ),
        "/oracle/public_ip_ranges.json": _json(
            {
                "last_updated_timestamp": f"2026-12-0{min(v, 9)}T00:00:00.000000",
                "regions": [
                    {
                        "region": "us-phoenix-1",
                        "cidrs": [
                            {"cidr": "129.146.0.0/16", "tags": ["OCI"]},
                            {"cidr": f"144.{24 + v}.0.0/16", "tags": ["OCI", "OSN"]},
                        ],
                    }
                ],
            }
        ),
        "/cloudflare/ips-v4": _geofeed(
            "104.16.0.0/13", "173.245.48.0/20", f"{110 + v % 100}.64.0.0/13"
        ),
        "/cloudflare/ips-v6": b"2606:4700::/32\n2803:f800::/32\n",
        "/digitalocean/google.csv": _geofeed(
            "# prefix,country,region,city,postal",
            "159.203.0.0/16,US,US-NJ,North Bergen,07047",
            f"64.{225 + v % 30}.0.0/16,US,US-NY,New York,",
            "2604:a880::/32,US,US-NY,New York,",
        ),
        "/linode/geofeed.csv": _geofeed(
            "45.33.0.0/17,US,US-CA,Fremont,",
            f"172.{104 + v % 100}.0.0/16,US,US-NJ,Cedar Knolls,",
            "2600:3c00::/28,US,US-TX,Richardson,",
        ),
        "/vultr/geofeed.csv": _geofeed(
            "45.32.0.0/16,US,US-NJ,Piscataway,08854",
            f"149.{28 + v % 200}.0.0/16,NL,NL-NH,Amsterdam,",
            "2001:19f0::/32,US,,,",
        ),
        "/hetzner/geofeed.csv": _geofeed(
            "5.9.0.0/16,DE,DE-BY,Nuremberg,",
            f"78.{46 + v % 200}.0.0/16,DE,DE-SN,Falkenstein,",
            "2a01:4f8::/29,DE,,,",
        ),
        "/tor/exit-addresses": (
            "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\n"
            "Published 2026-12-04 11:22:33\nLastStatus 2026-12-04 12:00:00\n"
            "ExitAddress 185.220.101.1 2026-12-04 12:03:04\n"
            "ExitNode 9715C81BA8C5B0C698882035F75C67D6D643DBE3\n"
            "Published 2026-12-04 10:00:00\nLastStatus 2026-12-04 12:00:00\n"
            f"ExitAddress 185.220.101.{10 + v % 200} 2026-12-04 12:13:14\n"
        ).encode(),
        "/tor/details.json": _json(
            {
                "version": "8.0",
                "relays_published": "2026-12-04 12:00:00",
                "relays": [
                    {
                        "fingerprint": "0011BD2485AD45D984EC4159C88FC066E5E3300E",
                        "or_addresses": ["185.220.101.1:443", "[2a0b:f4c2::1]:443"],
                        "exit_policy_v6_summary": {"accept": ["80", "443"]},
                    },
                    {
                        "fingerprint": "AAAABBBBCCCCDDDDEEEEFFFF0000111122223333",
                        "or_addresses": ["192.0.2.77:9001", "[2001:db8:77::1]:9001"],
                        "exit_policy_v6_summary": {"reject": ["1-65535"]},
                    },
                ],
            }
        ),
        "/spamhaus/drop_v4.json": _spamhaus(
            [
                ("1.10.16.0/20", "SBL256894", "apnic"),
                ("1.19.0.0/16", "SBL434604", "apnic"),
                (f"2.{56 + v % 100}.192.0/22", "SBL459831", "ripencc"),
            ],
            stamp,
        ),
        "/spamhaus/drop_v6.json": _spamhaus([("2a06:e480::/29", "SBL301771", "ripencc")], stamp),
        "/firehol/firehol_level1.netset": (
            "#\n# firehol_level1\n#\n0.0.0.0/8\n1.10.16.0/20\n1.19.0.0/16\n"
            f"5.{188 + v % 60}.10.0/23\n185.220.101.1\n"
        ).encode(),
    }
    return files


class FeedServer:
    """Serves feeds over HTTP on loopback; conditional requests get ``304``."""

    def __init__(self, files: Mapping[str, bytes] | None = None, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._files: dict[str, tuple[bytes, str, str]] = {}
        self._faults: dict[str, str] = {}
        #: (method, path, status) of every request, in order
        self.requests: list[tuple[str, str, int]] = []
        #: the ``Authorization`` header of every request (``None``: none), in order
        self.authorizations: list[str | None] = []
        self.put_all(files or {})
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer((host, 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def put(self, path: str, body: bytes) -> None:
        """Serve ``body`` at ``path`` from now on (a new ETag, a new Last-Modified)."""
        tag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        with self._lock:
            old = self._files.get(path)
            if old is not None and old[0] == body:
                return
            # strictly later than what was served: a client's If-Modified-Since is older
            stamp = max(time.time(), float(len(self._files)) + 1)
            if old is not None:
                previous = email.utils.parsedate_to_datetime(old[2]).timestamp()
                stamp = max(stamp, previous + 1)
            self._files[path] = (body, tag, email.utils.formatdate(stamp, usegmt=True))

    def put_all(self, files: Mapping[str, bytes]) -> None:
        """:meth:`put` each path."""
        for path, body in files.items():
            self.put(path, body)

    def misbehave(self, path: str, how: str | None) -> None:
        """Answer ``path`` wrongly from now on (``None``: rightly again); see the module."""
        with self._lock:
            if how is None:
                self._faults.pop(path, None)
            else:
                self._faults[path] = how

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def count(self, status: int | None = None) -> int:
        """Requests answered so far (with ``status``, only those)."""
        with self._lock:
            return sum(1 for _m, _p, s in self.requests if status is None or s == status)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        with self._lock:
            found = self._files.get(path)
            fault = self._faults.get(path)
        status, body, headers = self._response(handler, found, fault)
        with self._lock:
            self.requests.append(("GET", path, status))
            self.authorizations.append(handler.headers.get("Authorization"))
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def _response(
        handler: BaseHTTPRequestHandler, found: tuple[bytes, str, str] | None, fault: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        if fault == "500":
            return 500, b"internal error", {"Content-Length": "14"}
        if fault == "html":
            page = b"<!DOCTYPE html><html><body><h1>Service unavailable</h1></body></html>"
            return 200, page, {"Content-Type": "text/html", "Content-Length": str(len(page))}
        if found is None:
            return 404, b"", {"Content-Length": "0"}
        body, tag, modified = found
        if fault == "empty":
            return 200, b"", {"Content-Length": "0"}
        if fault == "truncate":
            half = body[: len(body) // 2]
            return 200, half, {"Content-Length": str(len(half))}
        if fault == "short":  # the whole length announced, half sent: the connection ends
            handler.close_connection = True
            return (
                200,
                body[: len(body) // 2],
                {"Content-Length": str(len(body)), "Connection": "close"},
            )
        headers = {"ETag": tag, "Last-Modified": modified, "Content-Length": str(len(body))}
        if handler.headers.get("If-None-Match") == tag:
            return 304, b"", {"ETag": tag, "Last-Modified": modified}
        since = handler.headers.get("If-Modified-Since")
        if since and not handler.headers.get("If-None-Match"):
            try:
                if email.utils.parsedate_to_datetime(since) >= email.utils.parsedate_to_datetime(
                    modified
                ):
                    return 304, b"", {"Last-Modified": modified}
            except (TypeError, ValueError):
                pass
        return 200, body, headers

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def feeds_table(server: FeedServer, folder: Path | str, **extra: Any) -> dict[str, Any]:
    """A ``[plugins.enrich.feeds]`` table: every built-in feed from ``server``, in ``folder``."""
    table: dict[str, Any] = {"dir": str(folder), **extra}
    for name, keys in SAMPLE_PATHS.items():
        table[name] = {key: server.url(path) for key, path in keys.items()}
    return table
