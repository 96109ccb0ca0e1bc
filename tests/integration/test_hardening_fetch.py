"""Safe fetch: SSRF forms never reach a loopback listener, the connection goes to the
address that was checked (TLS still verified on the host name), and misbehaving image hosts on
loopback (hang, drip, endless body, lying Content-Length, 404/500, reset, redirect loop, HTML served
as image/jpeg) each get their 4xx/504 with nothing stored and the service still ready.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from fastapi.testclient import TestClient

from app.core.errors import ImageFetchFailed, LookalikeError, UrlNotAllowed
from app.encode.encoder import OnnxImageEncoder
from app.ingest.fetch import ImageFetcher
from app.ingest.url_guard import address_allowed
from tests.factories import photo
from tests.hardening import assert_error, open_app

JPEG = photo(7)
HTML = b"<!doctype html><html><head><title>Sign in</title></head><body>login</body></html>"


# ---- loopback servers -----------------------------------------------------------------------------


@dataclass
class Listener:
    """A bare TCP listener that records every connection it accepts (and answers nothing)."""

    host: str
    port: int = 0
    accepted: list[str] = field(default_factory=list)
    _sock: socket.socket | None = None

    def __enter__(self) -> Listener:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((self.host, self.port))
        except OSError:
            if family != socket.AF_INET6:
                raise
            # a machine without IPv6 loopback: nothing can be reached there, the URLs are still tried
            self.port = self.port or 9
            return self
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            self.accepted.append(str(peer))
            conn.close()

    def __exit__(self, *exc: object) -> None:
        assert self._sock is not None
        self._sock.close()


class FaultHandler(BaseHTTPRequestHandler):
    """Each path is one way an image host can misbehave."""

    protocol_version = "HTTP/1.1"
    stop: threading.Event
    hosts_seen: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, body: bytes, status: int = 200, content_type: str = "image/jpeg", **extra: str) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        self._head(status, headers)
        self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends a TCP RST instead of a clean FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def do_GET(self) -> None:  # one branch per fault is the clearest layout
        self.hosts_seen.append(self.headers.get("Host", ""))
        path = self.path.split("?")[0]
        if path == "/ok.jpg":
            self._send(JPEG)
        elif path == "/hang":
            self.stop.wait(30)
        elif path == "/drip":  # headers at once, then one byte every 0.2 s: the total timeout must fire
            self._head(200, {"Content-Type": "image/jpeg", "Content-Length": str(len(JPEG))})
            with suppress(OSError):  # the fetcher hangs up after its timeout
                for byte in JPEG:
                    if self.stop.wait(0.2):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
        elif path == "/drip-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            with suppress(OSError):
                for _ in range(300):
                    if self.stop.wait(0.2):
                        return
                    self.wfile.write(b"X-Slow: 1\r\n")
                    self.wfile.flush()
        elif path == "/endless":  # no Content-Length, never ends
            self._head(200, {"Content-Type": "image/jpeg", "Connection": "close"})
            self.close_connection = True
            with suppress(OSError):
                while not self.stop.is_set():
                    self.wfile.write(b"\xff" * 65536)
        elif path == "/endless-chunked":
            self._head(200, {"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"})
            with suppress(OSError):
                while not self.stop.is_set():
                    self.wfile.write(b"10000\r\n" + b"\xff" * 65536 + b"\r\n")
        elif path == "/huge-content-length":  # announces 10 GB: refused before reading
            self._head(200, {"Content-Type": "image/jpeg", "Content-Length": str(10 * 1024**3)})
            self.close_connection = True
        elif path == "/content-length-too-small":  # says 200 bytes, sends the whole photo
            self._head(200, {"Content-Type": "image/jpeg", "Content-Length": "200"})
            self.wfile.write(JPEG)
            self.close_connection = True
        elif path == "/content-length-too-big":  # says 10x the bytes it sends, then closes
            self._head(200, {"Content-Type": "image/jpeg", "Content-Length": str(len(JPEG) * 10)})
            self.wfile.write(JPEG)
            self.close_connection = True
        elif path == "/404":
            self._send(b"missing", 404, "text/plain")
        elif path == "/500":
            self._send(b"boom", 500, "text/plain")
        elif path == "/reset":
            self._reset()
        elif path == "/reset-mid-body":
            self._head(200, {"Content-Type": "image/jpeg", "Content-Length": str(len(JPEG))})
            self.wfile.write(JPEG[: len(JPEG) // 2])
            self.wfile.flush()
            self._reset()
        elif path == "/garbage":
            self.wfile.write(b"\x00\x01\x02 this is not HTTP \r\n\r\n")
            self.close_connection = True
        elif path == "/loop":
            self._send(b"", 302, "text/plain", Location="/loop")
        elif path.startswith("/hop"):  # /hop2 -> /hop1 -> /hop0 -> the photo: three redirects
            left = int(path[4:])
            self._send(b"", 302, "text/plain", Location=f"/hop{left - 1}" if left else "/ok.jpg")
        elif path == "/redirect-no-location":
            self._send(b"", 302, "text/plain")
        elif path == "/redirect-to-file":
            self._send(b"", 302, "text/plain", Location="file:///etc/passwd")
        elif path == "/redirect-to-gopher":
            self._send(b"", 301, "text/plain", Location="gopher://127.0.0.1:70/_stats")
        elif path == "/html-as-jpeg":
            self._send(HTML)
        elif path == "/gzip":
            self._send(gzip.compress(JPEG), Content_Encoding="gzip")
        elif path == "/empty":
            self._send(b"")
        else:
            self._send(b"not found", 404, "text/plain")


@dataclass
class FaultServer:
    url: str
    hosts_seen: list[str]


@contextmanager
def fault_server(host: str = "127.0.0.1") -> Iterator[FaultServer]:
    stop = threading.Event()
    hosts: list[str] = []
    handler = type("Handler", (FaultHandler,), {"stop": stop, "hosts_seen": hosts})
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield FaultServer(f"http://{host}:{server.server_address[1]}", hosts)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


# ---- SSRF: forms of "inside our network" that must never be connected to ----------------------------


def ssrf_urls(p4: int, p6: int) -> list[tuple[str, set[str]]]:
    """URL -> acceptable error codes. Every one targets a loopback listener or an internal range."""
    refused = {"url_not_allowed"}
    return [
        (f"http://127.0.0.1:{p4}/x.jpg", refused),
        (f"https://127.0.0.1:{p4}/x.jpg", refused),
        (f"http://localhost:{p4}/x.jpg", refused),
        (f"http://LocalHost:{p4}/x.jpg", refused),
        # a machine whose resolver does not know "localhost." answers "cannot resolve" instead
        (f"http://localhost.:{p4}/x.jpg", {"url_not_allowed", "image_fetch_failed"}),
        (f"http://127.0.0.1.:{p4}/x.jpg", refused),
        (f"http://2130706433:{p4}/x.jpg", refused),
        (f"http://0177.0.0.1:{p4}/x.jpg", refused),
        (f"http://0x7f.0.0.1:{p4}/x.jpg", refused),
        (f"http://0x7f000001:{p4}/x.jpg", refused),
        (f"http://0x7f.1:{p4}/x.jpg", refused),
        (f"http://127.1:{p4}/x.jpg", refused),
        (f"http://127.0.1:{p4}/x.jpg", refused),
        (f"http://0:{p4}/x.jpg", refused),
        (f"http://0.0.0.0:{p4}/x.jpg", refused),
        (f"http://[::1]:{p6}/x.jpg", refused),
        (f"http://[::]:{p6}/x.jpg", refused),
        (f"http://[0:0:0:0:0:0:0:1]:{p6}/x.jpg", refused),
        (f"http://[::ffff:127.0.0.1]:{p4}/x.jpg", refused),
        (f"http://[::ffff:7f00:1]:{p4}/x.jpg", refused),
        (f"http://[0:0:0:0:0:ffff:127.0.0.1]:{p4}/x.jpg", refused),
        (f"http://[::127.0.0.1]:{p4}/x.jpg", refused),
        (f"http://[2002:7f00:1::]:{p4}/x.jpg", refused),
        (f"http://[64:ff9b::7f00:1]:{p4}/x.jpg", refused),
        (f"http://[fe80::1%25lo]:{p6}/x.jpg", refused),
        (f"http://user:pass@127.0.0.1:{p4}/x.jpg", refused),
        (f"http://images.example.com@127.0.0.1:{p4}/x.jpg", refused),
        (f"http://127.0.0.1:{p4}#@images.example.com/x.jpg", refused),
        (f"http://127.0.0.1:{p4}\\@images.example.com/x.jpg", refused),
        (f"http://１２７.０.０.１:{p4}/x.jpg", refused),
        (f"http://127。0。0。1:{p4}/x.jpg", refused),
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", refused),
        ("http://[fd00:ec2::254]/latest/meta-data/", refused),
        ("http://100.100.100.200/latest/meta-data/", refused),
        ("http://10.0.0.1/x.jpg", refused),
        ("http://172.16.0.1/x.jpg", refused),
        ("http://192.168.1.1/x.jpg", refused),
        ("http://100.64.0.1/x.jpg", refused),
        ("http://198.18.0.1/x.jpg", refused),
        ("http://192.0.2.1/x.jpg", refused),
        ("http://224.0.0.1/x.jpg", refused),
        ("http://240.0.0.1/x.jpg", refused),
        ("http://255.255.255.255/x.jpg", refused),
        ("http://[ff02::1]/x.jpg", refused),
        ("http://[fc00::1]/x.jpg", refused),
        (f"file:///etc/passwd#{p4}", refused),
        (f"ftp://127.0.0.1:{p4}/x.jpg", refused),
        (f"gopher://127.0.0.1:{p4}/_GET", refused),
        (f"dict://127.0.0.1:{p4}/info", refused),
        ("data:image/png;base64,iVBORw0KGgo=", refused),
        ("javascript:alert(1)", refused),
        (f"//127.0.0.1:{p4}/x.jpg", refused),
        (f"127.0.0.1:{p4}/x.jpg", refused),
        (f"http://127.0.0.1:{p4}:80/x.jpg", refused),
    ]


@pytest.fixture(scope="module")
def ssrf_api(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> Iterator[TestClient]:
    with open_app(tmp_path_factory.mktemp("ssrf"), tiny_model_path, tiny_encoder, fetch_allow_private=False) as c:
        yield c


def test_ssrf_forms_are_refused_and_never_connect(ssrf_api: TestClient) -> None:
    with Listener("127.0.0.1") as v4, Listener("::1") as v6:
        cases = ssrf_urls(v4.port, v6.port)
        for n, (url, codes) in enumerate(cases):
            item_id = f"ssrf-{n}"
            response = ssrf_api.post("/items", json={"item_id": item_id, "image_url": url})
            assert response.status_code in (422, 424), (url, response.text)
            assert response.json()["error"]["code"] in codes, (url, response.text)
            assert ssrf_api.get(f"/items/{item_id}").status_code == 404
        # the listeners never saw a single connection
        assert v4.accepted == [] and v6.accepted == []
    assert ssrf_api.get("/readyz").status_code == 200
    assert len(cases) >= 50


def test_ssrf_in_a_batch_and_through_every_redirect_hop(ssrf_api: TestClient) -> None:
    with Listener("127.0.0.1") as listener:
        items = [
            {"item_id": "sb-1", "image_url": f"http://127.0.0.1:{listener.port}/x.jpg"},
            {"item_id": "sb-2", "image_url": "http://169.254.169.254/latest/meta-data/"},
        ]
        results = ssrf_api.post("/items/batch", json={"items": items}).json()["results"]
        assert [r["error"]["code"] for r in results] == ["url_not_allowed"] * 2
        assert listener.accepted == []


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def loopback_one(allowed: str) -> object:
    """The real policy, except that one loopback address counts as public (for a reachable first hop)."""
    only = ipaddress.ip_address(allowed)
    return lambda ip: ip == only or address_allowed(ip)


async def fetch_with(url: str, **options: object) -> bytes:
    fetcher = ImageFetcher(timeout_s=5, max_bytes=1_000_000, allow_private=False, **options)  # type: ignore[arg-type]
    try:
        return await fetcher.fetch(url)
    finally:
        await fetcher.aclose()


@pytest.mark.parametrize("target", ["http://127.0.0.2:{p}/x.jpg", "http://2130706434:{p}/x.jpg", "http://[::1]:{p6}/"])
def test_redirect_to_an_internal_address_is_refused_at_that_hop(target: str) -> None:
    """The first hop is allowed (a test policy admits 127.0.0.1); the redirect target is checked again."""
    with Listener("127.0.0.2") as inner, Listener("::1") as inner6:
        location = target.format(p=inner.port, p6=inner6.port)

        class Redirect(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with pytest.raises(UrlNotAllowed):
                run(fetch_with(f"http://127.0.0.1:{server.server_address[1]}/a.jpg", policy=loopback_one("127.0.0.1")))
        finally:
            server.shutdown()
            server.server_close()
        assert inner.accepted == [] and inner6.accepted == []


# ---- the connection goes to the address that was checked ----------------------------------------------


class CountingResolver:
    """Stands in for DNS (no name server we control exists here): answers from a script, counts lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


