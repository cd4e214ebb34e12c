"""The benchmarks' whois server: the package's loopback server, plus what only measuring needs.

It answers line by line as the real server does (``streaming``), honouring the
column options that clients such as ``cymruwhois`` send. It costs the machine as
little as it can of what the client is measured on (the real server is not on the
client's machine at all): it renders each address's answer once (``--prime`` does
it before a measurement, and reads the lines of a verbose request for them), parses
a request line once, and writes what it has answered in pieces of about
:data:`_PIECE` bytes, as a network delivers a stream in segments, not a system call
per row. What it has answered goes out before it waits for more of the request, and
before each of the cost model's pauses. Its ``stats`` command reports its own CPU
seconds. Run as a child process by ``benchmarks/run.py``::

    python benchmarks/bench_server.py --latency-per-batch 0.05 --latency-per-ip 0.002 --streaming

It prints ``listening HOST:PORT`` and takes ``stats``, ``reset`` and ``quit`` on
standard input. ``--prime FILE`` makes the answers of the addresses in FILE (one a
line) before it listens: the first sight of an address costs the test server tens of
microseconds (its synthetic rows), which the real server never spends on the client's
machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import resource
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cowrie_enrich_plugin.testing.__main__ import serve_commands  # noqa: E402
from cowrie_enrich_plugin.testing.whois_faults import HEADER_LINE  # noqa: E402
from cowrie_enrich_plugin.testing.whois_server import (  # noqa: E402
    BulkWhoisServer,
    Faults,
    Row,
    WhoisRequest,
    render_row,
)

_OPTIONS = frozenset(
    {
        b"verbose",
        b"prefix",
        b"asnumber",
        b"countrycode",
        b"notrunc",
        b"header",
        b"noheader",
        b"asname",
        b"noasname",
        b"registry",
        b"allocdate",
        b"cc",
        b"nocc",
        b"noprefix",
    }
)


#: The most bytes of answer a streaming connection holds before writing them.
_PIECE = 16 * 1024


def _render(row: Row, verbose: bool, prefix: bool, country: bool) -> bytes:
    """A row in the column set the client chose with its options."""
    if verbose:
        return render_row(row)
    asn = "NA" if row.asn is None else str(row.asn)
    columns = [f"{asn:<8}", f" {row.ip:<16} "]
    if prefix:
        columns.append(f" {row.prefix or 'NA':<20}")
    if country:
        columns.append(f" {row.cc or '':<2} ")
    columns.append(f" {row.as_name or 'NA'}")
    return "|".join(columns).encode("utf-8")


class BenchWhoisServer(BulkWhoisServer):
    """:class:`BulkWhoisServer` with a streaming mode and answers rendered once."""

    def __init__(self, *args: object, streaming: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.streaming = streaming
        self._rendered: dict[str, list[bytes]] = {}
        #: each (address, verbose, prefix, country): its answer's lines, newlines included
        self._answers: dict[tuple[str, bool, bool, bool], bytes] = {}
        #: each (request line, verbose, prefix, country) naming an address: (the address
        #: canonical, its answer), so that a line seen before is not parsed again
        self._lines: dict[tuple[bytes, bool, bool, bool], tuple[str, bytes]] = {}

    def rendered_rows(self, ip: str) -> list[bytes]:
        lines = self._rendered.get(ip)
        if lines is None:
            lines = self._rendered[ip] = super().rendered_rows(ip)
        return lines

    def answer(self, address: str, verbose: bool, prefix: bool, country: bool) -> bytes:
        """The streaming answer's lines for ``address`` (canonical), made once."""
        key = (address, verbose, prefix, country)
        text = self._answers.get(key)
        if text is None:
            rows = self.rows_for(address)
            if not rows:
                text = b"Error: no ASN or IP match on line 1.\n"
            else:
                text = b"".join(_render(row, verbose, prefix, country) + b"\n" for row in rows)
            self._answers[key] = text
        return text

    def prime(self, addresses: list[str]) -> None:
        """Make the answers of ``addresses`` now, as a verbose request asks them."""
        for address in addresses:
            canonical = str(ipaddress.ip_address(address))
            if self.streaming:
                line = (canonical + "\n").encode()
                answer = self.answer(canonical, True, False, False)
                self._lines[(line, True, False, False)] = (canonical, answer)
            else:
                self.rendered_rows(canonical)

    def serve_connection(self, sock: socket.socket) -> None:
        if not self.streaming:
            super().serve_connection(sock)
            return
        self._serve_streaming(sock)

    def _serve_streaming(self, sock: socket.socket) -> None:
        """Answer line by line as the real server does (banner at ``begin``, options, rows)."""
        request = WhoisRequest()
        self.log_request(request)
        faults = replace(self.faults)
        sock.settimeout(30)
        verbose = prefix = country = False
        header = faults.header  # a verbose answer's column header, before its first row
        out = _Outgoing(sock)
        lines = _request_lines(sock, out)
        try:
            first = next(lines, b"")
            bulk = first.strip().lower() == b"begin"
            if bulk:
                now = time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime())
                sock.sendall(f"Bulk mode; whois.cymru.com [{now}]\n".encode())
            else:
                lines = iter([first])
            # The cost model is kept on a clock, not by small sleeps that each overrun.
            due = time.monotonic() + faults.latency_per_batch
            if self.pause(faults.latency_per_batch):
                return
            known = self._lines
            for raw in lines:
                # A line that named an address before (with these options) names it again:
                # parsing it is what the real server does on its own machine.
                key = (raw, verbose, prefix, country)  # an option line is never stored
                seen = known.get(key)
                if seen is None:
                    word = raw.strip().lower()
                    if word == b"end":
                        break
                    if word in _OPTIONS:
                        verbose |= word == b"verbose"
                        prefix |= word == b"prefix"
                        country |= word == b"countrycode"
                        continue
                if header and verbose:  # after the options, before any answer
                    out.add(HEADER_LINE + b"\n")
                header = False
                request.raw_lines.append(raw)
                if seen is None:
                    text = raw.strip().decode("ascii", errors="replace")
                    try:
                        address = str(ipaddress.ip_address(text))
                    except ValueError:
                        request.not_addresses.append(raw)
                        out.add(b"Error: unable to parse line\n")
                        continue
                    seen = (address, self.answer(address, verbose, prefix, country))
                    known[key] = seen
                address, answer = seen
                request.ips.append(address)
                due += faults.latency_per_ip
                if due > time.monotonic():  # what came before the pause goes first
                    out.send()
                    if self.pause(due - time.monotonic()):
                        return
                out.add(answer)
            out.send()
        except OSError:
            return


