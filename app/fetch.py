"""ImageFetcher: download an image URL with timeouts, a byte cap and an address guard.

Only http/https; every address the host resolves to must be public unless FETCH_ALLOW_PRIVATE is set
(tests and local demos); redirects are followed by hand so each hop is checked again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import httpx

from app import metrics
from app.errors import ImageFetchFailed, ImageFetchTimeout, ImageTooLarge, UrlNotAllowed

MAX_REDIRECTS = 3
USER_AGENT = "lookalike-image-fetcher/0.1"


def address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return ip.is_global and not ip.is_multicast


class ImageFetcher:
    def __init__(self, *, timeout_s: float, max_bytes: int, allow_private: bool) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
            trust_env=False,  # never route image fetches through an environment proxy
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlNotAllowed(f"only http and https image URLs are allowed, got {url[:100]!r}")
        if self.allow_private:
            return
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, ValueError, UnicodeError) as exc:
            raise ImageFetchFailed(f"the image host {parts.hostname!r} could not be resolved: {exc}") from None
        if not infos or not all(address_allowed(str(info[4][0])) for info in infos):
            raise UrlNotAllowed(f"the image host {parts.hostname!r} resolves to a non-public address")

    async def fetch(self, url: str) -> bytes:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await self._follow(url)
        except TimeoutError:
            metrics.image_fetch_failures.labels(reason="timeout").inc()
            raise ImageFetchTimeout(f"the image host did not answer within {self.timeout_s:g} s") from None
        except (ImageFetchFailed, UrlNotAllowed, ImageTooLarge) as exc:
            metrics.image_fetch_failures.labels(reason=exc.code).inc()
            raise
        metrics.image_fetch_duration.observe(time.perf_counter() - started)
        return data

    async def _follow(self, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            await self._check(url)
            try:
                async with self._client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if not response.is_success:
                        raise ImageFetchFailed(f"the image host answered HTTP {response.status_code}")
                    return await self._read_capped(response)
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.HTTPError as exc:
                raise ImageFetchFailed(f"the image download failed: {type(exc).__name__}: {exc}") from None
        raise ImageFetchFailed(f"more than {MAX_REDIRECTS} redirects")

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageTooLarge(f"the image is {declared} bytes; the limit is {self.max_bytes} bytes")
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > self.max_bytes:  # whatever Content-Length said
                raise ImageTooLarge(f"the image is over the limit of {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
