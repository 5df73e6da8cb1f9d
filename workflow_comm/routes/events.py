"""Events: a workflow publishes key/values; clients read one key (waiting) or all of them."""

import asyncio
from typing import Any

from dbos import DBOS
from fastapi import APIRouter, HTTPException, Request

from workflow_comm import names
from workflow_comm.auth import stored_id
from workflow_comm.errors import (
    ID_TAKEN,
    READ_ONLY_KEY,
    UNKNOWN_WORKFLOW,
    error_responses,
    within_db_timeout,
)
from workflow_comm.limits import ClientWaits
from workflow_comm.live.hub import LiveHub
from workflow_comm.models import (
    EventEndpoints,
    EventPublic,
    EventsPublic,
    EventsWorkflowStarted,
)
from workflow_comm.params import EventKey, EventTimeout, NSteps, StepSeconds, WorkflowId
from workflow_comm.service import read_events, require_status, start_once
from workflow_comm.workflows import workflow_with_events

# Authorization, logging and the common error answers come where the router is included (app.py).
router = APIRouter(tags=["events"])


@router.post(
    "/start-workflow-events/{workflow_id}/{n_steps}",
    responses=error_responses({403: READ_ONLY_KEY, 409: ID_TAKEN}),
)
async def start_workflow_events(
    workflow_id: WorkflowId,
    n_steps: NSteps,
    step_seconds: StepSeconds = names.STEP_SECONDS_DEFAULT,
) -> EventsWorkflowStarted:
    """Start a workflow that publishes `status`, `progress` and `result` events."""
    started = await start_once("events", workflow_with_events, workflow_id, n_steps, step_seconds)
    base = f"/workflow-events/{workflow_id}"
    return EventsWorkflowStarted(
        **started.answer(f"Started workflow {workflow_id} with {n_steps} steps"),
        query_endpoints=EventEndpoints(
            progress=f"{base}/{names.EVENT_PROGRESS}",
            status=f"{base}/{names.EVENT_STATUS}",
            result=f"{base}/{names.EVENT_RESULT}",
            all_events=f"{base}/all",
        ),
    )


# Declared before /{event_key} so that "all" is never read as an event key.
@router.get("/workflow-events/{workflow_id}/all")
async def get_all_workflow_events(workflow_id: WorkflowId) -> EventsPublic:
    """Every event the workflow has set, latest value of each, without waiting."""
    status = await require_status(workflow_id)
    return EventsPublic(workflow_id=workflow_id, events=await read_events(status))


@router.get(
    "/workflow-events/{workflow_id}/{event_key}",
    responses=error_responses(
        {
            404: f"{UNKNOWN_WORKFLOW}, or the event is not set",
            429: "Too many waits from this client",
        }
    ),
)
async def get_workflow_event(
    request: Request,
    workflow_id: WorkflowId,
    event_key: EventKey,
    timeout: EventTimeout = names.EVENT_TIMEOUT_DEFAULT,
) -> EventPublic:
    """The event's latest value, waiting up to `timeout` seconds for it to be set.

    The wait is asynchronous: it holds this request only, never the server. It ends early,
    with a 404, if the workflow finishes without setting the key.
    """
    status = await require_status(workflow_id)
    # DBOS would wait out the whole timeout on a finished workflow; it can set nothing more.
    final: str | None = status.status if status.status in names.TERMINAL_STATUSES else None
    stored = stored_id(workflow_id)
    if final is not None or timeout == 0:
        value = await within_db_timeout(DBOS.get_event_async(stored, event_key, timeout_seconds=0))
    else:
        waits: ClientWaits = request.app.state.client_waits
        with waits.hold(request):
            value, final = await _wait_for_event(
                request.app.state.live_hub, stored, event_key, timeout
            )
    if value is None:
        # None is both "timed out" and "set to null"; the full map tells them apart. Read
        # after the workflow finished, it also holds a value set just before the end.
        events = await within_db_timeout(DBOS.get_all_events_async(stored))
        if event_key not in events:
            why = (
                f"the workflow finished ({final}) without setting it"
                if final is not None
                else f"it was not set within {timeout:g}s; retry or raise ?timeout="
            )
            raise HTTPException(
                404, f"Event '{event_key}' is not set on workflow '{workflow_id}': {why}."
            )
        value = events[event_key]
    return EventPublic(workflow_id=workflow_id, event_key=event_key, value=value)


async def _wait_for_event(
    hub: LiveHub, stored: str, event_key: str, timeout: float
) -> tuple[Any, str | None]:
    """(value, None) once the key is set or `timeout` has passed (value None then), or
    (None, final status) as soon as the workflow finishes first.

    DBOS's wait alone would not end when the workflow does; the hub's finish watch reads the
    status of every waited-on workflow in one query per interval, not one per request.
    """
    async with hub.finishes.watch(stored) as finished:
        read = asyncio.ensure_future(
            within_db_timeout(
                DBOS.get_event_async(stored, event_key, timeout_seconds=timeout),
                extra_seconds=timeout,
            )
        )
        try:
            await asyncio.wait({read, finished}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not read.done():
                read.cancel()  # DBOS's wait is asynchronous: cancelling it frees its waiter
                await asyncio.gather(read, return_exceptions=True)
        if not read.cancelled():
            return read.result(), None
        return None, finished.result()
