"""Events: a workflow publishes key/values; clients read one key (waiting) or all of them."""

from fastapi import APIRouter, HTTPException, Request

from workflow_comm import names
from workflow_comm.auth import stored_id
from workflow_comm.errors import (
    ID_TAKEN,
    READ_ONLY_KEY,
    UNKNOWN_WORKFLOW,
    DatabaseUnavailable,
    error_responses,
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
# The demo start route: included only with COMM_DEMO_WORKFLOWS (app.py), never when mounted.
start_router = APIRouter(tags=["events"])


@start_router.post(
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
    with a 404, if the workflow finishes without setting the key. Waiting requests are served
    by the live hub: every request waiting on a workflow shares one reader, woken by the
    database, so a value set is read once however many wait for it.
    """
    hub: LiveHub = request.app.state.live_hub
    stored = stored_id(workflow_id)
    # A workflow others watch or wait on: its status as the hub last read it (one batched
    # read for all of them), not one read per waiter. A finish the hub has not read yet ends
    # the wait as soon as it does, as it would for a waiter already waiting.
    status = (hub.status_of(stored) if timeout > 0 else None) or await require_status(workflow_id)
    # DBOS would wait out the whole timeout on a finished workflow; it can set nothing more.
    final: str | None = status.status if status.status in names.TERMINAL_STATUSES else None
    if final is None and timeout > 0:
        waits: ClientWaits = request.app.state.client_waits
        with waits.hold(request):
            outcome = await hub.wait_for_event(stored, event_key, timeout, known=status)
        if outcome.event is not None and outcome.event.decoded:
            return EventPublic(
                workflow_id=workflow_id, event_key=event_key, value=outcome.event.value
            )
        final = outcome.final_status
        if outcome.event is None:
            if final is None and hub.reads_failing:
                # Not "not set": the database could not be read while it waited.
                raise DatabaseUnavailable("the live reads failed while waiting")
            raise _not_set(workflow_id, event_key, final, timeout)
        # Set, but stored in a format the live reader leaves to DBOS: read below.
    # Every event in one read (kept once the workflow has finished): the key's latest value,
    # and whether it is set at all (a value of null is set).
    events = await read_events(status)
    if event_key not in events:
        raise _not_set(workflow_id, event_key, final, timeout)
    return EventPublic(workflow_id=workflow_id, event_key=event_key, value=events[event_key])


def _not_set(workflow_id: str, event_key: str, final: str | None, timeout: float) -> HTTPException:
    why = (
        f"the workflow finished ({final}) without setting it"
        if final is not None
        else f"it was not set within {timeout:g}s; retry or raise ?timeout="
    )
    return HTTPException(404, f"Event '{event_key}' is not set on workflow '{workflow_id}': {why}.")
