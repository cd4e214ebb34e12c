"""A bulk whois server on loopback that speaks Team Cymru's protocol, and misbehaves on demand.

Use it to test a host offline::

    with BulkWhoisServer() as server:
        config["plugins"]["enrich"]["cymru_host"], config["plugins"]["enrich"]["cymru_port"] = (
            server.address
        )
        ...
        assert server.asked_count("8.8.8.8") == 1

Answers come from :func:`synthetic_rows` (deterministic per address: most announced,
some unannounced, some on multi-origin prefixes, AS names with commas and
punctuation) unless set with :meth:`BulkWhoisServer.set_rows`. The server records
every request (the raw lines received, the addresses asked, and which of them the
answer left *disturbed*: cut, next to garbage, or answered with ``Error``), so a
test can assert that nothing but addresses arrived and that an address was asked
again only after a disturbed answer.
"""

from __future__ import annotations

import random
import socket
import socketserver
import struct
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from .whois_data import Row, canonical, expected_cymru, render_row, synthetic_rows
from .whois_faults import GARBAGE, HEADER_LINE, Faults, WhoisRequest

__all__ = [
    "BulkWhoisServer",
    "Faults",
    "Row",
    "WhoisRequest",
    "expected_cymru",
    "render_row",
    "synthetic_rows",
]


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        self.server.owner._serve(self.request)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: BulkWhoisServer


