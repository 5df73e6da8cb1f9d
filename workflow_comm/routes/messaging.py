"""Messaging: clients send messages on a topic; the workflow waits for them with a timeout."""

from typing import Annotated, Any

from dbos import DBOS
from fastapi import APIRouter, Body, Depends

from workflow_comm import keys
from workflow_comm.auth import AUTH_RESPONSES, WRITE_RESPONSES, authorize, stored_id
from workflow_comm.errors import within_db_timeout
from workflow_comm.logs import bind_workflow_id
from workflow_comm.metrics import MESSAGES_SENT
from workflow_comm.models import ErrorPublic, MessageSent, MessagingWorkflowStarted
from workflow_comm.params import (
    ApprovalTimeout,
    IdempotencyKey,
    NSteps,
    StepSeconds,
    Topic,
    WorkflowId,
)
from workflow_comm.service import require_status, start_once
from workflow_comm.workflows import workflow_with_messaging

router = APIRouter(
    tags=["messaging"],
    dependencies=[Depends(bind_workflow_id), Depends(authorize)],
    responses={
        **AUTH_RESPONSES,
        **WRITE_RESPONSES,
        400: {"model": ErrorPublic, "description": "The body is not JSON the parser can read"},
        404: {"model": ErrorPublic, "description": "Unknown workflow"},
        413: {"model": ErrorPublic, "description": "Message body over the size limit"},
        422: {"model": ErrorPublic, "description": "A parameter or the body is invalid"},
        503: {"model": ErrorPublic, "description": "The database is unavailable"},
    },
)


@router.post(
    "/start-workflow-messaging/{workflow_id}/{n_steps}",
    responses={409: {"model": ErrorPublic, "description": "ID used by another kind"}},
)
async def start_workflow_messaging(
    workflow_id: WorkflowId,
    n_steps: NSteps,
    step_seconds: StepSeconds = keys.STEP_SECONDS_DEFAULT,
    approval_timeout: ApprovalTimeout = keys.APPROVAL_TIMEOUT_DEFAULT,
) -> MessagingWorkflowStarted:
    """Start a workflow that waits for an approval message before running its steps."""
    created, (_, _, approval_timeout) = await start_once(
        "messaging", workflow_with_messaging, workflow_id, n_steps, step_seconds, approval_timeout
    )
    return MessagingWorkflowStarted(
        workflow_id=workflow_id,
        kind="messaging",
        created=created,
        message=(
            f"Started workflow {workflow_id}; it is waiting for approval"
            if created
            else f"Workflow {workflow_id} already exists; returning it unchanged"
        ),
        status_endpoint=f"/workflows/{workflow_id}",
        send_approval=f"/send-message/{workflow_id}",
        topic=keys.TOPIC_NOTIFICATION,
        approval_timeout=approval_timeout,
        note=(
            f'POST {{"approved": true}} to /send-message/{workflow_id} within '
            f"{approval_timeout:g}s to run the steps; anything else rejects. Watch "
            f"/workflow-events/{workflow_id}/status to see the workflow react."
        ),
    )


@router.post("/send-message/{workflow_id}")
async def send_message(
    workflow_id: WorkflowId,
    payload: Annotated[
        dict[str, Any],
        Body(description="Any JSON object", examples=[{"approved": True, "message": "LGTM"}]),
    ],
    topic: Topic = keys.TOPIC_NOTIFICATION,
    idempotency_key: IdempotencyKey = None,
) -> MessageSent:
    """Send a JSON object to the workflow. It waits in the workflow's mailbox until received."""
    await require_status(workflow_id)
    await within_db_timeout(
        DBOS.send_async(stored_id(workflow_id), payload, topic, idempotency_key=idempotency_key)
    )
    MESSAGES_SENT.labels("http").inc()
    return MessageSent(
        workflow_id=workflow_id,
        message=f"Message sent to workflow {workflow_id} on topic '{topic}'",
        payload=payload,
        topic=topic,
        idempotency_key=idempotency_key,
    )
