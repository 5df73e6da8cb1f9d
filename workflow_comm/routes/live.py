"""Live push over server-sent events: streams, events and status as they happen.

Each response replays what the client missed (from `offset`, `tail`, `from=latest` or
`Last-Event-ID`), then tails new data from the state the hub shares among every watcher of
the workflow, and ends with a `closed` event. Each item is encoded once for all of its
subscribers (live/frames.py); the response writes those bytes as they are. Idle connections
get a `: ping` comment every COMM_SSE_HEARTBEAT_SEC so proxies keep them.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from dbos import WorkflowStatus
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from workflow_comm import names, service
from workflow_comm.auth import stored_id, tenant_prefix
from workflow_comm.errors import within_db_timeout
from workflow_comm.live.feed import Interest, Subscriber
from workflow_comm.live.frames import PING, cut_off_sse, encode
from workflow_comm.live.hub import LiveCapacityExceeded, LiveHub
from workflow_comm.live.items import (
    Control,
    EventsEnd,
    EventSet,
    Flush,
    Item,
    Overflow,
    Shutdown,
    StatusChange,
    StatusEnd,
    StreamEnd,
    StreamValue,
)
from workflow_comm.live.listing import ListWatcher
from workflow_comm.metrics import LIVE_PUSHED
from workflow_comm.models import WorkflowStatusName
from workflow_comm.names import WorkflowKind
from workflow_comm.params import AppName, StreamKey, StreamOffset, WorkflowId
from workflow_comm.service import require_status

# Authorization (authorize_live: ?api_key= too), logging and the error answers come where the
# router is included (app.py).
router = APIRouter(tags=["live"])

PUSHED_STREAM = LIVE_PUSHED.labels("sse", "stream")
PUSHED_EVENT = LIVE_PUSHED.labels("sse", "event")
PUSHED_STATUS = LIVE_PUSHED.labels("sse", "status")

# As FastAPI documents an EventSourceResponse: each item of the text/event-stream body.
SSE_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
SSE_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events",
        "content": {"text/event-stream": {"itemSchema": SSE_ITEM_SCHEMA}},
    }
}


# How a live SSE response shows an item: its frame, or None for an item it does not show.
SseRender = Callable[[Item | Control], bytes | None]


class EventStream(StreamingResponse):
    """A text/event-stream response of frames encoded beforehand, unbuffered by proxies.

    With `live` (a subscriber and how this response renders an item), the subscriber's feed
    may write a frame to the connection itself while the response waits for more
    (Subscriber.attach): through the same ASGI `send`, so the middleware sees every write.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        status_code: int = 200,
        live: tuple[Subscriber, SseRender] | None = None,
    ) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(frames, status_code=status_code, headers=headers)
        self._live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._live is None:
            await super().__call__(scope, receive, send)
            return
        sub, render = self._live

        def write(frames: list[bytes]) -> Awaitable[None]:
            body = b"".join(frames)  # one write, as gathered() joins the frames ready together
            return send({"type": "http.response.body", "body": body, "more_body": True})

        sub.attach(render, write)
        try:
            await super().__call__(scope, receive, send)
        finally:
            sub.detach()


def live_response(
    sub: Subscriber, workflow_id: str, heartbeat: float, render: SseRender
) -> EventStream:
    """The SSE response of a live subscriber, each item shown by `render`."""
    frames = sse_frames(sub, workflow_id, heartbeat, render)
    return EventStream(gathered(frames), live=(sub, render))


async def sse_frames(
    sub: Subscriber, workflow_id: str, heartbeat: float, render: SseRender
) -> AsyncIterator[bytes | None]:
    """The frames of the items the subscriber's task takes itself (the rest are written by
    its feed: EventStream); a ping when idle; None: nothing more is ready now."""
    async for item in sub.items(workflow_id, heartbeat, flushes=True):
        if isinstance(item, Flush):
            yield None
        elif item is None:
            yield PING
        else:
            frame = render(item)
            if frame is not None:
                yield frame


GATHER_BYTES = 64 * 1024  # at most this much written at once (a frame may take it past)


async def gathered(frames: AsyncIterator[bytes | None]) -> AsyncIterator[bytes]:
    """The frames ready together joined into one write; None from `frames`: nothing more
    is ready now (Subscriber.items' FLUSH)."""
    batch: list[bytes] = []
    size = 0
    async for frame in frames:
        if frame is not None:
            batch.append(frame)
            size += len(frame)
            if size < GATHER_BYTES:
                continue
        if batch:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


