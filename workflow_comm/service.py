"""Workflow operations the routes share: start under an ID, look one up, describe it."""

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, SetWorkflowID, WorkflowStatus
from dbos import error as dbos_error
from fastapi import HTTPException

from workflow_comm.auth import stored_id
from workflow_comm.errors import within_db_timeout
from workflow_comm.metrics import WORKFLOWS_STARTED
from workflow_comm.models import WorkflowPublic
from workflow_comm.names import WorkflowKind
from workflow_comm.workflows import KIND_BY_FUNCTION


async def find_status(workflow_id: str) -> WorkflowStatus | None:
    # IDs here are the client's; stored_id adds the caller's tenant prefix, if any (auth.py).
    return await within_db_timeout(DBOS.get_workflow_status_async(stored_id(workflow_id)))


async def require_status(workflow_id: str) -> WorkflowStatus:
    """The workflow's status, or a 404 that says the workflow does not exist."""
    status = await find_status(workflow_id)
    if status is None:
        raise HTTPException(404, f"Workflow '{workflow_id}' does not exist.")
    return status


@dataclass(frozen=True)
class Started:
    """What a start did: whether it created the workflow, and the arguments it runs with."""

    workflow_id: str
    kind: WorkflowKind
    created: bool
    args: list[Any]

    def answer(self, started_message: str) -> dict[str, Any]:
        """The fields of every start's answer (models.StartedWorkflow)."""
        wf = self.workflow_id
        return {
            "workflow_id": wf,
            "kind": self.kind,
            "created": self.created,
            "message": (
                started_message
                if self.created
                else f"Workflow {wf} already exists; returning it unchanged"
            ),
            "status_endpoint": f"/workflows/{wf}",
        }


async def start_once(
    kind: WorkflowKind,
    workflow: Callable[..., Coroutine[Any, Any, Any]],
    workflow_id: str,
    *args: Any,
) -> Started:
    """Start `workflow` under `workflow_id` (with `args`), or find the one started before.

    created is False if one of the same kind already has the ID; a repeat's arguments are
    ignored, as the existing workflow goes on as it was started, so its own are returned.
    A workflow of another kind with that ID is a 409.
    """
    try:
        with SetWorkflowID(stored_id(workflow_id), workflow_id_reuse_policy="reject"):
            # Shielded: a start cut off by the timeout would leave its workflow recorded but
            # never run. It completes; the client got a 503, retries, and finds it running.
            await within_db_timeout(asyncio.shield(DBOS.start_workflow_async(workflow, *args)))
        WORKFLOWS_STARTED.labels(kind).inc()
        return Started(workflow_id, kind, True, list(args))
    except dbos_error.DBOSWorkflowIDInUseError:
        existing = await require_status(workflow_id)
        existing_kind = KIND_BY_FUNCTION.get(existing.name)
        if existing_kind != kind:
            raise HTTPException(
                409,
                f"Workflow '{workflow_id}' already exists as "
                f"{with_article(existing_kind or existing.name)} workflow; choose another ID "
                f"to start {with_article(kind)} workflow.",
            ) from None
        runs_with = list(existing.input["args"]) if existing.input else list(args)
        return Started(workflow_id, kind, False, runs_with)


def with_article(word: str) -> str:
    """ "an events", "a messaging": the indefinite article a word takes, then the word."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def describe(status: WorkflowStatus, workflow_id: str) -> WorkflowPublic:
    """The workflow as clients see it, under `workflow_id`: the ID its reader knows it by."""
    error = status.error
    return WorkflowPublic(
        workflow_id=workflow_id,
        kind=KIND_BY_FUNCTION.get(status.name),
        status=status.status,
        name=status.name,
        created_at=status.created_at,
        updated_at=status.updated_at,
        completed_at=status.completed_at,
        executor_id=status.executor_id,
        application_version=status.app_version,
        result=status.output,
        error=None if error is None else f"{type(error).__name__}: {error}",
    )


async def read_page(
    workflow_id: str, key: str, offset: int, limit: int
) -> tuple[list[Any], bool, bool]:
    """Values from `offset` written so far, at most `limit`: (values, has_more, closed).

    timeout_seconds=0 makes DBOS yield what is there and then either end (the stream is
    closed or its workflow finished) or raise DBOSStreamTimeoutError (still open).
    """
    values: list[Any] = []
    reader = DBOS.read_stream_async(stored_id(workflow_id), key, offset=offset, timeout_seconds=0)
    try:
        async for value in reader:
            if len(values) == limit:
                return values, True, False  # one more exists: this page is full
            values.append(value)
        return values, False, True
    except dbos_error.DBOSStreamTimeoutError:
        return values, False, False
    finally:
        await reader.aclose()
