"""Streaming: a workflow appends an ordered, durable log; clients read it while it grows."""

from fastapi import APIRouter

from workflow_comm import names
from workflow_comm.errors import (
    ID_TAKEN,
    READ_ONLY_KEY,
    error_responses,
    unknown_workflow,
    within_db_timeout,
)
from workflow_comm.models import StreamingWorkflowStarted, StreamPage
from workflow_comm.params import (
    NSteps,
    StepSeconds,
    StreamKey,
    StreamLimit,
    StreamOffset,
    WorkflowId,
)
from workflow_comm.service import read_stream_page, start_once
from workflow_comm.workflows import stream_entry_count, workflow_with_streaming

# Authorization, logging and the common error answers come where the router is included (app.py).
router = APIRouter(tags=["streaming"])
# The demo start route: included only with COMM_DEMO_WORKFLOWS (app.py), never when mounted.
start_router = APIRouter(tags=["streaming"])


@start_router.post(
    "/start-workflow-streaming/{workflow_id}/{n_steps}",
    responses=error_responses({403: READ_ONLY_KEY, 409: ID_TAKEN}),
)
async def start_workflow_streaming(
    workflow_id: WorkflowId,
    n_steps: NSteps,
    step_seconds: StepSeconds = names.STEP_SECONDS_DEFAULT,
) -> StreamingWorkflowStarted:
    """Start a workflow that writes `progress_stream`: 3 + 2 * n_steps entries, then closes it."""
    started = await start_once(
        "streaming", workflow_with_streaming, workflow_id, n_steps, step_seconds
    )
    n_steps = started.args[0]  # an existing workflow's own
    return StreamingWorkflowStarted(
        **started.answer(f"Started workflow {workflow_id} streaming {n_steps} steps"),
        read_stream=f"/workflow-stream/{workflow_id}",
        stream_key=names.STREAM_PROGRESS,
        expected_entries=stream_entry_count(n_steps),
    )


@router.get("/workflow-stream/{workflow_id}")
async def read_workflow_stream(
    workflow_id: WorkflowId,
    offset: StreamOffset = 0,
    limit: StreamLimit = names.STREAM_PAGE_MAX,
    key: StreamKey = names.STREAM_PROGRESS,
) -> StreamPage:
    """Everything written from `offset` so far, at once; `closed` says whether more will come."""
    # One statement: the workflow's existence and the page together.
    page = await within_db_timeout(read_stream_page(workflow_id, key, offset, limit))
    if page is None:
        raise unknown_workflow(workflow_id)
    values, has_more, closed = page
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
