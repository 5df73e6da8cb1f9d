"""How failures become JSON answers: 404/409 from DBOS errors, 503 when the database is away."""

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

import psycopg
import sqlalchemy as sa
from dbos import error as dbos_error
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from workflow_comm.settings import get_settings

logger = logging.getLogger("workflow_comm")
T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The system database did not answer in time; the request can be retried."""


async def within_db_timeout(call: Awaitable[T], extra_seconds: float = 0.0) -> T:
    """Await a DBOS call, answering 503 if the database keeps it waiting too long.

    DBOS retries a lost database connection forever; without this bound a request would
    hang for the whole outage. `extra_seconds` adds the time a call is meant to wait.
    """
    timeout = get_settings().db_timeout_sec + extra_seconds
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError as exc:
        raise DatabaseUnavailable(f"no answer within {timeout:.1f}s") from exc


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.warning(
            "database unavailable during %s %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        return _json(503, "The database is unavailable; retry shortly.", {"Retry-After": "2"})

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return _json(404, "Workflow does not exist.")

    async def conflict(request: Request, exc: Exception) -> JSONResponse:
        return _json(409, "The workflow ID is used by a different kind of workflow.")

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its trace for the operator; the client never sees internals.
        logger.exception("unhandled error during %s %s", request.method, request.url.path)
        return _json(500, "Internal server error.")

    for db_error in (
        DatabaseUnavailable,
        sa.exc.OperationalError,
        sa.exc.InterfaceError,
        sa.exc.TimeoutError,
        psycopg.OperationalError,
    ):
        app.add_exception_handler(db_error, unavailable)
    app.add_exception_handler(dbos_error.DBOSNonExistentWorkflowError, not_found)
    app.add_exception_handler(dbos_error.DBOSConflictingWorkflowError, conflict)
    app.add_exception_handler(dbos_error.DBOSWorkflowIDInUseError, conflict)
    app.add_exception_handler(Exception, internal)
