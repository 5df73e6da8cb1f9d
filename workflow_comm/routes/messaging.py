"""Messaging: clients send messages on a topic; the workflow waits for them with a timeout."""

from typing import Annotated, Any

from dbos import DBOS
from dbos import error as dbos_error
from fastapi import APIRouter, Body

from workflow_comm import names
from workflow_comm.auth import stored_id
from workflow_comm.errors import (
    ID_TAKEN,
    READ_ONLY_KEY,
    error_responses,
    unknown_workflow,
    within_db_timeout,
)
from workflow_comm.metrics import MESSAGES_SENT
from workflow_comm.models import MessageSent, MessagingWorkflowStarted
from workflow_comm.params import (
    ApprovalTimeout,
    IdempotencyKey,
    NSteps,
    StepSeconds,
    Topic,
    WorkflowId,
)
from workflow_comm.service import require_served, start_once
from workflow_comm.workflows import workflow_with_messaging

# Authorization, logging and the common error answers come where the router is included (app.py).
router = APIRouter(tags=["messaging"], responses=error_responses({403: READ_ONLY_KEY}))
# The demo start route: included only with COMM_DEMO_WORKFLOWS (app.py), never when mounted.
start_router = APIRouter(tags=["messaging"], responses=error_responses({403: READ_ONLY_KEY}))


@start_router.post(
    "/start-workflow-messaging/{workflow_id}/{n_steps}",
    responses=error_responses({409: ID_TAKEN}),
)
async def start_workflow_messaging(
    workflow_id: WorkflowId,
    n_steps: NSteps,
    step_seconds: StepSeconds = names.STEP_SECONDS_DEFAULT,
    approval_timeout: ApprovalTimeout = names.APPROVAL_TIMEOUT_DEFAULT,
) -> MessagingWorkflowStarted:
    """Start a workflow that waits for an approval message before running its steps."""
    started = await start_once(
        "messaging", workflow_with_messaging, workflow_id, n_steps, step_seconds, approval_timeout
    )
    approval_timeout = started.args[2]  # an existing workflow's own
    return MessagingWorkflowStarted(
        **started.answer(f"Started workflow {workflow_id}; it is waiting for approval"),
        send_approval=f"/send-message/{workflow_id}",
        topic=names.TOPIC_NOTIFICATION,
        approval_timeout=approval_timeout,
        note=(
            f'POST {{"approved": true}} to /send-message/{workflow_id} within '
            f"{approval_timeout:g}s to run the steps; anything else rejects. Watch "
            f"/workflow-events/{workflow_id}/status to see the workflow react."
        ),
    )


@router.post(
    "/send-message/{workflow_id}",
    responses=error_responses(
        {
            400: "The body is not JSON the parser can read",
            413: "Message body over the size limit",
            422: "A parameter or the body is invalid",
        }
    ),
)
async def send_message(
    workflow_id: WorkflowId,
    payload: Annotated[
        dict[str, Any],
        Body(description="Any JSON object", examples=[{"approved": True, "message": "LGTM"}]),
    ],
    topic: Topic = names.TOPIC_NOTIFICATION,
    idempotency_key: IdempotencyKey = None,
) -> MessageSent:
    """Send a JSON object to the workflow. It waits in the workflow's mailbox until received."""
    # DBOS refuses a message to a workflow that does not exist (the database's foreign key),
    # and that is the same 404. Whether it is served is read only when not every application
    # is, and once per workflow (service.require_served).
    await require_served(workflow_id)
    try:
        await within_db_timeout(
            DBOS.send_async(stored_id(workflow_id), payload, topic, idempotency_key=idempotency_key)
        )
    except dbos_error.DBOSNonExistentWorkflowError:
        raise unknown_workflow(workflow_id) from None
    MESSAGES_SENT.labels("http").inc()
    return MessageSent(
        workflow_id=workflow_id,
        message=f"Message sent to workflow {workflow_id} on topic '{topic}'",
        payload=payload,
        topic=topic,
        idempotency_key=idempotency_key,
    )
