"""Workflow status and control: see the outcome of any workflow, list, cancel, resume."""

from dbos import DBOS, WorkflowStatus
from fastapi import APIRouter, HTTPException, Request

from workflow_comm import names, service
from workflow_comm.auth import (
    public_id,
    stored_id,
    tenant_prefix,
)
from workflow_comm.errors import READ_ONLY_KEY, error_responses, within_db_timeout
from workflow_comm.metrics import WORKFLOWS_FINISHED
from workflow_comm.models import (
    EventKeysPublic,
    StreamKeyPublic,
    StreamKeysPublic,
    WorkflowAction,
    WorkflowPublic,
    WorkflowsPublic,
    WorkflowStatusName,
)
from workflow_comm.names import WorkflowKind
from workflow_comm.params import AppName, ListLimit, WorkflowId
from workflow_comm.service import (
    application_of,
    describe,
    direct_reads_lifespan,
    finished,
    list_statuses,
    read_events,
    require_status,
    stream_keys,
)
from workflow_comm.settings import SettingsDep
from workflow_comm.takeover import LivenessUnknown, Takeover
from workflow_comm.workflows import FUNCTION_BY_KIND, KIND_BY_FUNCTION

# Authorization, logging and the common error answers come where the router is included (app.py).
# Its lifespan opens the direct reads every workflow router uses (service.py).
router = APIRouter(prefix="/workflows", tags=["workflows"], lifespan=direct_reads_lifespan)

