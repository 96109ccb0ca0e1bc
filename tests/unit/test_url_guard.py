"""check_url refuses names that always mean this machine (RFC 6761) by name, before any lookup."""

from __future__ import annotations

import asyncio

import pytest

from app.core.errors import UrlNotAllowed
from app.ingest.fetch import ImageFetcher
from app.ingest.url_guard import check_url, is_localhost_name

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
