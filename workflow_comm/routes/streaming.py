"""Streaming: a workflow appends an ordered, durable log; clients read it while it grows."""

from fastapi import APIRouter, Depends

from workflow_comm import keys
from workflow_comm.auth import AUTH_RESPONSES, WRITE_RESPONSES, authorize
from workflow_comm.errors import within_db_timeout
from workflow_comm.logs import bind_workflow_id
from workflow_comm.models import ErrorPublic, StreamingWorkflowStarted, StreamPage
from workflow_comm.params import (
    NSteps,
    StepSeconds,
    StreamKey,
    StreamLimit,
    StreamOffset,
    WorkflowId,
)
from workflow_comm.service import read_page, require_status, start_once
from workflow_comm.workflows import stream_entry_count, workflow_with_streaming

router = APIRouter(
    tags=["streaming"],
    dependencies=[Depends(bind_workflow_id), Depends(authorize)],
    responses={
        **AUTH_RESPONSES,
        404: {"model": ErrorPublic, "description": "Unknown workflow"},
        422: {"model": ErrorPublic, "description": "A parameter is out of bounds"},
        503: {"model": ErrorPublic, "description": "The database is unavailable"},
    },
)


@router.post(
    "/start-workflow-streaming/{workflow_id}/{n_steps}",
    responses={
        **WRITE_RESPONSES,
        409: {"model": ErrorPublic, "description": "ID used by another kind"},
    },
)
async def start_workflow_streaming(
    workflow_id: WorkflowId,
    n_steps: NSteps,
    step_seconds: StepSeconds = keys.STEP_SECONDS_DEFAULT,
) -> StreamingWorkflowStarted:
    """Start a workflow that writes `progress_stream`: 3 + 2 * n_steps entries, then closes it."""
    created, (n_steps, _) = await start_once(
        "streaming", workflow_with_streaming, workflow_id, n_steps, step_seconds
    )
    return StreamingWorkflowStarted(
        workflow_id=workflow_id,
        kind="streaming",
        created=created,
        message=(
            f"Started workflow {workflow_id} streaming {n_steps} steps"
            if created
            else f"Workflow {workflow_id} already exists; returning it unchanged"
        ),
        status_endpoint=f"/workflows/{workflow_id}",
        read_stream=f"/workflow-stream/{workflow_id}",
        stream_key=keys.STREAM_PROGRESS,
        expected_entries=stream_entry_count(n_steps),
    )


@router.get("/workflow-stream/{workflow_id}")
async def read_workflow_stream(
    workflow_id: WorkflowId,
    offset: StreamOffset = 0,
    limit: StreamLimit = keys.STREAM_PAGE_MAX,
    key: StreamKey = keys.STREAM_PROGRESS,
) -> StreamPage:
    """Everything written from `offset` so far, at once; `closed` says whether more will come."""
    await require_status(workflow_id)
    values, has_more, closed = await within_db_timeout(read_page(workflow_id, key, offset, limit))
    return StreamPage(
        workflow_id=workflow_id,
        stream_key=key,
        stream_values=values,
        total_messages=len(values),
        offset=offset,
        # Always offset + what was read, so a client resumes where it asked. Past the end
        # that is the requested offset itself: DBOS reads nothing there and no length is
        # known without reading the stream from its start, which this route never does.
        next_offset=offset + len(values),
        has_more=has_more,
        closed=closed,
    )