# Resumed whatever their executor. A PENDING workflow is resumed only if its executor is gone:
# resuming one a live process runs would take it from that process mid-run.
RESUMABLE = frozenset({"CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})
RESUME_APPLIES_TO = (
    "resume applies to a cancelled workflow, or a pending one whose executor is gone."
)


@router.get("")
async def list_workflows(
    status: WorkflowStatusName | None = None,
    kind: WorkflowKind | None = None,
    limit: ListLimit = names.WORKFLOW_LIST_DEFAULT,
    app: AppName = None,
) -> WorkflowsPublic:
    """Recent workflows of the served applications, newest first, optionally filtered by
    status, kind and application."""
    found = await list_statuses(
        status=status,
        name=FUNCTION_BY_KIND[kind] if kind else None,
        id_prefix=tenant_prefix(),  # a tenant's key lists its own only
        limit=limit,
        app=app,
    )
    data = [describe(s, public_id(s.workflow_id)) for s in found]
    return WorkflowsPublic(data=data, count=len(data))


@router.get("/{workflow_id}")
async def get_workflow(workflow_id: WorkflowId) -> WorkflowPublic:
    """Status, kind, times, and the result or error once finished."""
    return describe(await require_status(workflow_id), workflow_id)


@router.get("/{workflow_id}/event-keys")
async def list_event_keys(workflow_id: WorkflowId) -> EventKeysPublic:
    """The keys of every event the workflow has set so far (read them with /all)."""
    keys = sorted(await read_events(await require_status(workflow_id)))
    return EventKeysPublic(workflow_id=workflow_id, data=keys, count=len(keys))


@router.get("/{workflow_id}/stream-keys")
async def list_stream_keys(workflow_id: WorkflowId) -> StreamKeysPublic:
    """Every stream the workflow has written to so far: its key, length, and whether it ended."""
    found = await stream_keys(await require_status(workflow_id))
    data = [StreamKeyPublic(key=k, length=n, closed=closed) for k, n, closed in found]
    return StreamKeysPublic(workflow_id=workflow_id, data=data, count=len(data))


@router.post(
    "/{workflow_id}/cancel",
    responses=error_responses({403: READ_ONLY_KEY, 409: "Already finished"}),
)
async def cancel_workflow(workflow_id: WorkflowId) -> WorkflowAction:
    """Cancel a workflow that has not finished; it stops at its next step."""
    status = await require_status(workflow_id)
    if status.status in names.TERMINAL_STATUSES:
        raise HTTPException(
            409, f"Workflow '{workflow_id}' already finished with status {status.status}."
        )
    await within_db_timeout(DBOS.cancel_workflow_async(stored_id(workflow_id)))
    finished.forget(stored_id(workflow_id))  # never kept (not finished), but to be sure
    if kind := KIND_BY_FUNCTION.get(status.name):
        WORKFLOWS_FINISHED.labels(kind, "CANCELLED").inc()
    return WorkflowAction(
        workflow_id=workflow_id, message=f"Workflow {workflow_id} cancelled", status="CANCELLED"
    )


@router.post(
    "/{workflow_id}/resume",
    responses=error_responses(
        {403: READ_ONLY_KEY, 409: "Not resumable: finished, or PENDING on a live executor"}
    ),
)
async def resume_workflow(
    workflow_id: WorkflowId, request: Request, settings: SettingsDep
) -> WorkflowAction:
    """Resume a cancelled workflow, or hand over a PENDING one whose process is gone.

    A PENDING workflow whose executor is alive (this server or another) is a 409. On Postgres
    "alive" means the executor's lock is held (workflow_comm/takeover.py). On SQLite, one
    process, only this server's own executor ID is alive.
    """
    status = await require_status(workflow_id)
    if status.status == "PENDING":
        owner = application_of(status)
        if owner is not None and owner != service.served.own:
            # No lock of ours tells whether another application's executor is alive.
            raise _running_on(
                workflow_id,
                f"executor '{status.executor_id}' of application '{owner}', which this "
                "server cannot tell alive or gone (resume it from its own application)",
            )
        takeover: Takeover | None = getattr(request.app.state, "takeover", None)
        own = DBOS.executor_id  # the server's executor, or that of the app it is mounted in
        await within_db_timeout(
            _hand_over_pending(workflow_id, status, own, takeover, settings.is_sqlite)
        )
    elif status.status in RESUMABLE:
        await within_db_timeout(DBOS.resume_workflow_async(stored_id(workflow_id)))
    else:
        raise HTTPException(
            409, f"Workflow '{workflow_id}' is {status.status}: {RESUME_APPLIES_TO}"
        )
    finished.forget(stored_id(workflow_id))  # never kept (not finished), but to be sure
    resumed = await require_status(workflow_id)
    return WorkflowAction(
        workflow_id=workflow_id,
        message=f"Workflow {workflow_id} resumed",
        status=resumed.status,
    )


async def _hand_over_pending(
    workflow_id: str,
    status: WorkflowStatus,
    own_executor: str,
    takeover: Takeover | None,
    is_sqlite: bool,
) -> None:
    """Resume a PENDING workflow if its executor is gone; 409 if it is alive."""
    executor = status.executor_id or ""
    if executor == own_executor:
        raise _running_on(workflow_id, f"this server (executor '{executor}')")
    if takeover is None and is_sqlite:  # one process, this one: any other executor is gone
        await DBOS.resume_workflow_async(stored_id(workflow_id))
        return
    if takeover is None:  # mounted in an app of its own: no executor locks to ask
        raise _running_on(
            workflow_id, f"executor '{executor}', which this server cannot tell alive or gone"
        )
    try:
        async with takeover.hold_if_gone(executor) as gone:
            if not gone:
                raise _running_on(
                    workflow_id, f"live executor '{executor}' (it holds its executor lock)"
                )
            # Under the lock nobody else hands this executor's workflows over; look again
            # in case one did between the first look and the lock.
            now = await require_status(workflow_id)
            if now.status != "PENDING" or (now.executor_id or "") != executor:
                raise HTTPException(
                    409,
                    f"Workflow '{workflow_id}' changed while being resumed: it is now "
                    f"{now.status} on executor '{now.executor_id}'. Look again before resuming.",
                )
            await DBOS.resume_workflow_async(stored_id(workflow_id))
    except LivenessUnknown as exc:
        raise HTTPException(
            503,
            f"Cannot tell yet whether executor '{executor}' of workflow '{workflow_id}' is "
            f"alive ({exc}); retry in a few seconds.",
            headers={"Retry-After": "2"},
        ) from None


def _running_on(workflow_id: str, where: str) -> HTTPException:
    return HTTPException(
        409, f"Workflow '{workflow_id}' is PENDING, running on {where}; {RESUME_APPLIES_TO}"
    )
