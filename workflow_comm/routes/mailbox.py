"""The mailbox: every message sent to a workflow, pending or consumed, as DBOS keeps it."""

from fastapi import APIRouter

from workflow_comm import names
from workflow_comm.auth import stored_id
from workflow_comm.errors import within_db_timeout
from workflow_comm.models_mailbox import MessagePublic, MessagesPublic
from workflow_comm.names import MailboxState
from workflow_comm.params import MailboxLimit, PageOffset, TopicFilter, WorkflowId
from workflow_comm.service import direct_reads, require_status

# Authorization, logging and the common error answers come where the router is included (app.py).
router = APIRouter(tags=["messaging"])

CONSUMED: dict[MailboxState, bool | None] = {"pending": False, "consumed": True, "all": None}


@router.get("/workflows/{workflow_id}/messages")
async def list_messages(
    workflow_id: WorkflowId,
    topic: TopicFilter = None,
    state: MailboxState = "all",
    limit: MailboxLimit = names.MAILBOX_PAGE_DEFAULT,
    offset: PageOffset = 0,
) -> MessagesPublic:
    """Messages sent to the workflow, oldest first: pending (not yet received) or consumed."""
    await require_status(workflow_id)  # another tenant's workflow is unknown: 404
    found = await within_db_timeout(
        direct_reads().messages(
            stored_id(workflow_id),
            topic=topic,
            consumed=CONSUMED[state],
            limit=limit + 1,  # one more tells whether there is more
            offset=offset,
        )
    )
    data = [
        MessagePublic(
            # A keyed message's ID names the workflow: as this caller knows it.
            message_id=m.message_id
            if m.idempotency_key is None
            else f"{m.idempotency_key}::{workflow_id}",
            topic=m.topic,
            payload=m.payload,
            sent_at=m.sent_at,
            consumed=m.consumed,
            consumed_at=m.consumed_at,
            consumed_by_step=m.consumed_by,
            idempotency_key=m.idempotency_key,
        )
        for m in found[:limit]
    ]
    return MessagesPublic(
        workflow_id=workflow_id,
        data=data,
        count=len(data),
        offset=offset,
        has_more=len(found) > limit,
    )
