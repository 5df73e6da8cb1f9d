"""A typed Python client for the workflow communication server, sync and async.

    with WorkflowClient("http://localhost:8000") as client:
        client.start_workflow_with_streaming("demo-1", 3)
        for item in client.iter_stream("demo-1"):  # server-sent events, resumed on drops
            print(item.offset, item.value)

`WorkflowClient` (httpx.Client) and `AsyncWorkflowClient` (httpx.AsyncClient) have the same
methods. Everything that is not I/O lives once, in `_ClientCore`: how each request is built, how
each response is parsed into the models of `workflow_comm.models`, how errors map to the
`WorkflowClientError` hierarchy, and what each server-sent event means. The two subclasses only
send requests, sleep and iterate, each in its own way.

A server started with API keys (COMM_API_KEYS) needs one: `WorkflowClient(url, api_key=key)`.
"""

import asyncio
import enum
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse
from pydantic import BaseModel

from workflow_comm.keys import STREAM_PROGRESS, TERMINAL_STATUSES, TOPIC_NOTIFICATION, WorkflowKind
from workflow_comm.models import (
    EventPublic,
    EventsPublic,
    EventsWorkflowStarted,
    HealthPublic,
    MessageSent,
    MessagingWorkflowStarted,
    StreamingWorkflowStarted,
    StreamPage,
    WorkflowAction,
    WorkflowPublic,
    WorkflowsPublic,
    WorkflowStatusName,
)

__all__ = [
    "AsyncWorkflowClient",
    "BadRequest",
    "ClientTimeout",
    "Conflict",
    "ConnectionFailed",
    "EventChange",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "ServiceUnavailable",
    "StreamDisconnected",
    "StreamItem",
    "Unauthorized",
    "ValidationFailed",
    "WorkflowClient",
    "WorkflowClientError",
]

logger = logging.getLogger("workflow_comm.client")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

DEFAULT_BASE_URL = "http://localhost:8000"
# A workflow in any other status will not change any more.
_Params = dict[str, str | int | float]
# Extra seconds a long-polling request gets on top of the wait it asks the server for.
_WAIT_MARGIN = 10.0


# ---------------------------------------------------------------------------------------------
# Errors


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


