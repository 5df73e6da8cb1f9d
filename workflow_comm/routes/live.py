"""Live push over server-sent events: streams, events and status as they happen.

Each response replays what the client missed (from `offset` or `Last-Event-ID`), then tails
new data from a reader shared by every subscriber of the workflow, and ends with a `closed`
event. Idle connections get a comment line every COMM_SSE_HEARTBEAT_SEC so proxies keep them.
"""

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from workflow_comm import keys
from workflow_comm.live.feed import Interest, Subscriber
from workflow_comm.live.hub import LiveCapacityExceeded, LiveHub
from workflow_comm.live.items import (
    EventChange,
    EventsEnd,
    Overflow,
    Shutdown,
    StatusChange,
    StatusEnd,
    StreamEnd,
    StreamValue,
)
from workflow_comm.models import ErrorPublic
from workflow_comm.params import STREAM_OFFSET_MAX, StreamKey, StreamOffset, WorkflowId
from workflow_comm.service import require_status

router = APIRouter(
    tags=["live"],
    responses={
        404: {"model": ErrorPublic, "description": "Unknown workflow"},
        422: {"model": ErrorPublic, "description": "A parameter is out of bounds"},
        503: {"model": ErrorPublic, "description": "Too many live connections, or no database"},
    },
)

LastEventId = Annotated[
    int | None,
    Header(alias="Last-Event-ID", ge=-1, le=STREAM_OFFSET_MAX, description="Resume after this id."),
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
    sub = hub.subscribe(workflow_id, interest)
    try:
        yield sub
    finally:
        hub.unsubscribe(workflow_id, sub)
        hub.release()


async def stream_subscription(
    hub: Hub,
    workflow_id: WorkflowId,
    key: StreamKey = keys.STREAM_PROGRESS,
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


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping")


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
            yield ServerSentEvent(raw_data=_json(item.value), id=str(item.offset))
        elif isinstance(item, StreamEnd):
            closed = {
                "workflow_id": workflow_id,
                "key": item.key,
                "status": item.status,
                "next_offset": item.next_offset,
            }
            yield ServerSentEvent(event="closed", raw_data=_json(closed))
        elif isinstance(item, (Overflow, Shutdown)):
            yield _cut_off(item, {"resume_offset": next_offset})
        elif item is None:
            yield _ping()


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
        if isinstance(item, EventChange):
            last = item.version
            change = {"key": item.key, "value": item.value, "version": item.version}
            yield ServerSentEvent(raw_data=_json(change), id=str(item.version))
        elif isinstance(item, EventsEnd):
            yield ServerSentEvent(
                event="closed", raw_data=_json({"workflow_id": workflow_id, "status": item.status})
            )
        elif isinstance(item, (Overflow, Shutdown)):
            yield _cut_off(item, {"last_event_id": last})
        elif item is None:
            yield _ping()


@router.get("/workflows/{workflow_id}/live", response_class=EventSourceResponse)
async def live_status(
    workflow_id: WorkflowId,
    hub: Hub,
    sub: Annotated[Subscriber, Depends(status_subscription)],
) -> AsyncIterator[ServerSentEvent]:
    """The workflow's status now and at every change; `closed` carries its result or error."""
    async for item in sub.items(workflow_id, hub.heartbeat):
        if isinstance(item, StatusChange):
            yield ServerSentEvent(raw_data=item.workflow.model_dump_json())
        elif isinstance(item, StatusEnd):
            yield ServerSentEvent(event="closed", raw_data=item.workflow.model_dump_json())
        elif isinstance(item, (Overflow, Shutdown)):
            yield _cut_off(item, {})
        elif item is None:
            yield _ping()


def _cut_off(why: Overflow | Shutdown, resume: dict[str, Any]) -> ServerSentEvent:
    if isinstance(why, Overflow):
        reason = "This client fell too far behind; reconnect to resume."
        return ServerSentEvent(event="overflow", raw_data=_json({**resume, "reason": reason}))
    reason = "The server is shutting down; reconnect to resume."
    return ServerSentEvent(event="shutdown", raw_data=_json({**resume, "reason": reason}))
