"""Pure ASGI middleware: request ids + HTTP metrics, and the request body size cap.

Pure ASGI (not BaseHTTPMiddleware) keeps the read path cheap and lets the size cap stop a body while
it streams, before anything parses it.
"""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.errors import PayloadTooLarge
from app.http.answers import error_answer
from app.service.admission import Budget, overloaded

REQUEST_ID_HEADER = b"x-request-id"
# Metric labels never take a value a client chose (each new value is a series kept for ever): any other
# method is counted as OTHER, and a path that matches no route as the one route label "unmatched".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Gives each request an id (X-Request-ID, echoed or generated) and records its metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")  # the route's template, never the path sent
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            metrics.http_requests.labels(route=label, method=method, status=str(status)).inc()
            metrics.http_duration.labels(route=label, method=method).observe(time.perf_counter() - started)


class BodySizeLimit:
    """413 payload_too_large for bodies over the cap, by Content-Length or while streaming; 429 overloaded
    when the bodies already held in memory leave no room for this one (the `body_bytes` admission budget).

    The budget is taken before a byte is kept (the declared Content-Length) or, for a chunked body, chunk
    by chunk, and given back when the request is answered: a burst of large uploads holds at most
    ADMISSION_BODY_BYTES of bodies. A refused body is read and dropped chunk by chunk before the 429 goes
    out (no memory held; an HTTP/1.1 client reads its answer only once it has sent the body, and cutting
    the connection under it would turn the 429 into a connection error). A client that waits for
    `100 Continue` never sent it: it gets the 429 at once.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, budget: Budget) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Connection: close, as the rest of the body is never read
        response = error_answer(PayloadTooLarge(self.max_bytes), headers={"connection": "close"})
        await response(scope, receive, send)

    async def _shed(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_answer(overloaded(self.budget))(scope, receive, send)

    async def _drop_rest(self, receive: Receive, received: int) -> str:
        """Read and drop the rest of a refused body: "done", "too_large" (over the cap) or "gone" (client left)."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "gone"
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return "too_large"
            if not message.get("more_body", False):
                return "done"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        held = _Held(self.budget)
        try:
            if declared.isdigit() and not held.take(int(declared)):
                await self._refuse(scope, receive, send, headers, 0, int(declared) > 0)
                return
            body = await self._read_body(scope, receive, send, headers, held)
            if body is None:
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            held.release()

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], received: int, more_body: bool
    ) -> None:
        """429 for a body the budget cannot hold: first drop what the client still sends (unless it waits for
        100-continue), 413 when that turns out over the cap; nothing when the client has left."""
        waiting_for_continue = b"100-continue" in headers.get(b"expect", b"").lower()
        if more_body and not waiting_for_continue:
            outcome = await self._drop_rest(receive, received)
            if outcome == "gone":
                return
            if outcome == "too_large":
                await self._reject(scope, receive, send)
                return
        await self._shed(scope, receive, send)

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], held: _Held
    ) -> bytes | None:
        """The whole body (the routes need all of it anyway), so an oversized body is refused before any
        parser sees it, whatever Content-Length claimed; None when it was refused or the client left."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client is gone: a partial body must never reach a parser
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(scope, receive, send)
                return None
            if received > held.bytes and not held.take(received - held.bytes):
                chunks.clear()  # refused: keep nothing (and hold no budget) while the rest is dropped
                held.release()
                await self._refuse(scope, receive, send, headers, received, message.get("more_body", False))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        chunks.clear()  # the joined copy is the only one kept
        return body


class _Held:
    """The bytes of the body budget one request holds, given back however the request ends."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.bytes = 0

    def take(self, n: int) -> bool:
        if not self.budget.try_acquire(n):
            return False
        self.bytes += n
        return True

    def release(self) -> None:
        self.budget.release(self.bytes)
        self.bytes = 0
