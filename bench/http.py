"""The Transport of bench.scenarios over the server's HTTP API (aiohttp), plus an SSE reader."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from workflow_comm.names import TOPIC_NOTIFICATION


class HTTPError(Exception):
    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> {status}: {body[:200]}")
        self.status = status


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[ServerSentEvent]:
    """Parse a text/event-stream body into events (comments and retry: are skipped).

    Reads the body a chunk at a time and splits it into events itself: reading it a line at
    a time cost the driver about as much CPU per event as the server spends sending it, and
    a thousand subscribers in one driver process then measured the driver's delay as much
    as the server's.
    """
    rest = b""
    async for chunk in response.content.iter_any():
        blocks = (rest + chunk).replace(b"\r\n", b"\n").split(b"\n\n")
        rest = blocks.pop()  # an event not yet whole
        for block in blocks:
            event = _parse(block.decode())
            if event is not None:
                yield event
    if rest.strip():
        event = _parse(rest.decode())
        if event is not None:
            yield event


def _parse(block: str) -> ServerSentEvent | None:
    """One event's lines, or None for a block of comments only."""
    event, data, event_id = "message", [], None
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
    if not data:
        return None
    return ServerSentEvent(event, "\n".join(data), event_id)


def new_session(timeout_sec: float = 180.0) -> aiohttp.ClientSession:
    """A session with no cap on connections: the load scenarios hold a thousand at once."""
    return aiohttp.ClientSession(
        # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them
        # under us (a request written to a connection the server just closed fails).
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_sec),
    )


class HTTPTransport:
    """Every call a scenario makes, as the documented HTTP request a client would make."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.base_url + path
        async with self.session.request(method, url, **kwargs) as response:
            body = await response.read()
            if response.status != 200:
                raise HTTPError(method, path, response.status, body.decode(errors="replace"))
            return json.loads(body)

    async def start_messaging(self, workflow_id: str, approval_timeout: float = 600.0) -> None:
        # Long enough that no benchmark message ever arrives after the workflow gave up.
        await self.request(
            "POST",
            f"/start-workflow-messaging/{workflow_id}/1",
            params={"step_seconds": "0", "approval_timeout": str(approval_timeout)},
        )

    async def start_events(self, workflow_id: str) -> None:
        await self.request(
            "POST", f"/start-workflow-events/{workflow_id}/1", params={"step_seconds": "0"}
        )

    async def start_event_ticks(self, workflow_id: str, n_ticks: int) -> None:
        await self.request(
            "POST", f"/bench/event-ticks/{workflow_id}", params={"n_ticks": str(n_ticks)}
        )

    async def start_stream_ticks(
        self, workflow_id: str, n_values: int, interval_sec: float
    ) -> None:
        await self.request(
            "POST",
            f"/bench/stream-ticks/{workflow_id}",
            params={"n_values": str(n_values), "interval_sec": str(interval_sec)},
        )

    async def get_event(self, workflow_id: str, key: str, timeout: float) -> Any | None:
        try:
            body = await self.request(
                "GET", f"/workflow-events/{workflow_id}/{key}", params={"timeout": str(timeout)}
            )
        except HTTPError as exc:
            if exc.status == 404:
                return None
            raise
        return body["value"]

    async def send(
        self,
        workflow_id: str,
        payload: dict[str, Any],
        topic: str = TOPIC_NOTIFICATION,
        idempotency_key: str | None = None,
    ) -> None:
        """With `idempotency_key`, a retry after a 503 (which may have been sent) is safe."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        await self.request(
            "POST",
            f"/send-message/{workflow_id}",
            params={"topic": topic},
            json=payload,
            headers=headers,
        )

    @asynccontextmanager
    async def live(
        self, path: str, params: dict[str, str] | None = None
    ) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """An open SSE response (headers received: the server has subscribed)."""
        async with self.session.get(self.base_url + path, params=params) as response:
            if response.status != 200:
                body = await response.text()
                raise HTTPError("GET", path, response.status, body)
            yield sse_events(response)

    @asynccontextmanager
    async def subscribe(self, workflow_id: str, key: str) -> AsyncIterator[AsyncIterator[Any]]:
        async with self.live(f"/workflow-stream/{workflow_id}/live", {"key": key}) as events:
            yield stream_values(events)

    @asynccontextmanager
    async def subscribe_ws(self, workflow_id: str, key: str) -> AsyncIterator[AsyncIterator[Any]]:
        """The stream's values over `WS /ws/workflows/{id}`, once the server has subscribed
        (its first frame, the workflow's current status, has come)."""
        url = self.base_url.replace("http", "ws", 1) + f"/ws/workflows/{workflow_id}"
        async with self.session.ws_connect(url, params={"stream_key": key}) as ws:
            first = await ws.receive()
            yield ws_stream_values(ws, key, first)

    async def pending_count(self) -> int:
        # Counts up to the route's page limit (500): enough to see progress and leftovers.
        body = await self.request("GET", "/workflows", params={"status": "PENDING", "limit": "500"})
        count: int = body["count"]
        return count


async def stream_values(events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[Any]:
    """The values of a live stream, until its `closed` event."""
    async for event in events:
        if event.event == "closed":
            return
        if event.event == "message":
            yield event.json()
        elif event.event in ("overflow", "shutdown"):
            raise RuntimeError(f"live stream ended early: {event.event} {event.data}")


async def ws_stream_values(
    ws: aiohttp.ClientWebSocketResponse, key: str, first: aiohttp.WSMessage
) -> AsyncIterator[Any]:
    """The values of stream `key` among a workflow socket's frames, until `stream_closed`
    (status and event frames are skipped)."""
    message = first
    while True:
        if message.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"socket ended before stream_closed: {message.type.name}")
        frame = json.loads(message.data)
        kind = frame.get("type")
        if kind == "stream" and frame.get("key") == key:
            yield frame["value"]
        elif kind == "stream_closed":
            return
        elif kind in ("overflow", "shutdown", "error"):
            raise RuntimeError(f"socket ended early: {message.data[:200]}")
        message = await ws.receive()
