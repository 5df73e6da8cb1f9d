"""The errors the clients raise, and how an HTTP answer or a transport failure maps to them."""

from typing import Any

import httpx


class WorkflowClientError(Exception):
    """Base of every error this client raises.

    `status_code` is the HTTP status (None when no answer came) and `detail` the server's
    `detail` field: a string, or for a 422 the list of field errors.
    """

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class BadRequest(WorkflowClientError):
    """The server refused the request as malformed (400, or 422 below)."""


class ValidationFailed(BadRequest):
    """422: a path, query, header or body value is out of bounds; `detail` lists the fields."""


class Unauthorized(WorkflowClientError):
    """401: the server requires an API key (pass `api_key=`), and none or an unknown one came."""


class Forbidden(WorkflowClientError):
    """403: the API key may only read; starting, sending, cancelling and resuming need write."""


class NotFound(WorkflowClientError):
    """404: no such workflow, or the event is not set (the detail says which)."""


class Conflict(WorkflowClientError):
    """409: the ID belongs to another kind of workflow, or the action does not apply now."""


class PayloadTooLarge(WorkflowClientError):
    """413: the message body is over the server's size limit."""


class TooManyRequests(WorkflowClientError):
    """429: this client already has as many waiting requests open as the server allows."""


class ServiceUnavailable(WorkflowClientError):
    """503: the database does not answer, or the server is at its live-connection limit."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        detail: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code, detail)
        self.retry_after = retry_after


class ServerError(WorkflowClientError):
    """Any other 5xx, or an answer this client cannot read."""


class ClientTimeout(WorkflowClientError, TimeoutError):
    """A wait ran out on the client side: an HTTP timeout, or a polling deadline."""


class ConnectionFailed(WorkflowClientError, ConnectionError):
    """The server could not be reached, or the connection broke mid-request."""


class StreamDisconnected(ConnectionFailed):
    """A live stream kept failing to reconnect; `detail` holds the last cause."""


class NoReply(ClientTimeout):
    """504: the workflow did not reply to a request in time (it stays in its mailbox; a retry
    with the same idempotency key waits for the same reply)."""


_ERRORS_BY_STATUS: dict[int, type[WorkflowClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: TooManyRequests,
    503: ServiceUnavailable,
    504: NoReply,
}


def _describe_detail(detail: Any) -> str:
    """One line from a `detail`: the text, or `loc: msg` per field error of a 422."""
    if isinstance(detail, list):
        parts = []
        for problem in detail:
            if isinstance(problem, dict):
                where = ".".join(str(p) for p in problem.get("loc", ()))
                parts.append(f"{where}: {problem.get('msg', problem)}")
            else:
                parts.append(str(problem))
        return "; ".join(parts)
    return str(detail)


def error_from_response(response: httpx.Response) -> WorkflowClientError:
    """The `WorkflowClientError` for an error answer; its body must have been read."""
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text
    status = response.status_code
    cls = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else WorkflowClientError)
    request = response.request
    message = f"{request.method} {request.url.path} -> {status}: {_describe_detail(detail)}"
    if cls is ServiceUnavailable:
        retry_after = response.headers.get("Retry-After")
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return ServiceUnavailable(message, status, detail, retry_after=seconds)
    return cls(message, status, detail)


def transport_error(exc: httpx.TransportError, what: str) -> WorkflowClientError:
    """ClientTimeout for a timeout, ConnectionFailed for any other transport failure."""
    if isinstance(exc, httpx.TimeoutException):
        return ClientTimeout(f"{what}: timed out ({type(exc).__name__})")
    return ConnectionFailed(f"{what}: {type(exc).__name__}: {exc}")