def test_connection_uses_the_checked_address_and_keeps_the_host_header() -> None:
    with fault_server() as server:
        port = server.url.rsplit(":", 1)[1]
        resolver = CountingResolver(["127.0.0.1"])
        data = run(fetch_with(f"http://images.test:{port}/ok.jpg", resolver=resolver, policy=loopback_one("127.0.0.1")))
        assert data == JPEG
        assert resolver.lookups == ["images.test"]  # one lookup: the one that was checked
        assert server.hosts_seen == [f"images.test:{port}"]


def test_rebinding_answer_is_checked_on_the_connection_it_would_make() -> None:
    """A name server that answers an allowed address first and an internal one next gets nowhere: each
    new connection resolves once and checks exactly what it connects to, so the second answer is refused."""
    with fault_server() as server, Listener("127.0.0.2", int(server.url.rsplit(":", 1)[1])) as inner:
        resolver = CountingResolver(["127.0.0.1"], ["127.0.0.2"])
        url = f"http://rebind.test:{inner.port}/ok.jpg"
        assert run(fetch_with(url, resolver=resolver, policy=loopback_one("127.0.0.1"))) == JPEG
        with pytest.raises(UrlNotAllowed):  # a new fetcher: a new connection, a new lookup
            run(fetch_with(url, resolver=resolver, policy=loopback_one("127.0.0.1")))
        assert resolver.lookups == ["rebind.test", "rebind.test"]
        assert inner.accepted == []


