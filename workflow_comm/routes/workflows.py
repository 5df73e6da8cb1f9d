"""Workflow status and control: see the outcome of any workflow, list, cancel, resume."""

from dbos import DBOS
from fastapi import APIRouter, Depends, HTTPException

from workflow_comm import keys
from workflow_comm.auth import (
    AUTH_RESPONSES,
    WRITE_RESPONSES,
    authorize,
    stored_id,
    tenant_prefix,
)
from workflow_comm.errors import within_db_timeout
from workflow_comm.keys import WorkflowKind
from workflow_comm.logs import bind_workflow_id
from workflow_comm.metrics import WORKFLOWS_FINISHED
from workflow_comm.models import (
    ErrorPublic,
    WorkflowAction,
    WorkflowPublic,
    WorkflowsPublic,
    WorkflowStatusName,
)
from workflow_comm.params import ListLimit, WorkflowId
from workflow_comm.service import describe, require_status
from workflow_comm.settings import get_settings
from workflow_comm.workflows import FUNCTION_BY_KIND, KIND_BY_FUNCTION

router = APIRouter(
    prefix="/workflows",
    tags=["workflows"],
    dependencies=[Depends(bind_workflow_id), Depends(authorize)],
    responses={
        **AUTH_RESPONSES,
        404: {"model": ErrorPublic, "description": "Unknown workflow"},
        422: {"model": ErrorPublic, "description": "A parameter is out of bounds"},
        503: {"model": ErrorPublic, "description": "The database is unavailable"},
    },
)

# A PENDING workflow of a live process must not be resumed: it would run twice at once.
RESUMABLE = frozenset({"CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})


@router.get("")
async def list_workflows(
    status: WorkflowStatusName | None = None,
    kind: WorkflowKind | None = None,
    limit: ListLimit = keys.WORKFLOW_LIST_DEFAULT,
) -> WorkflowsPublic:
    """Recent workflows, newest first, optionally filtered by status and kind."""
    found = await within_db_timeout(
        DBOS.list_workflows_async(
            status=status,
            name=FUNCTION_BY_KIND[kind] if kind else None,
            limit=limit,
            sort_desc=True,
            load_input=False,
            workflow_id_prefix=tenant_prefix(),  # a tenant's key lists its own only
        )
    )
    data = [describe(s) for s in found]
    return WorkflowsPublic(data=data, count=len(data))


@router.get("/{workflow_id}")
async def get_workflow(workflow_id: WorkflowId) -> WorkflowPublic:
    """Status, kind, times, and the result or error once finished."""
    return describe(await require_status(workflow_id))


@router.post(
    "/{workflow_id}/cancel",
    responses={**WRITE_RESPONSES, 409: {"model": ErrorPublic, "description": "Already finished"}},
)
async def cancel_workflow(workflow_id: WorkflowId) -> WorkflowAction:
    """Cancel a workflow that has not finished; it stops at its next step."""
    status = await require_status(workflow_id)
    if status.status in keys.TERMINAL_STATUSES:
        raise HTTPException(
            409, f"Workflow '{workflow_id}' already finished with status {status.status}."
        )
    await within_db_timeout(DBOS.cancel_workflow_async(stored_id(workflow_id)))
    if kind := KIND_BY_FUNCTION.get(status.name):
        WORKFLOWS_FINISHED.labels(kind, "CANCELLED").inc()
    return WorkflowAction(
        workflow_id=workflow_id, message=f"Workflow {workflow_id} cancelled", status="CANCELLED"
    )


@router.post(
    "/{workflow_id}/resume",
    responses={
        **WRITE_RESPONSES,
        409: {"model": ErrorPublic, "description": "Not in a resumable state"},
    },
)
async def resume_workflow(workflow_id: WorkflowId) -> WorkflowAction:
    """Resume a cancelled workflow, or hand over a PENDING one whose process is gone."""
    status = await require_status(workflow_id)
    own = status.executor_id == get_settings().resolved_executor_id
    orphaned = status.status == "PENDING" and not own
    if status.status not in RESUMABLE and not orphaned:
        raise HTTPException(
            409,
            f"Workflow '{workflow_id}' is {status.status}: only a cancelled workflow, or a "
            "pending one whose executor is gone, can be resumed.",
        )
    await within_db_timeout(DBOS.resume_workflow_async(stored_id(workflow_id)))
    resumed = await require_status(workflow_id)
    return WorkflowAction(
        workflow_id=workflow_id,
        message=f"Workflow {workflow_id} resumed",
        status=resumed.status,
    )
