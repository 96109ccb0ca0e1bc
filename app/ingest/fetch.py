"""ImageFetcher: download an image URL with timeouts, a byte cap and an address guard (app/ingest/url_guard.py).

- Only http/https URLs of an acceptable shape (url_guard.check_url), checked again at every redirect
  hop, at most FETCH_MAX_REDIRECTS hops.
- The connection itself goes through `CheckedBackend`: it resolves the host once, refuses the URL
  if any address is not public (unless FETCH_ALLOW_PRIVATE), and connects to one of those checked
  addresses. There is no second DNS lookup that a rebinding name server could answer differently.
- Connect, read and total timeouts; the body is streamed against the byte cap, whatever
  Content-Length says. The type is never taken from Content-Type: app/ingest/decode.py sniffs the bytes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable

import anyio
import httpcore
import httpx

from app.core import metrics
from app.core.errors import ImageFetchFailed, ImageFetchTimeout, ImageTooLarge, LookalikeError, UrlNotAllowed
from app.ingest.url_guard import IPAddress, address_allowed, check_url, parse_ip

USER_AGENT = "lookalike-image-fetcher/0.1"

Resolver = Callable[[str, int], Awaitable[list[str]]]
AddressPolicy = Callable[[IPAddress], bool]


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses that passed the policy.

    httpcore calls connect_tcp with the URL's host name; the name is resolved here, every address is
    checked, and the socket is opened to a checked address literal. TLS is unaffected: httpcore
    starts it afterwards with the host name as server_hostname (SNI and certificate verification),
    and the Host header comes from the URL as usual.
    """

    def __init__(self, resolver: Resolver, policy: AddressPolicy | None) -> None:
        self._resolver = resolver
        self._policy = policy  # None: every address is allowed (FETCH_ALLOW_PRIVATE, tests only)
        self._inner = httpcore.AnyIOBackend()

    async def _addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        literal = parse_ip(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                with anyio.fail_after(timeout):
                    addresses = await self._resolver(host, port)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {host!r} took too long") from None
            except (OSError, UnicodeError, ValueError) as exc:
                raise ImageFetchFailed(f"the image host {host!r} could not be resolved: {exc}") from None
        if not addresses:
            raise ImageFetchFailed(f"the image host {host!r} has no address")
        if self._policy is not None:
            policy = self._policy
            # One bad address refuses the host: which address a connection would use is not ours to pick.
            if not all((ip := parse_ip(a)) is not None and policy(ip) for a in addresses):
                what = "is not a public address" if literal is not None else "resolves to a non-public address"
                raise UrlNotAllowed(f"the image host {host!r} {what}")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self._addresses(host, port, timeout):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UrlNotAllowed("image fetches never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _checked_transport(
    backend: CheckedBackend,
    ssl_context: ssl.SSLContext | None,
    *,
    max_connections: int,
    max_keepalive: int,
    keepalive_expiry_s: float,
) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx's transport takes no network backend; the httpcore pool it wraps does. `_pool` is the one
    # attribute AsyncHTTPTransport sends through (tests/integration/test_hardening_fetch.py checks the pin works).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive,
        keepalive_expiry=keepalive_expiry_s,
        network_backend=backend,
    )
    return transport


class ImageFetcher:
    def __init__(
        self,
        *,
        timeout_s: float,
        max_bytes: int,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        policy: AddressPolicy = address_allowed,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_keepalive: int = 20,
        keepalive_expiry_s: float = 5.0,
        max_redirects: int = 3,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        backend = CheckedBackend(resolver, None if allow_private else policy)
        # Per connect / per read: these only make a silent host fail before FETCH_TIMEOUT_S, which bounds the
        # whole download and is the limit to tune, so they are not settings.
        step = min(timeout_s, 5.0)
        self._client = httpx.AsyncClient(
            transport=_checked_transport(
                backend,
                ssl_context,
                max_connections=max_connections,
                max_keepalive=max_keepalive,
                keepalive_expiry_s=keepalive_expiry_s,
            ),
            follow_redirects=False,  # followed by hand below, so every hop is checked
            timeout=httpx.Timeout(step, connect=min(timeout_s, 3.0)),
            # identity: a compressed body could expand far past the byte cap within one chunk
            headers={"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"},
            trust_env=False,  # never route image fetches through an environment proxy
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> bytes:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await self._follow(url)
        except TimeoutError:
            metrics.image_fetch_failures.labels(reason="timeout").inc()
            raise ImageFetchTimeout(f"the image host did not answer within {self.timeout_s:g} s") from None
        except LookalikeError as exc:
            metrics.image_fetch_failures.labels(reason=exc.code).inc()
            raise
        metrics.image_fetch_duration.observe(time.perf_counter() - started)
        return data

    async def _follow(self, url: str) -> bytes:
        for _ in range(self.max_redirects + 1):
            target = check_url(url)
            try:
                async with self._client.stream("GET", target) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = _join(target, response.headers["location"])
                        continue
                    if not response.is_success:
                        raise ImageFetchFailed(f"the image host answered HTTP {response.status_code}")
                    return await self._read_capped(response)
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.HTTPError as exc:
                raise ImageFetchFailed(f"the image download failed: {type(exc).__name__}: {exc}") from None
        raise ImageFetchFailed(
            f"the image URL redirected more often than LOOKALIKE_FETCH_MAX_REDIRECTS allows ({self.max_redirects})"
        )

    async def _read_capped(self, response: httpx.Response) -> bytes:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ImageFetchFailed(f"the image host sent a {encoding!r}-encoded body; images are fetched as is")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageTooLarge(f"the image is {declared} bytes; the limit is {self.max_bytes} bytes")
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > self.max_bytes:  # whatever Content-Length said
                raise ImageTooLarge(f"the image is over the limit of {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _join(base: httpx.URL, location: str) -> str:
    try:
        return str(base.join(location))
    except (httpx.InvalidURL, ValueError) as exc:
        raise UrlNotAllowed(f"the image host redirected to an unusable URL: {exc}") from None
