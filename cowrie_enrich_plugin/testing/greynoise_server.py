"""A GreyNoise-like HTTP server on loopback, for tests of hosts that enable GreyNoise.

It answers ``GET /v3/community/{ip}``, ``POST /v3/ip?quick=true`` and ``GET /ping`` from a
deterministic table (each address is noise, a benign service, or not observed,
decided by its hash), keeps a log of every request with its time and outcome, and
misbehaves on demand (:class:`HttpFaults`): 429 with ``Retry-After``, 5xx, slow
answers, answers dripped a byte at a time, huge answers, fields of the wrong type, a
body that is not JSON, a daily quota that runs out, a key it refuses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["GreyNoiseServer", "HttpFaults", "HttpRequest", "expected_greynoise"]


@dataclass
class HttpFaults:
    """How the server misbehaves; rates are the share of requests affected."""

    too_many_rate: float = 0.0
    retry_after: float = 1.0
    error_rate: float = 0.0
    latency: float = 0.0
    malformed_rate: float = 0.0
    #: requests answered per server day before "daily rate limit" 429s (0: no quota)
    daily_quota: int = 0
    #: the key every request must carry (``None``: any or none)
    required_key: str | None = None
    #: seconds between the bytes of every answer (a server that drips)
    drip_seconds: float = 0.0
    #: pad every answer to at least this many bytes (sent without Content-Length)
    body_bytes: int = 0
    #: community answers with every field of the wrong type
    wrong_types: bool = False


@dataclass
class HttpRequest:
    """One request as the server saw it."""

    at: float
    method: str
    path: str
    ips: list[str]
    status: int
    had_key: bool


def expected_greynoise(ip: str) -> dict[str, Any] | None:
    """The community answer the server gives for ``ip`` (``None``: not observed, 404)."""
    digest = hashlib.sha256(ip.encode()).digest()
    kind = digest[0] % 20
    if kind >= 9:
        return None
    riot = kind < 2
    classification = "benign" if riot else ("malicious", "unknown", "benign")[digest[1] % 3]
    return {
        "ip": ip,
        "noise": not riot,
        "riot": riot,
        "classification": classification,
        "name": f"Example Org {digest[2] % 50}" if riot or digest[2] % 2 else "unknown",
        "link": f"https://viz.greynoise.io/ip/{ip}",
        "last_seen": f"2026-11-{1 + digest[3] % 28:02d}",
        "message": "Success",
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the server keeps its own log."""

    def do_GET(self) -> None:
        """The community lookup, and ``/ping`` (which tries the key)."""
        parts = urlsplit(self.path)
        if parts.path == "/ping":
            required = self.server.owner.faults.required_key
            if required is not None and self.headers.get("key") != required:
                self._send(401, {"message": "unauthorized"}, [])
            else:
                self._send(200, {"message": "pong", "offering": "community"}, [])
            return
        if not parts.path.startswith("/v3/community/"):
            self._send(404, {"message": "no such endpoint"}, [])
            return
        ip = parts.path.rsplit("/", 1)[1]
        if self._misbehave([ip]):
            return
        answer = expected_greynoise(ip)
        if answer is None:
            self._send(
                404, {"ip": ip, "noise": False, "riot": False, "message": "IP not observed"}, [ip]
            )
        elif self.server.owner.faults.wrong_types:
            wrong = {"noise": "yes", "riot": 1, "classification": ["x"], "name": {"a": 1}}
            self._send(200, {**answer, **wrong, "last_seen": 20261101, "link": None}, [ip])
        else:
            self._send(200, answer, [ip])

    def do_POST(self) -> None:
        """The enterprise bulk quick check."""
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        try:
            ips = [str(ip) for ip in json.loads(self.rfile.read(length))["ips"]]
        except (ValueError, KeyError, TypeError):
            self._send(400, {"message": "bad request"}, [])
            return
        if parts.path != "/v3/ip" or parse_qs(parts.query).get("quick") != ["true"]:
            self._send(404, {"message": "no such endpoint"}, ips)
            return
        if self._misbehave(ips):
            return
        data, missing = [], []
        for ip in ips:
            answer = expected_greynoise(ip)
            if answer is None:
                missing.append(ip)
                continue
            data.append(
                {
                    "ip": ip,
                    "business_service_intelligence": {
                        "found": answer["riot"],
                        "name": answer["name"] if answer["riot"] else "",
                        "trust_level": "1" if answer["riot"] else "",
                    },
                    "internet_scanner_intelligence": {
                        "found": answer["noise"],
                        "classification": answer["classification"] if answer["noise"] else "",
                        "last_seen": answer["last_seen"],
                        "actor": answer["name"],
                    },
                }
            )
        body = {"data": data, "request_metadata": {"ips_not_found": missing, "message": "ok"}}
        self._send(200, body, ips)

    def _misbehave(self, ips: list[str]) -> bool:
        server = self.server
        faults = server.owner.faults
        if faults.latency:
            time.sleep(faults.latency)
        if faults.required_key is not None and self.headers.get("key") != faults.required_key:
            self._send(401, {"message": "unauthorized"}, ips)
            return True
        with server.owner.lock:
            roll = server.owner.rng.random()
            served = server.owner.served
        if faults.daily_quota and served >= faults.daily_quota:
            self._send(429, {"message": "You have hit your daily rate limit"}, ips)
            return True
        if roll < faults.too_many_rate:
            self._send(
                429,
                {"message": "too many requests"},
                ips,
                {"Retry-After": f"{faults.retry_after:g}"},
            )
            return True
        roll -= faults.too_many_rate
        if roll < faults.error_rate:
            self._send(503, {"message": "unavailable"}, ips)
            return True
        roll -= faults.error_rate
        if roll < faults.malformed_rate:
            self._send_raw(200, b'{"ip": "' + ips[0].encode() + b'", "noise": tr', ips)
            return True
        return False

    def _send(
        self, status: int, body: Any, ips: list[str], headers: dict[str, str] | None = None
    ) -> None:
        self._send_raw(status, json.dumps(body).encode(), ips, headers)

    def _send_raw(
        self, status: int, data: bytes, ips: list[str], headers: dict[str, str] | None = None
    ) -> None:
        faults = self.server.owner.faults
        self.server.owner.record(
            HttpRequest(
                time.monotonic(), self.command, self.path, ips, status, "key" in self.headers
            )
        )
        if faults.drip_seconds:  # the whole answer, status line and headers too
            head = (
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode()
            with contextlib.suppress(OSError):
                for byte in head + data:
                    self.wfile.write(bytes((byte,)))
                    self.wfile.flush()
                    time.sleep(faults.drip_seconds)
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if faults.body_bytes and data.startswith(b"{"):
            data = b'{"padding": "' + b"x" * faults.body_bytes + b'", ' + data[1:]
            self.send_header("Connection", "close")  # the end of the body is the end
        else:
            self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up on it
            for start in range(0, len(data), 1 << 20):
                self.wfile.write(data[start : start + (1 << 20)])
        if faults.body_bytes:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: GreyNoiseServer


@dataclass
class GreyNoiseServer:
    """The server; a context manager. ``url`` is its base URL (``api_url``)."""

    faults: HttpFaults = field(default_factory=HttpFaults)
    seed: int = 1
    requests: list[HttpRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(self.seed)
        self.served = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GreyNoiseServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def record(self, request: HttpRequest) -> None:
        """Log one request (the handler calls it)."""
        with self.lock:
            self.requests.append(request)
            if request.status in (200, 404) and request.ips:
                self.served += 1

    def answered(self) -> Counter[str]:
        """How often each address got an answer (200 or 404)."""
        with self.lock:
            return Counter(ip for r in self.requests if r.status in (200, 404) for ip in r.ips)

    def max_rate(self, window: float = 1.0) -> int:
        """The most requests that arrived within any ``window`` seconds."""
        with self.lock:
            times = sorted(r.at for r in self.requests)
        most, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= window:
                start += 1
            most = max(most, end - start + 1)
        return most

    def reset_log(self) -> None:
        """Forget the requests so far (the quota too)."""
        with self.lock:
            self.requests.clear()
            self.served = 0
