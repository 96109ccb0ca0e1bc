"""The URL guard: names that always mean this machine (RFC 6761) are refused by name, before any lookup;
property tests (hypothesis) hold address_allowed and check_url to the IANA registries and odd spellings.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.provisional import urls

from app.core.errors import UrlNotAllowed
from app.ingest.fetch import ImageFetcher
from app.ingest.url_guard import address_allowed, check_url, is_localhost_name
from tests.strategies import FAST

LOCAL_NAMES = [
    "http://localhost/x.jpg",
    "http://localhost./x.jpg",
    "http://LOCALHOST:8080/x.jpg",
    "https://LocalHost./x.jpg",
    "http://a.localhost/x.jpg",
    "http://images.shop.localhost./x.jpg",
    "http://X.LOCALHOST/x.jpg",
]


@pytest.mark.parametrize("url", LOCAL_NAMES)
def test_localhost_names_are_refused_by_shape(url: str) -> None:
    with pytest.raises(UrlNotAllowed, match="names this machine"):
        check_url(url)


@pytest.mark.parametrize("host", ["localhost.example.com", "notlocalhost", "localhostx.com", "mylocalhost.org"])
def test_names_that_only_contain_localhost_pass(host: str) -> None:
    assert not is_localhost_name(host)
    assert check_url(f"http://{host}/x.jpg").host == host


@pytest.mark.parametrize("url", LOCAL_NAMES[:3])
def test_localhost_refused_even_when_private_addresses_are_allowed(url: str) -> None:
    """FETCH_ALLOW_PRIVATE lifts the address check only; a resolver is never asked for these names."""
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    async def fetch() -> None:
        fetcher = ImageFetcher(timeout_s=2, max_bytes=1000, allow_private=True, resolver=resolver)
        try:
            await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    with pytest.raises(UrlNotAllowed):
        asyncio.run(fetch())
    assert asked == []


def test_loopback_literal_stays_a_shape_pass() -> None:
    # 127.0.0.1 is judged by the address policy (FETCH_ALLOW_PRIVATE), not refused by its shape.
    assert check_url("http://127.0.0.1:9/x.jpg").host == "127.0.0.1"


# ---- hypothesis: the URL guard ----------------------------------------------------------------------------

# Written out from the IANA special-purpose registries, independently of Python's ipaddress flags.
NOT_PUBLIC_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/29", "192.0.0.170/31", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
]  # fmt: skip
v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
not_public_v4 = st.sampled_from(NOT_PUBLIC_V4).flatmap(
    lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(ipaddress.IPv4Address)
)


@FAST
@given(ip=st.one_of(v4, not_public_v4))
def test_ipv4_verdict_matches_the_registry(ip: ipaddress.IPv4Address) -> None:
    assert address_allowed(ip) == (not any(ip in net for net in NOT_PUBLIC_V4))


@FAST
@given(ip=st.one_of(v4, not_public_v4))
def test_ipv6_forms_carrying_an_ipv4_address_are_judged_by_it(ip: ipaddress.IPv4Address) -> None:
    value = int(ip)
    verdict = address_allowed(ip)
    assert address_allowed(ipaddress.IPv6Address(0xFFFF << 32 | value)) == verdict  # ::ffff:a.b.c.d
    assert address_allowed(ipaddress.IPv6Address(0x2002 << 112 | value << 80)) == verdict  # 6to4
    assert address_allowed(ipaddress.IPv6Address(0x64FF9B << 96 | value)) == verdict  # NAT64
    assert not address_allowed(ipaddress.IPv6Address(value))  # ::a.b.c.d, deprecated: never


def spellings(ip: ipaddress.IPv4Address) -> st.SearchStrategy[str]:
    """Other ways inet_aton (and so getaddrinfo) reads as this address."""
    a, b, c, d = ip.packed
    n = int(ip)
    return st.sampled_from(
        [
            str(n),
            hex(n),
            f"0{n:o}",
            f"0{a:o}.0{b:o}.0{c:o}.0{d:o}",
            f"{a:#x}.{b:#x}.{c:#x}.{d:#x}",
            f"{a}.{b}.{c << 8 | d}",
            f"{a}.{b << 16 | c << 8 | d}",
            f"{a}.{b}.{c}.{d}.",
            f"{a:#x}.{b}.0{c:o}.{d}",
        ]
    )


@settings(FAST, max_examples=150)
@given(spelled=st.sampled_from(["127.0.0.1", "10.1.2.3", "169.254.169.254", "0.0.0.0", "192.168.0.1"]).flatmap(
    lambda text: spellings(ipaddress.IPv4Address(text))
))  # fmt: skip
def test_odd_spellings_of_internal_addresses_are_refused(spelled: str) -> None:
    async def attempt() -> None:
        fetcher = ImageFetcher(timeout_s=2, max_bytes=10_000, allow_private=False)
        try:
            await fetcher.fetch(f"http://{spelled}:9/x.jpg")
        finally:
            await fetcher.aclose()

    with pytest.raises(UrlNotAllowed):
        asyncio.run(attempt())


@FAST
@given(text=st.one_of(st.text(max_size=200), urls(), urls().map(lambda u: u.replace("://", "://user:pw@", 1))))
def test_check_url_refuses_cleanly_or_accepts_only_plain_http(text: str) -> None:
    try:
        parsed = check_url(text)
    except UrlNotAllowed:
        return
    assert parsed.scheme in ("http", "https")
    assert parsed.host and not parsed.userinfo