# The id of an event received: a stream offset, or an event version. A stream resumes at the
# next offset, which keeps it within STREAM_OFFSET_MAX, the bound of ?offset=.
LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=names.STREAM_OFFSET_MAX - 1,
        description="Resume after this id (0 to 2^30 - 1): the id of the last event received. "
        "Wins over every query parameter that says where to start.",
    ),
]
StreamFrom = Annotated[
    Literal["latest"] | None,
    Query(
        alias="from",
        description="`latest`: start at the last value written (then every new one); the same "
        "as `tail=1`. Not with `offset` or `tail`.",
    ),
]
StreamTail = Annotated[
    int | None,
    Query(
        ge=0,
        le=names.STREAM_TAIL_MAX,
        description="Start with the last N values written (then every new one); 0: only new "
        "ones. Not with `offset` or `from`.",
    ),
]


async def get_hub(request: Request) -> LiveHub:
    # async: FastAPI runs a plain `def` dependency on its thread pool, a hop per request.
    hub: LiveHub = request.app.state.live_hub
    return hub


Hub = Annotated[LiveHub, Depends(get_hub)]


def take_live_slot(hub: LiveHub) -> None:
    """One of the hub's live connections for this response (give it back with
    hub.release()), or a 503 when all are taken."""
    try:
        hub.acquire()
    except LiveCapacityExceeded:
        raise HTTPException(
            503,
            f"Too many live connections (limit {hub.max_connections}); retry shortly.",
            headers={"Retry-After": "2"},
        ) from None


async def _subscription(
    hub: LiveHub, workflow_id: str, interest: Interest, known: WorkflowStatus | None = None
) -> AsyncIterator[Subscriber]:
    """A subscriber for the whole response: checked (404, 503) before the first byte."""
    if known is None:
        known = await require_status(workflow_id)
    take_live_slot(hub)
    watched = stored_id(workflow_id)  # the hub and its readers work with stored IDs
    sub = hub.subscribe(watched, interest, known)
    try:
        yield sub
    finally:
        hub.unsubscribe(sub)
        hub.release()


def _conflict(field: str, detail: str, given: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": detail, "input": given}]
    )


def tail_wanted(
    request: Request, offset: int, start_from: str | None, tail: int | None
) -> int | None:
    """How many of the last values to start with (`from=latest` is 1), or None for `offset`;
    a 422 for options that contradict each other."""
    if start_from is not None and tail is not None:
        raise _conflict("tail", "Use either from=latest or tail=N, not both", tail)
    if start_from is not None:
        tail = 1
    if tail is not None and "offset" in request.query_params:
        raise _conflict("offset", "Use either offset or tail / from=latest, not both", offset)
    return tail


async def stream_start(
    hub: LiveHub,
    stored: str,
    key: str,
    offset: int,
    tail: int | None,
    last_event_id: int | None,
) -> int:
    """The first offset to send: after Last-Event-ID (a reconnect) if sent; else the last
    `tail` values written; else `offset`."""
    if last_event_id is not None:
        return last_event_id + 1
    if tail is None:
        return offset
    return max(0, await within_db_timeout(hub.db.stream_length(stored, key)) - tail)


async def stream_subscription(
    hub: Hub,
    request: Request,
    workflow_id: WorkflowId,
    key: StreamKey = names.STREAM_PROGRESS,
    offset: StreamOffset = 0,
    start_from: StreamFrom = None,
    tail: StreamTail = None,
    last_event_id: LastEventId = None,
) -> AsyncIterator[Subscriber]:
    tail = tail_wanted(request, offset, start_from, tail)
    known = await require_status(workflow_id)  # a 404 before the stream's length is read
    start = await stream_start(hub, stored_id(workflow_id), key, offset, tail, last_event_id)
    interest = Interest(stream_key=key, stream_offset=start)
    async for sub in _subscription(hub, workflow_id, interest, known):
        yield sub


async def events_subscription(
    hub: Hub, workflow_id: WorkflowId, last_event_id: LastEventId = None
) -> AsyncIterator[Subscriber]:
    after = 0 if last_event_id is None else last_event_id
    async for sub in _subscription(hub, workflow_id, Interest(events=True, events_after=after)):
        yield sub


async def status_subscription(hub: Hub, workflow_id: WorkflowId) -> AsyncIterator[Subscriber]:
    async for sub in _subscription(hub, workflow_id, Interest(status=True)):
        yield sub


