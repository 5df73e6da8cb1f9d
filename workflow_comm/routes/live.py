"""Live push over server-sent events: streams, events and status as they happen.

Each response replays what the client missed (from `offset` or `Last-Event-ID`), then tails
new data from a reader shared by every subscriber of the workflow, and ends with a `closed`
event. Idle connections get a `: ping` comment every COMM_SSE_HEARTBEAT_SEC so proxies keep
them: FastAPI's own keep-alive, set to that interval (see use_heartbeat).
"""

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import fastapi.routing
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from workflow_comm import names
from workflow_comm.auth import stored_id
from workflow_comm.live.feed import Interest, Subscriber
from workflow_comm.live.hub import LiveCapacityExceeded, LiveHub
from workflow_comm.live.items import (
    EventsEnd,
    EventSet,
    Overflow,
    Shutdown,
    StatusChange,
    StatusEnd,
    StreamEnd,
    StreamValue,
)
from workflow_comm.metrics import LIVE_PUSHED
from workflow_comm.models import WorkflowPublic
from workflow_comm.params import StreamKey, StreamOffset, WorkflowId
from workflow_comm.service import require_status

# Authorization (authorize_live: ?api_key= too), logging and the error answers come where the
# router is included (app.py).
router = APIRouter(tags=["live"])

# The id of an event received: a stream offset, or an event version. A stream resumes at the
# next offset, which keeps it within STREAM_OFFSET_MAX, the bound of ?offset=.
LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=names.STREAM_OFFSET_MAX - 1,
        description="Resume after this id (0 to 2^30 - 1): the id of the last event received.",
    ),
]


def get_hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.live_hub
    return hub


Hub = Annotated[LiveHub, Depends(get_hub)]


async def _subscription(
    hub: LiveHub, workflow_id: str, interest: Interest
) -> AsyncIterator[Subscriber]:
    """A subscriber for the whole response: checked (404, 503) before the first byte."""
    await require_status(workflow_id)
    try:
        hub.acquire()
    except LiveCapacityExceeded:
        raise HTTPException(
            503,
            f"Too many live connections (limit {hub.max_connections}); retry shortly.",
            headers={"Retry-After": "2"},
        ) from None
    watched = stored_id(workflow_id)  # the hub and its readers work with stored IDs
    sub = hub.subscribe(watched, interest)
    try:
        yield sub
    finally:
        hub.unsubscribe(sub)
        hub.release()


async def stream_subscription(
    hub: Hub,
    workflow_id: WorkflowId,
    key: StreamKey = names.STREAM_PROGRESS,
    offset: StreamOffset = 0,
    last_event_id: LastEventId = None,
) -> AsyncIterator[Subscriber]:
    start = offset if last_event_id is None else last_event_id + 1
    interest = Interest(stream_key=key, stream_offset=start)
    async for sub in _subscription(hub, workflow_id, interest):
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


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def use_heartbeat(seconds: float) -> None:
    """Send `: ping` after `seconds` without data on every SSE response, and nothing else.

    FastAPI (0.165) sends its own `: ping` on an EventSourceResponse after 15 s without data,
    whatever this server is set to; its interval is the module global `_PING_INTERVAL` of
    fastapi.routing, read on every wait. Set to the setting, it is the one heartbeat: the
    routes below send none of their own. One interval per process (the last app created).
    """
    namespace = vars(fastapi.routing)
    if not isinstance(namespace.get("_PING_INTERVAL"), int | float):
        raise RuntimeError("fastapi.routing has no _PING_INTERVAL: the SSE heartbeat is unset")
    namespace["_PING_INTERVAL"] = seconds


@router.get("/workflow-stream/{workflow_id}/live", response_class=EventSourceResponse)
async def live_stream(
    workflow_id: WorkflowId,
    hub: Hub,
    sub: Annotated[Subscriber, Depends(stream_subscription)],
) -> AsyncIterator[ServerSentEvent]:
    """Replay a stream from `offset` (or after `Last-Event-ID`), then tail it until it closes.

    Each value is an unnamed event whose `id` is its offset and whose data is the value.
    Ends with `event: closed`; `overflow` or `shutdown` carry `resume_offset` instead.
    """
    next_offset = sub.interest.stream_offset
    async for item in sub.items(workflow_id, hub.heartbeat):
        if isinstance(item, StreamValue):
            next_offset = item.offset + 1
            LIVE_PUSHED.labels("sse", "stream").inc()
            yield ServerSentEvent(raw_data=_compact_json(item.value), id=str(item.offset))
        elif isinstance(item, StreamEnd):
            closed = {
                "workflow_id": workflow_id,
                "key": item.key,
                "status": item.status,
                "next_offset": item.next_offset,
            }
            yield ServerSentEvent(event="closed", raw_data=_compact_json(closed))
        elif isinstance(item, (Overflow, Shutdown)):
            yield _cut_off(item, {"resume_offset": next_offset})


@router.get("/workflow-events/{workflow_id}/live", response_class=EventSourceResponse)
async def live_events(
    workflow_id: WorkflowId,
    hub: Hub,
    sub: Annotated[Subscriber, Depends(events_subscription)],
) -> AsyncIterator[ServerSentEvent]:
    """The current value of every event key, then every change, until the workflow ends.

    Each is an unnamed event with data `{key, value, version}` and id `version`. After
    `Last-Event-ID: V` only keys changed since V are sent, each with its current value.
    """
    last = sub.interest.events_after
    async for item in sub.items(workflow_id, hub.heartbeat):
        if isinstance(item, EventSet):
            last = item.version
            change = {"key": item.key, "value": item.value, "version": item.version}
            LIVE_PUSHED.labels("sse", "event").inc()
            yield ServerSentEvent(raw_data=_compact_json(change), id=str(item.version))
        elif isinstance(item, EventsEnd):
            yield ServerSentEvent(
                event="closed",
                raw_data=_compact_json({"workflow_id": workflow_id, "status": item.status}),
            )
        elif isinstance(item, (Overflow, Shutdown)):
            yield _cut_off(item, {"last_event_id": last})


@router.get("/workflows/{workflow_id}/live", response_class=EventSourceResponse)
async def live_status(
    workflow_id: WorkflowId,
    hub: Hub,
    sub: Annotated[Subscriber, Depends(status_subscription)],
) -> AsyncIterator[ServerSentEvent]:
    """The workflow's status now and at every change; `closed` carries its result or error."""
    async for item in sub.items(workflow_id, hub.heartbeat):
        if isinstance(item, StatusChange):
            LIVE_PUSHED.labels("sse", "status").inc()
            yield ServerSentEvent(raw_data=as_seen(item.workflow, workflow_id))
        elif isinstance(item, StatusEnd):
            yield ServerSentEvent(event="closed", raw_data=as_seen(item.workflow, workflow_id))
        elif isinstance(item, (Overflow, Shutdown)):
            yield _cut_off(item, {})


def as_seen(workflow: WorkflowPublic, workflow_id: str) -> str:
    """The shared feed's status as JSON, under the ID this client knows the workflow by."""
    return workflow.model_copy(update={"workflow_id": workflow_id}).model_dump_json()


def _cut_off(why: Overflow | Shutdown, resume: dict[str, Any]) -> ServerSentEvent:
    if isinstance(why, Overflow):
        reason = "This client fell too far behind; reconnect to resume."
        return ServerSentEvent(
            event="overflow", raw_data=_compact_json({**resume, "reason": reason})
        )
    return ServerSentEvent(
        event="shutdown", raw_data=_compact_json({**resume, "reason": why.reason})
    )