class _Outgoing:
    """What a connection has answered and not sent yet: sent once it is :data:`_PIECE` bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        """Answer ``data``; send what is held once it makes a piece."""
        self.parts.append(data)
        self.size += len(data)
        if self.size >= _PIECE:
            self.send()

    def send(self) -> None:
        """Send everything held."""
        if self.parts:
            self.sock.sendall(b"".join(self.parts))
            self.parts, self.size = [], 0


def _request_lines(sock: socket.socket, out: _Outgoing) -> Iterator[bytes]:
    """The request's lines as they arrive; what was answered is sent before waiting for more.

    A client may wait for the answers to what it sent before it sends more
    (``cymruwhois`` sends up to a hundred addresses and reads their answers, and says
    ``end`` only when it disconnects): the real server answers a line as it reads it,
    so no answer waits here for a line that will not come until the answer is read.
    """
    rest = b""
    while True:
        out.send()
        chunk = sock.recv(65536)
        if not chunk:
            if rest:
                yield rest
            return
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-per-batch", type=float, default=0.0)
    parser.add_argument("--latency-per-ip", type=float, default=0.0)
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--prime", type=Path, help="addresses to answer before listening")
    options = parser.parse_args()
    faults = Faults(
        latency_per_batch=options.latency_per_batch, latency_per_ip=options.latency_per_ip
    )
    with BenchWhoisServer(faults=faults, streaming=options.streaming, plain_names=True) as server:
        if options.prime is not None:
            addresses = options.prime.read_text().split()
            server.prime(addresses)
        serve_commands(server, lambda: {"cpu_seconds": _cpu_seconds()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
