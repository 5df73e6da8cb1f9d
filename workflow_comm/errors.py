"""How failures become JSON answers: 404/409 from DBOS errors, 503 when the database is away,
400 for a body that cannot be parsed as JSON."""

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from dbos import error as dbos_error
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from workflow_comm.models import ErrorPublic

logger = logging.getLogger("workflow_comm")
T = TypeVar("T")
UNREADABLE_BODY = "The request body cannot be parsed as JSON: "

# What each error answer means, for the OpenAPI description (error_responses).
UNAUTHORIZED = "API keys are configured; none or a wrong one"
READ_ONLY_KEY = "The API key may only read"
UNKNOWN_WORKFLOW = "Unknown workflow"
ID_TAKEN = "ID used by another kind"
OUT_OF_BOUNDS = "A parameter is out of bounds"
NO_DATABASE = "The database is unavailable"

Responses = dict[int | str, dict[str, Any]]


def error_responses(descriptions: Mapping[int, str], *, sse: bool = False) -> Responses:
    """OpenAPI `responses` for error answers: status -> description, each body ErrorPublic.

    `sse=True` for a server-sent-event route, where FastAPI would file a model under
    text/event-stream: the JSON content is spelled out instead.
    """
    if not sse:
        return {code: {"model": ErrorPublic, "description": d} for code, d in descriptions.items()}
    schema = {"$ref": f"#/components/schemas/{ErrorPublic.__name__}"}
    content = {"application/json": {"schema": schema}}
    return {code: {"description": d, "content": content} for code, d in descriptions.items()}


class DatabaseUnavailable(Exception):
    """The system database did not answer in time; the request can be retried."""


# Seconds a request waits on a DBOS call before answering 503 (COMM_DB_TIMEOUT_SEC). One per
# process, like DBOS itself: set by the lifespan that launches DBOS (runtime.lifespan).
_db_timeout_sec = 10.0


def set_db_timeout(seconds: float) -> None:
    global _db_timeout_sec
    _db_timeout_sec = seconds


async def within_db_timeout(call: Awaitable[T], extra_seconds: float = 0.0) -> T:
    """Await a DBOS call, answering 503 if the database keeps it waiting too long.

    DBOS retries a lost database connection forever; without this bound a request would
    hang for the whole outage. `extra_seconds` adds the time a call is meant to wait.
    """
    timeout = _db_timeout_sec + extra_seconds
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError as exc:
        raise DatabaseUnavailable(f"no answer within {timeout:.1f}s") from exc


def unknown_workflow(workflow_id: str) -> HTTPException:
    """The 404 of a workflow the caller cannot see: an unknown ID, another tenant's, or one
    outside the caller's token, all in the same words."""
    return HTTPException(404, f"Workflow '{workflow_id}' does not exist.")


def _error_answer(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 with the list of field errors, except for a body that is not JSON at all.

    FastAPI answers a JSON syntax error with a 422 `json_invalid`, but a body that is not
    UTF-8 (or nested too deep) with a 400: both are one answer here, a 400 with a reason.
    """
    assert isinstance(exc, RequestValidationError)
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = err.get("ctx", {}).get("error", "invalid JSON")
            at = err["loc"][-1] if len(err.get("loc", ())) > 1 else None
            where = f" at character {at}" if isinstance(at, int) else ""
            return _error_answer(400, f"{UNREADABLE_BODY}{reason}{where}.")
    return await request_validation_exception_handler(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, but with a reason for an unparseable body.

    FastAPI raises its 400 "There was an error parsing the body" from the parser's own
    error: UnicodeDecodeError for a body that is not UTF-8, RecursionError for nesting
    deeper than the parser goes. The parser's words never reach the client.
    """
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        return _error_answer(400, f"{UNREADABLE_BODY}it is not UTF-8 text.")
    if exc.status_code == 400 and isinstance(cause, RecursionError):
        return _error_answer(400, f"{UNREADABLE_BODY}it is nested too deeply.")
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.warning(
            "database unavailable during %s %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        return _error_answer(
            503, "The database is unavailable; retry shortly.", {"Retry-After": "2"}
        )

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return _error_answer(404, "Workflow does not exist.")

    async def conflict(request: Request, exc: Exception) -> JSONResponse:
        return _error_answer(409, "The workflow ID is used by a different kind of workflow.")

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its trace for the operator; the client never sees internals.
        logger.exception("unhandled error during %s %s", request.method, request.url.path)
        return _error_answer(500, "Internal server error.")

    for db_error in (
        DatabaseUnavailable,
        sa.exc.OperationalError,
        sa.exc.InterfaceError,
        sa.exc.TimeoutError,
        psycopg.OperationalError,
    ):
        app.add_exception_handler(db_error, unavailable)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(dbos_error.DBOSNonExistentWorkflowError, not_found)
    app.add_exception_handler(dbos_error.DBOSConflictingWorkflowError, conflict)
    app.add_exception_handler(dbos_error.DBOSWorkflowIDInUseError, conflict)
    app.add_exception_handler(Exception, internal)
