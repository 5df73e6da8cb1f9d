"""The timeline: one ordered list of what happened to a workflow, from DBOS's own records."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from workflow_comm import names
from workflow_comm.auth import stored_id
from workflow_comm.errors import within_db_timeout
from workflow_comm.live.frames import PING
from workflow_comm.live.hub import LiveHub
from workflow_comm.live.timeline import TimelineWatch, timeline_frames
from workflow_comm.models import WorkflowPublic
from workflow_comm.models_mailbox import TimelineEntry, TimelinePublic
from workflow_comm.params import PageOffset, TimelineLimit, WorkflowId
from workflow_comm.routes.live import SSE_OK, EventStream, take_live_slot
from workflow_comm.service import describe, direct_reads, require_status
from workflow_comm.timeline import build_timeline

# Authorization, logging and the common error answers come where each router is included
# (app.py): the live one also takes the key from ?api_key= (EventSource sends no headers).
router = APIRouter(tags=["timeline"])
live_router = APIRouter(tags=["live"])

TimelineResume = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        min_length=1,
        # The longest entry id: "msg-<idempotency key>::<workflow id>".
        max_length=names.IDEMPOTENCY_KEY_MAX_LEN + names.WORKFLOW_ID_MAX_LEN + 8,
        description="Resume after this entry: the id of the last event received.",
    ),
]


async def read_timeline(stored: str, status: WorkflowPublic) -> tuple[list[TimelineEntry], bool]:
    """Every entry of the stored workflow's timeline, and whether a kind was cut at its limit."""
    rows = await direct_reads().timeline_rows(
        stored, max_rows=names.TIMELINE_READ_MAX, chars=names.TIMELINE_VALUE_MAX_CHARS
    )
    cut = any(
        len(found) >= names.TIMELINE_READ_MAX
        for found in (rows.operations, rows.events, rows.streams, rows.messages)
    )
    return build_timeline(rows, status, names.TIMELINE_VALUE_MAX_CHARS), cut


# Each entry shows the fields its type has (TimelineEntry's serializer leaves out the others).
@router.get("/workflows/{workflow_id}/timeline")
async def get_timeline(
    workflow_id: WorkflowId,
    limit: TimelineLimit = names.TIMELINE_PAGE_DEFAULT,
    offset: PageOffset = 0,
) -> TimelinePublic:
    """What happened to the workflow, in order: created, steps, events, messages, stream
    writes, recovery, and its status or end."""
    status = await require_status(workflow_id)
    entries, cut = await within_db_timeout(
        read_timeline(stored_id(workflow_id), describe(status, workflow_id))
    )
    page = entries[offset : offset + limit]
    return TimelinePublic(
        workflow_id=workflow_id,
        data=page,
        count=len(page),
        offset=offset,
        has_more=offset + limit < len(entries),
        truncated=cut,
    )


async def timeline_subscription(
    workflow_id: WorkflowId, request: Request
) -> AsyncIterator[TimelineWatch]:
    """A place among the watchers of the workflow's timeline, for the whole response."""
    status = await require_status(workflow_id)
    hub: LiveHub = request.app.state.live_hub
    take_live_slot(hub)
    watch = hub.timelines.join(stored_id(workflow_id), describe(status, workflow_id))
    try:
        yield watch
    finally:
        hub.timelines.leave(watch)
        hub.release()


@live_router.get(
    "/workflows/{workflow_id}/timeline/live", response_class=EventStream, responses=SSE_OK
)
async def live_timeline(
    workflow_id: WorkflowId,
    request: Request,
    watch: Annotated[TimelineWatch, Depends(timeline_subscription)],
    last_event_id: TimelineResume = None,
) -> EventStream:
    """Every timeline entry (after `Last-Event-ID`, when resuming), then each new one as it
    happens, until the workflow ends.

    Each is an unnamed event whose data is the entry and whose `id` is the entry's `id`. Ends
    with `event: closed` ({workflow_id, status}); `shutdown` carries `last_event_id` instead.
    """
    heartbeat: float = request.app.state.live_hub.heartbeat

    async def frames() -> AsyncIterator[bytes]:
        async for frame in timeline_frames(watch, workflow_id, last_event_id, heartbeat):
            yield PING if frame is None else frame

    return EventStream(frames())