@router.get("/workflow-stream/{workflow_id}/live", response_class=EventStream, responses=SSE_OK)
async def live_stream(
    workflow_id: WorkflowId,
    hub: Hub,
    sub: Annotated[Subscriber, Depends(stream_subscription)],
) -> EventStream:
    """Replay a stream from `offset` (or the last `tail` values, or `from=latest`, or after
    `Last-Event-ID`), then tail it until it closes.

    Each value is an unnamed event whose `id` is its offset and whose data is the value.
    Ends with `event: closed`; `overflow` or `shutdown` carry `resume_offset` instead.
    """

    next_offset = sub.interest.stream_offset

    def render(item: Item | Control) -> bytes | None:
        nonlocal next_offset
        if isinstance(item, StreamValue):
            next_offset = item.offset + 1
            PUSHED_STREAM.inc()
            return encode(item, workflow_id).sse
        if isinstance(item, StreamEnd):
            return encode(item, workflow_id).sse
        if isinstance(item, (Overflow, Shutdown)):
            return cut_off_sse(item, {"resume_offset": next_offset})
        return None

    return live_response(sub, workflow_id, hub.heartbeat, render)


@router.get("/workflow-events/{workflow_id}/live", response_class=EventStream, responses=SSE_OK)
async def live_events(
    workflow_id: WorkflowId,
    hub: Hub,
    sub: Annotated[Subscriber, Depends(events_subscription)],
) -> EventStream:
    """The current value of every event key, then every change, until the workflow ends.

    Each is an unnamed event with data `{key, value, version}` and id `version`. After
    `Last-Event-ID: V` only keys changed since V are sent, each with its current value.
    """
    return live_response(sub, workflow_id, hub.heartbeat, event_render(sub, workflow_id))


def event_render(sub: Subscriber, workflow_id: str) -> SseRender:
    """How an events subscriber's response shows each item. (Also what
    `python -m bench.sse_overhead` measures as its `feed` mode.)"""
    last = sub.interest.events_after

    def render(item: Item | Control) -> bytes | None:
        nonlocal last
        if isinstance(item, EventSet):
            last = item.version
            PUSHED_EVENT.inc()
            return encode(item, workflow_id).sse
        if isinstance(item, EventsEnd):
            return encode(item, workflow_id).sse
        if isinstance(item, (Overflow, Shutdown)):
            return cut_off_sse(item, {"last_event_id": last})
        return None

    return render


@router.get("/workflows/{workflow_id}/live", response_class=EventStream, responses=SSE_OK)
async def live_status(
    workflow_id: WorkflowId,
    hub: Hub,
    sub: Annotated[Subscriber, Depends(status_subscription)],
) -> EventStream:
    """The workflow's status now and at every change; `closed` carries its result or error."""

    def render(item: Item | Control) -> bytes | None:
        if isinstance(item, StatusChange):
            PUSHED_STATUS.inc()
            return encode(item, workflow_id).sse
        if isinstance(item, StatusEnd):
            return encode(item, workflow_id).sse
        if isinstance(item, (Overflow, Shutdown)):
            return cut_off_sse(item, {})
        return None

    return live_response(sub, workflow_id, hub.heartbeat, render)


async def list_subscription(
    hub: Hub,
    status: WorkflowStatusName | None = None,
    kind: WorkflowKind | None = None,
) -> AsyncIterator[ListWatcher]:
    take_live_slot(hub)
    watcher = hub.listing.add(tenant_prefix(), kind, status)  # a tenant sees its own only
    try:
        yield watcher
    finally:
        hub.listing.remove(watcher)
        hub.release()


# About no one workflow: no 404. Included before routes/control.py, whose /workflows/{workflow_id}
# would take "live" for an ID (app.py).
list_router = APIRouter(tags=["live"])


@list_router.get("/workflows/live", response_class=EventStream, responses=SSE_OK)
async def live_workflows(
    hub: Hub, watcher: Annotated[ListWatcher, Depends(list_subscription)], app: AppName = None
) -> EventStream:
    """Every workflow started and every status change from now on, with the filters of
    `GET /workflows` (`status`, `kind`, `app`), until the server stops.

    Each is an unnamed event whose data is the workflow as `GET /workflows/{id}` shows it.
    A client that falls too far behind gets `event: overflow` and the response ends.
    """

    def render(item: Item | Control) -> bytes | None:
        if isinstance(item, StatusChange):
            shown = watcher.shown_id(item.workflow.workflow_id)
            owner = item.workflow.application_name
            # Only the served applications' workflows (service.ServedApps), or `app`'s.
            if shown is not None and service.served.serves(owner) and app in (None, owner):
                PUSHED_STATUS.inc()
                return encode(item, shown).sse
        elif isinstance(item, (Overflow, Shutdown)):
            return cut_off_sse(item, {})
        return None

    return live_response(watcher.sub, "", hub.heartbeat, render)
