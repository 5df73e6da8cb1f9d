"""Resource bounds: request body size, and concurrent waiting requests per client."""

import json
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Answer 413 to a body over `max_bytes`, declared (Content-Length) or streamed (chunked).

    The body is read here, at most max_bytes of it, and replayed to the app, so an oversized
    or endless body never reaches a route or fills memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # One pass over the headers, no copy: most requests (GETs) have neither.
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        if declared is None and not chunked:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._reject(send)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _reject(self, send: Send) -> None:
        detail = f"Request body too large: the limit is {self.max_bytes} bytes."
        payload = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed


class ClientWaits:
    """At most `limit` waiting requests per client address at once; 429 for the next one.

    A waiting request costs the server little, but not nothing: this keeps one client from
    holding thousands. Behind a proxy, run uvicorn with --forwarded-allow-ips so the address
    is the client's, not the proxy's.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._waiting: dict[str, int] = {}

    @contextmanager
    def hold(self, connection: HTTPConnection) -> Iterator[None]:
        client = connection.client.host if connection.client else "unknown"
        held = self._waiting.get(client, 0)
        if held >= self.limit:
            raise HTTPException(
                429,
                f"Too many waiting requests from this client (limit {self.limit}); "
                "retry when one has returned.",
                headers={"Retry-After": "1"},
            )
        self._waiting[client] = held + 1
        self.total += 1
        try:
            yield
        finally:
            self.total -= 1
            left = self._waiting[client] - 1
            if left:
                self._waiting[client] = left
            else:
                del self._waiting[client]
