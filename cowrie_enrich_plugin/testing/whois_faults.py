"""How the loopback whois server misbehaves (:class:`Faults`), and what it logs of a request."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GARBAGE", "HEADER_LINE", "Faults", "WhoisRequest"]


@dataclass
class Faults:
    """What the server does wrong. Rates are probabilities per request (per address for errors).

    :ivar latency_per_batch: seconds before answering each request.
    :ivar latency_per_ip: extra seconds per address in the request.
    :ivar reset_rate: cut the answer mid-line and reset the connection (RST).
    :ivar truncate_rate: cut the answer mid-line and close the connection cleanly.
    :ivar garbage_rate: per gap between two addresses' rows, insert a garbage line.
    :ivar hang_rate: accept the request and never answer (until the client gives up).
    :ivar error_rate: per address, answer ``Error: ...`` instead of its rows.
    :ivar refuse: refuse every connection (the listening socket is closed).
    :ivar header: send the column header line.
    """

    latency_per_batch: float = 0.0
    latency_per_ip: float = 0.0
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    garbage_rate: float = 0.0
    hang_rate: float = 0.0
    error_rate: float = 0.0
    refuse: bool = False
    header: bool = True


@dataclass
class WhoisRequest:
    """What one connection asked, and how its answer went."""

    raw_lines: list[bytes] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    not_addresses: list[bytes] = field(default_factory=list)
    disturbed: set[str] = field(default_factory=set)
    fault: str | None = None


#: The lines a server with ``garbage_rate`` slips between rows.
GARBAGE = (
    b"%%% garbled %%%",
    b"| | | |",
    b"12345 | not-an-ip | 1.2.3.0/24 | US | arin | 2001-01-01 | X",
    b"\x00\xff\xfe binary noise",
    b"AS | IP | oops",
)


#: The column header a verbose answer begins with.
HEADER_LINE = (
    b"AS      | IP               | BGP Prefix          | CC | Registry | Allocated  | AS Name"
)
