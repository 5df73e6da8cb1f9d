"""Request/reply in one call: send a request to a workflow and answer with its reply.

The pattern, which any workflow can follow: the request is a message on a topic (default
`request`) shaped {"correlation_id": c, "body": <the JSON body>}; the workflow recv's it and
sets its reply as the event `reply:<c>`, in the workflow body (exactly once). The reply is
then durable and readable by any process: the waiting request is woken by the live hub (one
shared reader per workflow, no polling per waiter). With an Idempotency-Key the correlation
ID is derived from the key and the message is sent with that key, so a repeat (after a
timeout, a lost connection or a server crash) sends nothing new and gets the same reply.
"""

import hashlib
import uuid
from typing import Annotated, Any

from dbos import DBOS
from dbos import error as dbos_error
from fastapi import APIRouter, Body, HTTPException, Request

from workflow_comm import names
from workflow_comm.auth import stored_id
from workflow_comm.errors import (
    ID_TAKEN,
    READ_ONLY_KEY,
    DatabaseUnavailable,
    error_responses,
    unknown_workflow,
    within_db_timeout,
)
from workflow_comm.limits import ClientWaits
from workflow_comm.live.hub import LiveHub
from workflow_comm.metrics import MESSAGES_SENT
from workflow_comm.models_mailbox import RequestReplied, ServiceWorkflowStarted
from workflow_comm.params import (
    IdempotencyKey,
    IdleTimeout,
    RequestTimeout,
    StepSeconds,
    Topic,
    WorkflowId,
)
from workflow_comm.service import read_events, require_status, start_once
from workflow_comm.workflows import workflow_with_service

# Authorization, logging and the common error answers come where the router is included (app.py).
router = APIRouter(tags=["request/reply"], responses=error_responses({403: READ_ONLY_KEY}))
# The demo start route: included only with COMM_DEMO_WORKFLOWS (app.py), never when mounted.
start_router = APIRouter(tags=["request/reply"], responses=error_responses({403: READ_ONLY_KEY}))

NO_REPLY_IN_TIME = "No reply within the timeout (the request stays in the mailbox)"
FINISHED_WITHOUT_REPLY = "The workflow finished without replying"


@start_router.post(
    "/start-workflow-service/{workflow_id}", responses=error_responses({409: ID_TAKEN})
)
async def start_workflow_service(
    workflow_id: WorkflowId,
    idle_timeout: IdleTimeout = names.SERVICE_IDLE_TIMEOUT_DEFAULT,
    step_seconds: StepSeconds = 0.0,
) -> ServiceWorkflowStarted:
    """Start a workflow that answers requests {"n": k} with F(k) until idle for `idle_timeout`."""
    started = await start_once(
        "service", workflow_with_service, workflow_id, idle_timeout, step_seconds
    )
    idle_timeout = started.args[0]  # an existing workflow's own
    endpoint = f"/workflows/{workflow_id}/request"
    return ServiceWorkflowStarted(
        **started.answer(f"Started service workflow {workflow_id}; it is waiting for requests"),
        request_endpoint=endpoint,
        topic=names.TOPIC_REQUEST,
        idle_timeout=idle_timeout,
        note=(
            f'POST {{"n": 10}} to {endpoint} for {{"n": 10, "fibonacci": 55}}. The workflow ends '
            f"after {idle_timeout:g}s without a request, or when cancelled."
        ),
    )


def correlation_for(idempotency_key: str | None) -> str:
    """A fresh correlation ID, or the one of a key: a repeat with the key finds its reply."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


@router.post(
    "/workflows/{workflow_id}/request",
    responses=error_responses(
        {
            400: "The body is not JSON the parser can read",
            409: FINISHED_WITHOUT_REPLY,
            413: "Request body over the size limit",
            429: "Too many waits from this client",
            504: NO_REPLY_IN_TIME,
        }
    ),
)
async def request_reply(
    request: Request,
    workflow_id: WorkflowId,
    payload: Annotated[
        dict[str, Any], Body(description="Any JSON object: the request", examples=[{"n": 10}])
    ],
    topic: Topic = names.TOPIC_REQUEST,
    timeout: RequestTimeout = names.REQUEST_TIMEOUT_DEFAULT,
    idempotency_key: IdempotencyKey = None,
) -> RequestReplied:
    """Send a request to the workflow and return its reply, waiting up to `timeout` seconds.

    504 if no reply came in time: the request stays in the workflow's mailbox, and a retry
    with the same Idempotency-Key waits for the same reply (the workflow handles it once).
    409 if the workflow has finished without replying.
    """
    status = await require_status(workflow_id)
    correlation = correlation_for(idempotency_key)
    stored = stored_id(workflow_id)
    key = names.reply_event(correlation)
    if status.status not in names.TERMINAL_STATUSES:
        envelope = {names.REQUEST_CORRELATION: correlation, names.REQUEST_BODY: payload}
        try:
            # With a key, DBOS drops a repeat (even one already consumed): sent once.
            await within_db_timeout(
                DBOS.send_async(stored, envelope, topic, idempotency_key=idempotency_key)
            )
        except dbos_error.DBOSNonExistentWorkflowError:
            raise unknown_workflow(workflow_id) from None
        MESSAGES_SENT.labels("http").inc()
    # A finished workflow may have replied before it ended (a repeat): look for the reply too.
    waits: ClientWaits = request.app.state.client_waits
    with waits.hold(request):
        hub: LiveHub = request.app.state.live_hub
        outcome = await hub.wait_for_event(stored, key, timeout, known=status)
    if outcome.event is not None:
        reply = outcome.event.value
        if not outcome.event.decoded:  # not stored as JSON the hub reads: DBOS's own read
            reply = (await read_events(await require_status(workflow_id))).get(key)
        return RequestReplied(
            workflow_id=workflow_id,
            correlation_id=correlation,
            topic=topic,
            reply=reply,
            idempotency_key=idempotency_key,
        )
    if outcome.final_status is not None:
        raise HTTPException(
            409,
            f"Workflow '{workflow_id}' finished ({outcome.final_status}) without replying to "
            f"request {correlation}.",
        )
    if hub.reads_failing:
        raise DatabaseUnavailable("the live reads failed while waiting for the reply")
    retry = (
        "Retry with the same Idempotency-Key to wait for this request's reply."
        if idempotency_key
        else "Send an Idempotency-Key to be able to wait for the same request's reply again."
    )
    raise HTTPException(
        504,
        f"No reply from workflow '{workflow_id}' to request {correlation} within {timeout:g}s; "
        f"the request stays in its mailbox. {retry}",
    )