class BulkWhoisServer:
    """A threaded bulk whois server on loopback.

    :param host: address to bind (loopback only).
    :param port: port to bind; 0 picks a free one.
    :param faults: initial fault settings; change ``server.faults`` at any time.
    :param seed: seed for the fault dice, for reproducible runs.
    :param max_request_lines: a request longer than this is answered with an error.
    :param plain_names: keep ``|`` out of synthetic AS names (naive clients split on it).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | None = None,
        seed: int | None = 0,
        max_request_lines: int = 1000,
        plain_names: bool = False,
    ) -> None:
        self.faults = faults or Faults()
        self.requests: list[WhoisRequest] = []
        self.connections = 0
        #: the most connections served at once (a client's concurrency, seen from here)
        self.peak_connections = 0
        self._active = 0
        self.max_request_lines = max_request_lines
        self.plain_names = plain_names
        self._rows: dict[str, list[Row]] = {}
        self._synthetic: dict[str, list[Row]] = {}
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bind = (host, port)
        self._server: _TCPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = port

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> BulkWhoisServer:
        """Start listening (in a background thread) and return ``self``."""
        self._stop.clear()
        self._listen()  # a port of its own even when refusing: set_refusing(False) opens it
        if self.faults.refuse:
            self._close_listener()
        return self

    def _listen(self) -> None:
        server = _TCPServer((self._bind[0], self._port), _Handler)
        server.owner = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="whois-server", daemon=True
        )
        self._thread.start()

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stop listening and release every hanging connection."""
        self._stop.set()
        self._close_listener()

    def set_refusing(self, refuse: bool) -> None:
        """Refuse connections (close the listener) or accept them again on the same port."""
        self.faults.refuse = refuse
        if refuse:
            self._close_listener()
        elif self._server is None:
            self._listen()

    def __enter__(self) -> BulkWhoisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the server listens on."""
        return self._bind[0], self._port

    @property
    def hostport(self) -> str:
        """``host:port``, as the ``--cymru`` option takes it."""
        return f"{self._bind[0]}:{self._port}"

    # -- answers -----------------------------------------------------------------

    def set_rows(self, ip: str, rows: list[Row]) -> None:
        """Answer ``ip`` with exactly ``rows`` (an empty list means an ``Error`` line)."""
        self._rows[canonical(ip)] = rows

    def rows_for(self, ip: str) -> list[Row]:
        """The rows this server answers for ``ip``."""
        key = canonical(ip)
        if key in self._rows:
            return self._rows[key]
        rows = self._synthetic.get(key)
        if rows is None:
            rows = synthetic_rows(key)
            if self.plain_names:
                rows = [
                    replace(r, as_name=r.as_name.replace("|", "/")) if r.as_name else r
                    for r in rows
                ]
            self._synthetic[key] = rows
        return rows

    def rendered_rows(self, ip: str) -> list[bytes]:
        """The verbose lines of ``ip``'s rows (``ip`` canonical)."""
        return [render_row(row) for row in self.rows_for(ip)]

    def expected(self, ip: str) -> dict[str, Any] | None:
        """The ``cymru`` section a correct client records for ``ip`` (no ``fetched_at``)."""
        rows = self.rows_for(ip)
        return expected_cymru(rows) if rows else None

    # -- what was asked ----------------------------------------------------------

    def asked_count(self, ip: str) -> int:
        """How many requests asked for ``ip``."""
        with self._lock:
            return sum(ip in request.ips for request in self.requests)

    def asked(self) -> Counter[str]:
        """How many times each address was asked."""
        counts: Counter[str] = Counter()
        with self._lock:
            for request in self.requests:
                counts.update(request.ips)
        return counts

    def reset_log(self) -> None:
        """Forget the recorded requests and connections."""
        with self._lock:
            self.requests.clear()
            self.connections = 0
            self.peak_connections = self._active

    # -- serving -----------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._active += 1
            self.peak_connections = max(self.peak_connections, self._active)
        try:
            self.serve_connection(sock)
        finally:
            with self._lock:
                self._active -= 1

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the server stops first; whether it stopped."""
        return self._stop.wait(seconds)

    def log_request(self, request: WhoisRequest) -> None:
        """Record one request (what :meth:`requests` and :meth:`asked` report)."""
        with self._lock:
            self.requests.append(request)

    def serve_connection(self, sock: socket.socket) -> None:
        """Answer one connection as the bulk interface does (a subclass may answer otherwise)."""
        request = WhoisRequest()
        sock.settimeout(30)
        lines = self._read_request(sock, request)
        if lines is None:
            return
        with self._lock:
            self.requests.append(request)
            faults = replace(self.faults)
            dice = random.Random(self._random.random())
        delay = faults.latency_per_batch + faults.latency_per_ip * len(request.ips)
        if delay and self._stop.wait(delay):
            return
        if dice.random() < faults.hang_rate:
            request.fault = "hang"
            request.disturbed.update(request.ips)
            self._stop.wait(3600)
            return
        self._answer(sock, request, faults, dice)

    def _read_request(self, sock: socket.socket, request: WhoisRequest) -> list[bytes] | None:
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                break
            buffer += chunk
            if (
                b"\nend\n" in buffer
                or buffer.startswith(b"end\n")
                or buffer.count(b"\n") > self.max_request_lines + 3
            ):
                break
        lines = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line or line in (b"begin", b"verbose", b"end"):
                continue
            request.raw_lines.append(raw)
            try:
                text = line.decode("ascii")
                written = canonical(text)
            except ValueError:
                request.not_addresses.append(raw)
                continue
            if written != text:
                request.not_addresses.append(raw)
                continue
            request.ips.append(text)
        return lines

    def _answer(
        self, sock: socket.socket, request: WhoisRequest, faults: Faults, dice: random.Random
    ) -> None:
        now = time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime())
        lines: list[bytes] = [f"Bulk mode; whois.cymru.com [{now}]".encode()]
        if faults.header:
            lines.append(HEADER_LINE)
        owners: list[str | None] = [None] * len(lines)  # which address each line belongs to
        kinds: list[str] = ["meta"] * len(lines)
        for number in range(1, len(request.not_addresses) + 1):
            lines.append(f"Error: unable to parse line {number}".encode())
            owners.append(None)
            kinds.append("error")
        for index, ip in enumerate(request.ips):
            if index and dice.random() < faults.garbage_rate:
                lines.append(dice.choice(GARBAGE))
                owners.append(None)
                kinds.append("garbage")
            rendered = self.rendered_rows(ip)
            if not rendered or dice.random() < faults.error_rate:
                lines.append(f"Error: no ASN or IP match on line {index + 1}.".encode())
                owners.append(None)
                kinds.append("error")
                request.disturbed.add(ip)
                continue
            lines.extend(rendered)
            owners.extend([ip] * len(rendered))
            kinds.extend(["row"] * len(rendered))
        payload = b"".join(line + b"\n" for line in lines)

        cut: int | None = None
        mode = None
        roll = dice.random()
        if roll < faults.reset_rate:
            mode = "reset"
        elif roll < faults.reset_rate + faults.truncate_rate:
            mode = "truncate"
        if mode is not None:
            # Cut strictly inside a line (at least one byte of it sent, never its
            # newline), as a dropped connection does.
            line_index = dice.randrange(len(lines))
            start = sum(len(line) + 1 for line in lines[:line_index])
            cut = start + dice.randrange(1, max(2, len(lines[line_index])))
            request.fault = mode
        self._account(request, lines, owners, kinds, cut)
        if mode == "reset":
            # A reset may discard bytes the client had not read yet: any of them.
            request.disturbed.update(request.ips)
        try:
            if cut is None:
                sock.sendall(payload)
            else:
                sock.sendall(payload[:cut])
                if mode == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            request.disturbed.update(request.ips)

    @staticmethod
    def _account(
        request: WhoisRequest,
        lines: list[bytes],
        owners: list[str | None],
        kinds: list[str],
        cut: int | None,
    ) -> None:
        """Mark the addresses a careful client cannot trust in this answer."""
        sent_lines = len(lines)
        if cut is not None:
            position = 0
            sent_lines = 0
            for line in lines:
                position += len(line) + 1
                if position > cut:
                    break
                sent_lines += 1
        complete = [(owners[i], kinds[i]) for i in range(sent_lines) if kinds[i] != "meta"]
        answered = {owner for owner, kind in complete if kind == "row"}
        for ip in request.ips:
            if ip not in answered:
                request.disturbed.add(ip)
        for index, (_owner, kind) in enumerate(complete):
            if kind == "garbage":
                for near in (index - 1, index + 1):
                    if 0 <= near < len(complete) and complete[near][1] == "row":
                        request.disturbed.add(str(complete[near][0]))
        whole = cut is None and not any(kind == "error" for _o, kind in complete)
        if not whole and complete and complete[-1][1] == "row":
            request.disturbed.add(str(complete[-1][0]))