_ERRORS_BY_STATUS: dict[int, type[WorkflowClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    503: ServiceUnavailable,
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


def _transport_error(exc: httpx.TransportError, what: str) -> WorkflowClientError:
    if isinstance(exc, httpx.TimeoutException):
        return ClientTimeout(f"{what}: timed out ({type(exc).__name__})")
    return ConnectionFailed(f"{what}: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------
# What a request is, and what comes back


@dataclass(frozen=True)
class _Call(Generic[M]):
    """One request and the model its answer parses into. Built once, sent sync or async."""

    method: str
    path: str
    model: type[M]
    params: _Params = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds the server may legitimately hold the request (a long poll), beyond the usual.
    waits: float = 0.0
    # Error statuses whose body is still this model (GET /health answers 503 with a report).
    accept: frozenset[int] = frozenset()

    def parse(self, response: httpx.Response) -> M:
        if response.is_error and response.status_code not in self.accept:
            raise error_from_response(response)
        try:
            return self.model.model_validate(response.json())
        except ValueError as exc:
            raise ServerError(
                f"{self.method} {self.path}: unreadable answer ({exc})", response.status_code
            ) from exc


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One value of a workflow stream and its offset (0, 1, 2, ... in write order)."""

    offset: int
    value: Any


@dataclass(frozen=True, slots=True)
class EventChange:
    """A workflow event was set: its key, new value, and the per-workflow version number."""

    key: str
    value: Any
    version: int


class _Next(enum.Enum):
    CONTINUE = enum.auto()
    RECONNECT = enum.auto()
    DONE = enum.auto()


class _Feed(Generic[T]):
    """A server-sent-event endpoint: where to connect, how to resume, what each event means."""

    def __init__(self, path: str, params: _Params | None = None) -> None:
        self.path = path
        self.params: _Params = params or {}
        self.last_id: str | None = None

    def headers(self) -> dict[str, str]:
        # The standard EventSource resume: the server continues after this id.
        return {"Last-Event-ID": self.last_id} if self.last_id is not None else {}

    def on_event(self, sse: ServerSentEvent) -> tuple[T | None, _Next]:
        """Map one event to (item to yield or None, what to do next)."""
        if not sse.data:
            # No data (e.g. only a `retry:` field): per the SSE spec, nothing to dispatch.
            return None, _Next.CONTINUE
        if sse.event == "message":
            item = self.item(sse)
            if sse.id:
                self.last_id = sse.id
            return item, _Next.CONTINUE
        if sse.event == "closed":
            return self.closing(sse), _Next.DONE
        if sse.event in ("overflow", "shutdown"):
            logger.info("%s: server sent %r %s; reconnecting", self.path, sse.event, sse.data)
            self.resume_hint(sse)
            return None, _Next.RECONNECT
        return None, _Next.CONTINUE  # an event type this client does not know: skip it

    def item(self, sse: ServerSentEvent) -> T:
        raise NotImplementedError

    def closing(self, sse: ServerSentEvent) -> T | None:
        return None

    def resume_hint(self, sse: ServerSentEvent) -> None:
        """Adjust the resume position from an overflow/shutdown event (default: last id)."""


class _StreamFeed(_Feed[StreamItem]):
    def __init__(self, path: str, key: str, offset: int) -> None:
        super().__init__(path, {"key": key, "offset": offset})

    def item(self, sse: ServerSentEvent) -> StreamItem:
        offset = int(sse.id)
        self.params["offset"] = offset + 1
        return StreamItem(offset=offset, value=sse.json())

    def resume_hint(self, sse: ServerSentEvent) -> None:
        resume = int(json.loads(sse.data)["resume_offset"])
        self.params["offset"] = resume
        self.last_id = str(resume - 1) if resume > 0 else None


class _EventsFeed(_Feed[EventChange]):
    def item(self, sse: ServerSentEvent) -> EventChange:
        data = sse.json()
        return EventChange(key=data["key"], value=data["value"], version=int(data["version"]))


class _StatusFeed(_Feed[WorkflowPublic]):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.shown: WorkflowPublic | None = None

    def item(self, sse: ServerSentEvent) -> WorkflowPublic:
        return WorkflowPublic.model_validate(sse.json())

    def closing(self, sse: ServerSentEvent) -> WorkflowPublic | None:
        return self.item(sse)

    def on_event(self, sse: ServerSentEvent) -> tuple[WorkflowPublic | None, _Next]:
        item, next_ = super().on_event(sse)
        # A reconnect, and the final `closed`, repeat the status last shown: yield it once.
        if item is not None and item == self.shown:
            item = None
        if item is not None:
            self.shown = item
        return item, next_


@dataclass
class _Reconnects:
    """Bounded reconnection with exponential backoff; progress resets the count."""

    what: str
    max_retries: int
    backoff: float
    max_backoff: float
    failures: int = 0

    def progressed(self) -> None:
        self.failures = 0

    def next_delay(self, cause: BaseException | None) -> float:
        """Seconds to wait before reconnecting, or StreamDisconnected when retries are spent."""
        self.failures += 1
        reason = f"{type(cause).__name__}: {cause}" if cause else "the server ended the stream"
        if self.failures > self.max_retries:
            raise StreamDisconnected(
                f"{self.what}: gave up after {self.max_retries} reconnects; last: {reason}",
                getattr(cause, "status_code", None),
                reason,
            ) from cause
        delay = min(self.max_backoff, self.backoff * 2.0 ** (self.failures - 1))
        if isinstance(cause, ServiceUnavailable) and cause.retry_after:
            delay = max(delay, min(cause.retry_after, self.max_backoff))
        logger.info("%s: reconnect %d in %.2fs (%s)", self.what, self.failures, delay, reason)
        return delay


class _Deadline:
    """A polling deadline: how long to sleep next, or ClientTimeout once it has passed."""

    def __init__(self, what: str, timeout: float, interval: float) -> None:
        self.what = what
        self.timeout = timeout
        self.interval = interval
        self.end = time.monotonic() + timeout

    def next_sleep(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise ClientTimeout(f"{self.what}: not finished within {self.timeout:g}s")
        return min(self.interval, remaining)


def _wf(workflow_id: str) -> str:
    # Quoted whole, so a bad ID reaches the server as typed and gets its 422, not a wrong route.
    return quote(workflow_id, safe="")


def _message_headers(idempotency_key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}


def _headers(api_key: str | None, given: Any) -> httpx.Headers:
    """The client's default headers: the caller's own, plus the API key if there is one."""
    headers = httpx.Headers(given)
    if api_key:
        # httpx masks this header in reprs and logs; the live endpoints take it too.
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _merge_pages(first: StreamPage, pages: list[StreamPage]) -> StreamPage:
    values = [v for page in pages for v in page.stream_values]
    last = pages[-1]
    return StreamPage(
        workflow_id=first.workflow_id,
        stream_key=first.stream_key,
        stream_values=values,
        total_messages=len(values),
        offset=first.offset,
        next_offset=last.next_offset,
        has_more=last.has_more,
        closed=last.closed,
    )


# ---------------------------------------------------------------------------------------------
# Shared by both clients: request building and settings


class _ClientCore:
    """Request building, response parsing and live-stream settings for both clients."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        sse_read_timeout: float,
        max_retries: int,
        retry_backoff: float,
        max_backoff: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        # Longer than the server's heartbeat interval, so a quiet stream is not taken for dead.
        self._sse_timeout = httpx.Timeout(timeout, read=sse_read_timeout)

    def _timeout_for(self, call: _Call[Any]) -> float:
        return self.timeout + call.waits + (_WAIT_MARGIN if call.waits else 0.0)

    def _reconnects(self, what: str) -> _Reconnects:
        return _Reconnects(what, self.max_retries, self.retry_backoff, self.max_backoff)

    @staticmethod
    def _start_events(
        workflow_id: str, n_steps: int, step_seconds: float | None
    ) -> _Call[EventsWorkflowStarted]:
        params: _Params = {} if step_seconds is None else {"step_seconds": step_seconds}
        return _Call(
            "POST",
            f"/start-workflow-events/{_wf(workflow_id)}/{n_steps}",
            EventsWorkflowStarted,
            params,
        )

    @staticmethod
    def _get_event(workflow_id: str, key: str, timeout: float) -> _Call[EventPublic]:
        return _Call(
            "GET",
            f"/workflow-events/{_wf(workflow_id)}/{quote(key, safe='')}",
            EventPublic,
            {"timeout": timeout},
            waits=timeout,
        )

    @staticmethod
    def _get_all_events(workflow_id: str) -> _Call[EventsPublic]:
        return _Call("GET", f"/workflow-events/{_wf(workflow_id)}/all", EventsPublic)

    @staticmethod
    def _start_messaging(
        workflow_id: str,
        n_steps: int,
        step_seconds: float | None,
        approval_timeout: float | None,
    ) -> _Call[MessagingWorkflowStarted]:
        params: _Params = {}
        if step_seconds is not None:
            params["step_seconds"] = step_seconds
        if approval_timeout is not None:
            params["approval_timeout"] = approval_timeout
        return _Call(
            "POST",
            f"/start-workflow-messaging/{_wf(workflow_id)}/{n_steps}",
            MessagingWorkflowStarted,
            params,
        )

    @staticmethod
    def _send_message(
        workflow_id: str, payload: Mapping[str, Any], topic: str, idempotency_key: str | None
    ) -> _Call[MessageSent]:
        return _Call(
            "POST",
            f"/send-message/{_wf(workflow_id)}",
            MessageSent,
            {"topic": topic},
            body=dict(payload),
            headers=_message_headers(idempotency_key),
        )

    @staticmethod
    def _approval(approved: bool, message: str | None) -> dict[str, Any]:
        payload: dict[str, Any] = {"approved": approved}
        if message is not None:
            payload["message"] = message
        return payload

    @staticmethod
    def _start_streaming(
        workflow_id: str, n_steps: int, step_seconds: float | None
    ) -> _Call[StreamingWorkflowStarted]:
        params: _Params = {} if step_seconds is None else {"step_seconds": step_seconds}
        return _Call(
            "POST",
            f"/start-workflow-streaming/{_wf(workflow_id)}/{n_steps}",
            StreamingWorkflowStarted,
            params,
        )

    @staticmethod
    def _read_stream(
        workflow_id: str, offset: int, limit: int | None, key: str
    ) -> _Call[StreamPage]:
        params: _Params = {"offset": offset, "key": key}
        if limit is not None:
            params["limit"] = limit
        return _Call("GET", f"/workflow-stream/{_wf(workflow_id)}", StreamPage, params)

    @staticmethod
    def _get_workflow(workflow_id: str) -> _Call[WorkflowPublic]:
        return _Call("GET", f"/workflows/{_wf(workflow_id)}", WorkflowPublic)

    @staticmethod
    def _list_workflows(
        status: WorkflowStatusName | None, kind: WorkflowKind | None, limit: int | None
    ) -> _Call[WorkflowsPublic]:
        params: _Params = {}
        if status is not None:
            params["status"] = status
        if kind is not None:
            params["kind"] = kind
        if limit is not None:
            params["limit"] = limit
        return _Call("GET", "/workflows", WorkflowsPublic, params)

    @staticmethod
    def _action(workflow_id: str, action: str) -> _Call[WorkflowAction]:
        return _Call("POST", f"/workflows/{_wf(workflow_id)}/{action}", WorkflowAction)

    @staticmethod
    def _health() -> _Call[HealthPublic]:
        return _Call("GET", "/health", HealthPublic, accept=frozenset({503}))

    @staticmethod
    def _stream_feed(workflow_id: str, key: str, offset: int) -> _StreamFeed:
        return _StreamFeed(f"/workflow-stream/{_wf(workflow_id)}/live", key, offset)

    @staticmethod
    def _events_feed(workflow_id: str) -> _EventsFeed:
        return _EventsFeed(f"/workflow-events/{_wf(workflow_id)}/live")

    @staticmethod
    def _status_feed(workflow_id: str) -> _StatusFeed:
        return _StatusFeed(f"/workflows/{_wf(workflow_id)}/live")


# ---------------------------------------------------------------------------------------------
# The synchronous client


class WorkflowClient(_ClientCore):
    """Blocking client for the workflow communication server (one httpx.Client inside).

    Use it as a context manager, or call `close()`. Extra keyword arguments (headers,
    transport, event_hooks, ...) go to `httpx.Client`.

    `api_key` is sent as `Authorization: Bearer <key>` on every request, the live ones
    included, for a server started with COMM_API_KEYS. Without a valid key such a server
    answers 401 (`Unauthorized`); a read-only key that starts, sends, cancels or resumes gets
    403 (`Forbidden`). Neither is retried, not even by the live methods.

    Live methods (`iter_stream`, `watch_events`, `watch_status`) reconnect after a dropped
    connection up to `max_retries` times in a row, waiting `retry_backoff` seconds doubled per
    attempt (at most `max_backoff`), resuming with `Last-Event-ID`. `sse_read_timeout` is how
    long a live connection may stay silent before it counts as dropped.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        *,
        sse_read_timeout: float = 60.0,
        max_retries: int = 8,
        retry_backoff: float = 0.25,
        max_backoff: float = 5.0,
        api_key: str | None = None,
        **httpx_options: Any,
    ) -> None:
        super().__init__(
            base_url, timeout, sse_read_timeout, max_retries, retry_backoff, max_backoff
        )
        headers = _headers(api_key, httpx_options.pop("headers", None))
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers, **httpx_options
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, call: _Call[M]) -> M:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.body,
                headers=call.headers,
                timeout=self._timeout_for(call),
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc, f"{call.method} {call.path}") from exc
        return call.parse(response)

    # -- events ---------------------------------------------------------------------------

    def start_workflow_with_events(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> EventsWorkflowStarted:
        """Start an events workflow of `n_steps` steps (`created` is False if it existed)."""
        return self._send(self._start_events(workflow_id, n_steps, step_seconds))

    def get_workflow_event(self, workflow_id: str, key: str, timeout: float = 5) -> EventPublic:
        """The event's latest value; the server waits up to `timeout` s for it to be set.

        Raises NotFound if the workflow does not exist or the event is still not set.
        """
        return self._send(self._get_event(workflow_id, key, timeout))

    def get_all_workflow_events(self, workflow_id: str) -> EventsPublic:
        """Every event the workflow has set (latest value of each), without waiting."""
        return self._send(self._get_all_events(workflow_id))

    def poll_until_complete(
        self,
        workflow_id: str,
        timeout: float = 60.0,
        interval: float = 0.5,
        on_progress: Callable[[EventsPublic], None] | None = None,
    ) -> EventsPublic:
        """Poll until the workflow finishes; return its final events (`result` among them).

        `on_progress` is called with the events each time they changed. Raises ClientTimeout
        after `timeout` seconds. For push instead of polling, see `watch_events`.
        """
        deadline = _Deadline(f"workflow {workflow_id}", timeout, interval)
        seen: dict[str, Any] | None = None
        while True:
            # Status first: once it is final, the events read after it are final too.
            status = self.get_workflow(workflow_id)
            events = self.get_all_workflow_events(workflow_id)
            if on_progress is not None and events.events != seen:
                on_progress(events)
            seen = events.events
            if status.status in TERMINAL_STATUSES:
                return events
            time.sleep(deadline.next_sleep())

    # -- messaging ------------------------------------------------------------------------

    def start_workflow_with_messaging(
        self,
        workflow_id: str,
        n_steps: int,
        step_seconds: float | None = None,
        approval_timeout: float | None = None,
    ) -> MessagingWorkflowStarted:
        """Start a workflow that waits up to `approval_timeout` s for an approval message."""
        return self._send(
            self._start_messaging(workflow_id, n_steps, step_seconds, approval_timeout)
        )

    def send_approval(
        self,
        workflow_id: str,
        approved: bool = True,
        message: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageSent:
        """Send `{"approved": approved, "message": message}` on the notification topic."""
        payload = self._approval(approved, message)
        return self.send_custom_message(workflow_id, payload, idempotency_key=idempotency_key)

    def send_custom_message(
        self,
        workflow_id: str,
        payload: Mapping[str, Any],
        topic: str = TOPIC_NOTIFICATION,
        idempotency_key: str | None = None,
    ) -> MessageSent:
        """Send any JSON object on `topic`. A repeated `idempotency_key` is delivered once.

        Raises PayloadTooLarge over the server's size limit, NotFound for an unknown workflow.
        """
        return self._send(self._send_message(workflow_id, payload, topic, idempotency_key))

    # -- streaming ------------------------------------------------------------------------

    def start_workflow_with_streaming(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> StreamingWorkflowStarted:
        """Start a workflow that writes 3 + 2 * n_steps entries to `progress_stream`."""
        return self._send(self._start_streaming(workflow_id, n_steps, step_seconds))

    def read_stream(
        self,
        workflow_id: str,
        offset: int = 0,
        limit: int | None = None,
        key: str = STREAM_PROGRESS,
    ) -> StreamPage:
        """One page: the values written from `offset` so far (at most `limit`), at once."""
        return self._send(self._read_stream(workflow_id, offset, limit, key))

    def read_stream_all(
        self,
        workflow_id: str,
        offset: int = 0,
        page_size: int | None = None,
        key: str = STREAM_PROGRESS,
    ) -> StreamPage:
        """Every value written from `offset` so far, reading page after page, as one page."""
        first = self.read_stream(workflow_id, offset, page_size, key)
        pages = [first]
        while pages[-1].has_more:
            pages.append(self.read_stream(workflow_id, pages[-1].next_offset, page_size, key))
        return _merge_pages(first, pages)

    def stream_live_updates(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> Generator[Any, None, None]:
        """Each stream value as the workflow writes it (pushed over SSE), until it closes."""
        for item in self.iter_stream(workflow_id, key=key, offset=offset):
            yield item.value

    # -- live push (server-sent events) ---------------------------------------------------

    def iter_stream(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> Generator[StreamItem, None, None]:
        """Stream values from `offset` as they are written, until the stream is closed.

        Pushed over SSE. A dropped connection, or an `overflow`/`shutdown` from the server,
        is resumed where it stopped: no value is skipped or repeated.
        """
        return self._follow(self._stream_feed(workflow_id, key, offset))

    def watch_events(self, workflow_id: str) -> Generator[EventChange, None, None]:
        """Every event's current value, then each change, until the workflow has finished."""
        return self._follow(self._events_feed(workflow_id))

    def watch_status(self, workflow_id: str) -> Generator[WorkflowPublic, None, None]:
        """The workflow's status now and on each change; the last one carries its result."""
        return self._follow(self._status_feed(workflow_id))

    def _follow(self, feed: _Feed[T]) -> Generator[T, None, None]:
        retry = self._reconnects(feed.path)
        while True:
            cause: BaseException | None = None
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    feed.path,
                    params=feed.params,
                    headers=feed.headers(),
                    timeout=self._sse_timeout,
                ) as source:
                    if source.response.is_error:
                        source.response.read()
                        raise error_from_response(source.response)
                    for sse in source.iter_sse():
                        item, next_ = feed.on_event(sse)
                        if item is not None:
                            retry.progressed()
                            yield item
                        if next_ is _Next.DONE:
                            return
                        if next_ is _Next.RECONNECT:
                            break
            except (httpx.TransportError, ServiceUnavailable) as exc:
                cause = exc
            time.sleep(retry.next_delay(cause))

    # -- workflows ------------------------------------------------------------------------

    def get_workflow(self, workflow_id: str) -> WorkflowPublic:
        """Status, kind, timestamps, and the result or error once finished."""
        return self._send(self._get_workflow(workflow_id))

    def wait_for_result(
        self, workflow_id: str, timeout: float = 60.0, interval: float = 0.2
    ) -> WorkflowPublic:
        """Poll until the workflow has finished and return it (see `.status`, `.result`).

        Raises ClientTimeout after `timeout` seconds.
        """
        deadline = _Deadline(f"workflow {workflow_id}", timeout, interval)
        while (workflow := self.get_workflow(workflow_id)).status not in TERMINAL_STATUSES:
            time.sleep(deadline.next_sleep())
        return workflow

    def list_workflows(
        self,
        status: WorkflowStatusName | None = None,
        kind: WorkflowKind | None = None,
        limit: int | None = None,
    ) -> WorkflowsPublic:
        """Recent workflows, newest first, optionally filtered by status and kind."""
        return self._send(self._list_workflows(status, kind, limit))

    def cancel_workflow(self, workflow_id: str) -> WorkflowAction:
        """Cancel an unfinished workflow; raises Conflict if it already finished."""
        return self._send(self._action(workflow_id, "cancel"))

    def resume_workflow(self, workflow_id: str) -> WorkflowAction:
        """Resume a cancelled workflow; raises Conflict if it is not resumable."""
        return self._send(self._action(workflow_id, "resume"))

    def health(self) -> HealthPublic:
        """The server's health report; `status` is "degraded" when the database is away."""
        return self._send(self._health())


# ---------------------------------------------------------------------------------------------
# The asynchronous client


class AsyncWorkflowClient(_ClientCore):
    """The same API as `WorkflowClient` for asyncio: coroutines and async iterators.

    Use it as an async context manager, or call `aclose()`. `api_key` is sent as with
    `WorkflowClient`. Extra keyword arguments go to `httpx.AsyncClient`. Run many workflows at
    once with `asyncio.gather`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        *,
        sse_read_timeout: float = 60.0,
        max_retries: int = 8,
        retry_backoff: float = 0.25,
        max_backoff: float = 5.0,
        api_key: str | None = None,
        **httpx_options: Any,
    ) -> None:
        super().__init__(
            base_url, timeout, sse_read_timeout, max_retries, retry_backoff, max_backoff
        )
        headers = _headers(api_key, httpx_options.pop("headers", None))
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=headers, **httpx_options
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, call: _Call[M]) -> M:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.body,
                headers=call.headers,
                timeout=self._timeout_for(call),
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc, f"{call.method} {call.path}") from exc
        return call.parse(response)

    # -- events ---------------------------------------------------------------------------

    async def start_workflow_with_events(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> EventsWorkflowStarted:
        """Start an events workflow of `n_steps` steps (`created` is False if it existed)."""
        return await self._send(self._start_events(workflow_id, n_steps, step_seconds))

    async def get_workflow_event(
        self, workflow_id: str, key: str, timeout: float = 5
    ) -> EventPublic:
        """The event's latest value; the server waits up to `timeout` s for it to be set."""
        return await self._send(self._get_event(workflow_id, key, timeout))

    async def get_all_workflow_events(self, workflow_id: str) -> EventsPublic:
        """Every event the workflow has set (latest value of each), without waiting."""
        return await self._send(self._get_all_events(workflow_id))

    async def poll_until_complete(
        self,
        workflow_id: str,
        timeout: float = 60.0,
        interval: float = 0.5,
        on_progress: Callable[[EventsPublic], None] | None = None,
    ) -> EventsPublic:
        """Poll until the workflow finishes; return its final events (see the sync client)."""
        deadline = _Deadline(f"workflow {workflow_id}", timeout, interval)
        seen: dict[str, Any] | None = None
        while True:
            status = await self.get_workflow(workflow_id)
            events = await self.get_all_workflow_events(workflow_id)
            if on_progress is not None and events.events != seen:
                on_progress(events)
            seen = events.events
            if status.status in TERMINAL_STATUSES:
                return events
            await asyncio.sleep(deadline.next_sleep())

    # -- messaging ------------------------------------------------------------------------

    async def start_workflow_with_messaging(
        self,
        workflow_id: str,
        n_steps: int,
        step_seconds: float | None = None,
        approval_timeout: float | None = None,
    ) -> MessagingWorkflowStarted:
        """Start a workflow that waits up to `approval_timeout` s for an approval message."""
        return await self._send(
            self._start_messaging(workflow_id, n_steps, step_seconds, approval_timeout)
        )

    async def send_approval(
        self,
        workflow_id: str,
        approved: bool = True,
        message: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageSent:
        """Send `{"approved": approved, "message": message}` on the notification topic."""
        payload = self._approval(approved, message)
        return await self.send_custom_message(workflow_id, payload, idempotency_key=idempotency_key)

    async def send_custom_message(
        self,
        workflow_id: str,
        payload: Mapping[str, Any],
        topic: str = TOPIC_NOTIFICATION,
        idempotency_key: str | None = None,
    ) -> MessageSent:
        """Send any JSON object on `topic`. A repeated `idempotency_key` is delivered once."""
        return await self._send(self._send_message(workflow_id, payload, topic, idempotency_key))

    # -- streaming ------------------------------------------------------------------------

    async def start_workflow_with_streaming(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> StreamingWorkflowStarted:
        """Start a workflow that writes 3 + 2 * n_steps entries to `progress_stream`."""
        return await self._send(self._start_streaming(workflow_id, n_steps, step_seconds))

    async def read_stream(
        self,
        workflow_id: str,
        offset: int = 0,
        limit: int | None = None,
        key: str = STREAM_PROGRESS,
    ) -> StreamPage:
        """One page: the values written from `offset` so far (at most `limit`), at once."""
        return await self._send(self._read_stream(workflow_id, offset, limit, key))

    async def read_stream_all(
        self,
        workflow_id: str,
        offset: int = 0,
        page_size: int | None = None,
        key: str = STREAM_PROGRESS,
    ) -> StreamPage:
        """Every value written from `offset` so far, reading page after page, as one page."""
        first = await self.read_stream(workflow_id, offset, page_size, key)
        pages = [first]
        while pages[-1].has_more:
            pages.append(await self.read_stream(workflow_id, pages[-1].next_offset, page_size, key))
        return _merge_pages(first, pages)

    async def stream_live_updates(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> AsyncGenerator[Any, None]:
        """Each stream value as the workflow writes it (pushed over SSE), until it closes."""
        async with aclosing(self.iter_stream(workflow_id, key=key, offset=offset)) as items:
            async for item in items:
                yield item.value

    # -- live push (server-sent events) ---------------------------------------------------

    def iter_stream(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> AsyncGenerator[StreamItem, None]:
        """Stream values from `offset` as they are written, until the stream is closed.

        Resumed after a dropped connection or an `overflow`/`shutdown` event, without gaps
        or repeats. Use `contextlib.aclosing` when you may stop early.
        """
        return self._follow(self._stream_feed(workflow_id, key, offset))

    def watch_events(self, workflow_id: str) -> AsyncGenerator[EventChange, None]:
        """Every event's current value, then each change, until the workflow has finished."""
        return self._follow(self._events_feed(workflow_id))

    def watch_status(self, workflow_id: str) -> AsyncGenerator[WorkflowPublic, None]:
        """The workflow's status now and on each change; the last one carries its result."""
        return self._follow(self._status_feed(workflow_id))

    async def _follow(self, feed: _Feed[T]) -> AsyncGenerator[T, None]:
        retry = self._reconnects(feed.path)
        while True:
            cause: BaseException | None = None
            try:
                async with aconnect_sse(
                    self._http,
                    "GET",
                    feed.path,
                    params=feed.params,
                    headers=feed.headers(),
                    timeout=self._sse_timeout,
                ) as source:
                    if source.response.is_error:
                        await source.response.aread()
                        raise error_from_response(source.response)
                    async with aclosing(source.aiter_sse()) as events:
                        async for sse in events:
                            item, next_ = feed.on_event(sse)
                            if item is not None:
                                retry.progressed()
                                yield item
                            if next_ is _Next.DONE:
                                return
                            if next_ is _Next.RECONNECT:
                                break
            except (httpx.TransportError, ServiceUnavailable) as exc:
                cause = exc
            await asyncio.sleep(retry.next_delay(cause))

    # -- workflows ------------------------------------------------------------------------

    async def get_workflow(self, workflow_id: str) -> WorkflowPublic:
        """Status, kind, timestamps, and the result or error once finished."""
        return await self._send(self._get_workflow(workflow_id))

    async def wait_for_result(
        self, workflow_id: str, timeout: float = 60.0, interval: float = 0.2
    ) -> WorkflowPublic:
        """Poll until the workflow has finished and return it; ClientTimeout after `timeout`."""
        deadline = _Deadline(f"workflow {workflow_id}", timeout, interval)
        while (workflow := await self.get_workflow(workflow_id)).status not in TERMINAL_STATUSES:
            await asyncio.sleep(deadline.next_sleep())
        return workflow

    async def list_workflows(
        self,
        status: WorkflowStatusName | None = None,
        kind: WorkflowKind | None = None,
        limit: int | None = None,
    ) -> WorkflowsPublic:
        """Recent workflows, newest first, optionally filtered by status and kind."""
        return await self._send(self._list_workflows(status, kind, limit))

    async def cancel_workflow(self, workflow_id: str) -> WorkflowAction:
        """Cancel an unfinished workflow; raises Conflict if it already finished."""
        return await self._send(self._action(workflow_id, "cancel"))

    async def resume_workflow(self, workflow_id: str) -> WorkflowAction:
        """Resume a cancelled workflow; raises Conflict if it is not resumable."""
        return await self._send(self._action(workflow_id, "resume"))

    async def health(self) -> HealthPublic:
        """The server's health report; `status` is "degraded" when the database is away."""
        return await self._send(self._health())
