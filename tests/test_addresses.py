"""Address validation: only canonical, globally routable addresses are usable."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowrie_enrich_plugin.addresses import (
    InvalidAddress,
    NonGlobal,
    Usable,
    all_usable_ipv4,
    classify,
    is_usable_ipv4,
)

from .helpers import Disguised


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("8.8.8.8", "8.8.8.8"),
        ("::ffff:8.8.8.8", "8.8.8.8"),
        ("2001:4860:4860:0000:0000:0000:0000:8888", "2001:4860:4860::8888"),
        ("2001:4860:4860::8888".upper(), "2001:4860:4860::8888"),
    ],
)
def test_usable(value: str, canonical: str) -> None:
    assert classify(value) == Usable(canonical)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "shared"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("0.1.2.3", "this-network"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique-local"),
        ("2001:db8::1", "documentation"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::1.2.3.4", "reserved"),
    ],
)
def test_non_global(value: str, why: str) -> None:
    verdict = classify(value)
    assert isinstance(verdict, NonGlobal) and why in verdict.reason


@pytest.mark.parametrize(
    "value",
    [
        None,
        134744072,
        ["8.8.8.8"],
        "",
        " 8.8.8.8",
        "8.8.8.8 ",
        "8.8.8.8\n",
        "8.8.8.8\nbegin",
        "8.8.8.8:22",
        "[2001:4860::1]:22",
        "fe80::1%eth0",
        "010.8.8.8",
        "8.8.8",
        "8.8.8.8.8",
        "example.com",
        "8.8.8.8\x00",
        "\uff11.\uff12.\uff13.\uff14",
        "8.8.8.8/32",
        "x" * 1000,
    ],
)
def test_invalid(value: object) -> None:
    assert isinstance(classify(value), InvalidAddress)


@given(st.text(max_size=60))
def test_usable_output_is_always_canonical_and_global(value: str) -> None:
    verdict = classify(value)
    if isinstance(verdict, Usable):
        address = ipaddress.ip_address(verdict.ip)
        assert str(address) == verdict.ip
        assert address.is_global
        assert "\n" not in verdict.ip and " " not in verdict.ip


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_every_real_address_is_classified_as_valid(address: ipaddress._BaseAddress) -> None:
    verdict = classify(str(address))
    assert not isinstance(verdict, InvalidAddress)
    if isinstance(verdict, Usable):
        assert ipaddress.ip_address(verdict.ip).is_global


@given(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.text(alphabet="0123456789.:x\x00 ", max_size=18),
        st.integers(),
        st.none(),
    )
)
def test_usable_ipv4_shortcut_agrees_with_classify(value: object) -> None:
    if is_usable_ipv4(value):
        assert classify(value) == Usable(value)
    elif isinstance(value, str) and value.count(".") == 3 and ":" not in value:
        verdict = classify(value)
        assert not (isinstance(verdict, Usable) and verdict.ip == value)


_FIRST_PARTS = (0, 1, 9, 10, 11, 99, 100, 126, 127, 128, 169, 172, 191, 192, 193, 198)
_FIRST_PARTS += (203, 223, 224, 239, 240, 255, 256, 300)
_V4_TEXT = st.one_of(
    st.ip_addresses(v=4).map(str),
    # near the edges of the special-purpose networks, and spelled wrongly
    st.tuples(
        st.sampled_from(_FIRST_PARTS),
        st.integers(0, 256),
        st.integers(0, 256),
        st.integers(0, 256),
    ).map(lambda parts: ".".join(map(str, parts))),
    st.text(alphabet="0123456789.\n ", max_size=18),
    st.sampled_from(["08.8.8.8", "8.8.8.08", "8.8.8.8\n9.9.9.9", "8.8.8.8 ", "8.8.8", ""]),
)


@given(st.lists(_V4_TEXT, max_size=12))
def test_the_bulk_check_agrees_with_each_address_checked(values: list[str]) -> None:
    """A whole batch passes exactly when every address passes on its own."""
    assert all_usable_ipv4(values) == (bool(values) and all(map(is_usable_ipv4, values)))


def test_the_bulk_check_refuses_a_value_that_holds_two_lines() -> None:
    assert is_usable_ipv4("8.8.8.8") and is_usable_ipv4("9.9.9.9")
    assert not all_usable_ipv4(["8.8.8.8\n9.9.9.9"])
    assert not all_usable_ipv4(["8.8.8.8\n9.9.9.9", "1.1.1.1"])
    assert not all_usable_ipv4(["8.8.8.8", 9])  # type: ignore[list-item]


_SPECIAL_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16")
_SPECIAL_V4 += ("172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24")
_SPECIAL_V4 += ("192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24")
_SPECIAL_V4 += ("224.0.0.0/4", "240.0.0.0/4")


def _edges() -> list[str]:
    """The first and last address of each special-purpose IPv4 network and their
    neighbours, and of each first part."""
    edges = {n for net in _SPECIAL_V4 for n in _around(ipaddress.IPv4Network(net))}
    edges |= {n for first in range(256) for n in (first << 24, (first << 24) | 0xFFFFFF)}
    return [str(ipaddress.IPv4Address(n)) for n in sorted(edges) if 0 <= n < 2**32]


def _around(net: ipaddress.IPv4Network) -> set[int]:
    first, last = int(net.network_address), int(net.broadcast_address)
    return {first - 1, first, first + 1, last - 1, last, last + 1}


@pytest.mark.parametrize("edge", _edges())
def test_the_bulk_check_at_the_edges_of_special_networks(edge: str) -> None:
    """Beside a clean address, each edge passes in bulk exactly when it passes alone."""
    assert all_usable_ipv4(["8.8.8.8", edge, "9.9.9.9"]) == is_usable_ipv4(edge)


def test_a_str_subclass_is_never_taken_for_an_address() -> None:
    assert is_usable_ipv4("8.8.8.8")
    assert not all_usable_ipv4([Disguised("8.8.8.8")])
    assert not all_usable_ipv4(["9.9.9.9", Disguised("127.0.0.1")])