def test_one_internal_address_among_public_ones_refuses_the_host() -> None:
    with Listener("127.0.0.1") as listener:
        resolver = CountingResolver(["93.184.215.14", "127.0.0.1"])
        with pytest.raises(UrlNotAllowed):
            run(fetch_with(f"http://mixed.test:{listener.port}/x.jpg", resolver=resolver))
        assert listener.accepted == []


def test_tls_is_verified_on_the_host_name_not_the_pinned_address() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("images.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    stop, hosts, sni = threading.Event(), [], []
    handler = type("Handler", (FaultHandler,), {"stop": stop, "hosts_seen": hosts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)  # type: ignore[assignment]
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    options = {
        "resolver": CountingResolver(["127.0.0.1"]),
        "policy": loopback_one("127.0.0.1"),
        "ssl_context": client_ctx,
    }
    try:
        assert run(fetch_with(f"https://images.test:{port}/ok.jpg", **options)) == JPEG
        assert sni == ["images.test"] and hosts == [f"images.test:{port}"]
        # the same address under a name the certificate does not cover: verification fails -> 424
        with pytest.raises(ImageFetchFailed):
            run(fetch_with(f"https://other.test:{port}/ok.jpg", **options))
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


# ---- misbehaving image hosts (FETCH_ALLOW_PRIVATE=true: they live on loopback) ----------------------


FAULTS: list[tuple[str, int, str]] = [
    ("/hang", 504, "image_fetch_timeout"),
    ("/drip", 504, "image_fetch_timeout"),
    ("/drip-headers", 504, "image_fetch_timeout"),
    ("/endless", 413, "image_too_large"),
    ("/endless-chunked", 413, "image_too_large"),
    ("/huge-content-length", 413, "image_too_large"),
    ("/content-length-too-small", 422, "image_decode_error"),  # only the announced 200 bytes are read
    ("/content-length-too-big", 424, "image_fetch_failed"),
    ("/404", 424, "image_fetch_failed"),
    ("/500", 424, "image_fetch_failed"),
    ("/reset", 424, "image_fetch_failed"),
    ("/reset-mid-body", 424, "image_fetch_failed"),
    ("/garbage", 424, "image_fetch_failed"),
    ("/loop", 424, "image_fetch_failed"),
    ("/hop3", 424, "image_fetch_failed"),  # four redirects: one too many
    ("/redirect-no-location", 424, "image_fetch_failed"),
    ("/redirect-to-file", 422, "url_not_allowed"),
    ("/redirect-to-gopher", 422, "url_not_allowed"),
    ("/html-as-jpeg", 415, "unsupported_image_type"),
    ("/gzip", 424, "image_fetch_failed"),
    ("/empty", 415, "unsupported_image_type"),
]


@pytest.fixture(scope="module")
def fault_api(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("faults")
    with open_app(tmp, tiny_model_path, tiny_encoder, fetch_timeout_s=1.0, fetch_max_bytes=1_000_000) as client:
        yield client


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    with fault_server() as server:
        yield server


@pytest.mark.parametrize(("path", "status", "code"), FAULTS, ids=[f[0] for f in FAULTS])
def test_misbehaving_image_host(fault_api: TestClient, faults: FaultServer, path: str, status: int, code: str) -> None:
    item_id = "fault" + path.replace("/", "-")
    started = time.monotonic()
    response = fault_api.post("/items", json={"item_id": item_id, "image_url": faults.url + path})
    elapsed = time.monotonic() - started
    assert_error(response, status, code)
    assert fault_api.get(f"/items/{item_id}").status_code == 404
    assert fault_api.get("/readyz").status_code == 200
    print(f"{path}: {status} {code} in {elapsed:.2f} s")  # figures for docs/reliability.md (-s)


def test_three_redirects_are_followed(fault_api: TestClient, faults: FaultServer) -> None:
    response = fault_api.post("/items", json={"item_id": "hops-3", "image_url": faults.url + "/hop2"})
    assert response.status_code == 201, response.text


def test_fetch_max_redirects_sets_how_many_hops_are_followed(
    tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder, faults: FaultServer
) -> None:
    with open_app(tmp_path, tiny_model_path, tiny_encoder, fetch_max_redirects=1) as client:
        one_hop = client.post("/items", json={"item_id": "hops-1", "image_url": faults.url + "/hop0"})
        assert one_hop.status_code == 201, one_hop.text
        two_hops = client.post("/items", json={"item_id": "hops-2", "image_url": faults.url + "/hop1"})
        assert_error(two_hops, 424, "image_fetch_failed")
        assert "LOOKALIKE_FETCH_MAX_REDIRECTS allows (1)" in two_hops.json()["error"]["message"]
        assert client.get("/items/hops-2").status_code == 404


def test_fetch_errors_are_typed_errors_never_bare_exceptions() -> None:
    """Every fault above is a LookalikeError from the fetcher itself (so a 4xx/504, never a 500)."""

    async def all_faults(base: str) -> list[str]:
        fetcher = ImageFetcher(timeout_s=1.0, max_bytes=1_000_000, allow_private=True)
        codes = []
        try:
            for path, _, _ in FAULTS:
                try:
                    await fetcher.fetch(base + path)
                    codes.append("ok")
                except LookalikeError as exc:
                    codes.append(exc.code)
        finally:
            await fetcher.aclose()
        return codes

    with fault_server() as server:
        codes = run(all_faults(server.url))
    # decode-level codes (415/422 decode) come later, from the bytes; the fetcher returns those bytes
    expected = [code if code not in ("unsupported_image_type", "image_decode_error") else "ok" for _, _, code in FAULTS]
    assert codes == expected
