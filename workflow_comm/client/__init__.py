"""Python clients for the workflow communication server.

- `WorkflowClient` (original.py): the original project's client, call for call: plain dicts
  and lists, progress printed. `from client_examples import WorkflowClient` gives this one.
- `TypedWorkflowClient` and `AsyncWorkflowClient` (typed.py): typed answers (pydantic models),
  live push over server-sent events with resume, an error class per failure, asyncio.
- flows.py: what both typed clients do, written once without I/O: every request, and every
  method that takes several (polling, paging, following a live feed with reconnects).
- errors.py: the `WorkflowClientError` hierarchy.

    with TypedWorkflowClient("http://localhost:8000") as client:
        client.start_workflow_with_streaming("demo-1", 3)
        for item in client.iter_stream("demo-1"):  # pushed as written, resumed on drops
            print(item.offset, item.value)

A server started with API keys (COMM_API_KEYS) needs one: `TypedWorkflowClient(url, api_key=key)`.
"""

from workflow_comm.client.errors import (
    BadRequest,
    ClientTimeout,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NoReply,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    StreamDisconnected,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
    WorkflowClientError,
    error_from_response,
)
from workflow_comm.client.flows import EventChange, StreamItem
from workflow_comm.client.original import WorkflowClient
from workflow_comm.client.typed import DEFAULT_BASE_URL, AsyncWorkflowClient, TypedWorkflowClient

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncWorkflowClient",
    "BadRequest",
    "ClientTimeout",
    "Conflict",
    "ConnectionFailed",
    "EventChange",
    "Forbidden",
    "NoReply",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "ServiceUnavailable",
    "StreamDisconnected",
    "StreamItem",
    "TooManyRequests",
    "TypedWorkflowClient",
    "Unauthorized",
    "ValidationFailed",
    "WorkflowClient",
    "WorkflowClientError",
    "error_from_response",
]
