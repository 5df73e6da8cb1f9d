"""Everything the clients do that is not I/O: requests, answers, and every multi-request flow.

A flow is a generator that yields what it needs done and receives the outcome, as httpx's
`Auth.auth_flow` does:

- `Call`: send this request; the parsed answer comes back (a `WorkflowClientError` is
  thrown into the flow instead, where the flow may catch it);
- `Sleep`: wait this long; `None` comes back;
- `Open`: connect to this server-sent-event feed (closing any open one); `None` comes back;
- `NEXT_EVENT`: the next event of the open feed, or `None` when the server ended it;
- `Emit`: hand this item to the caller of a live method; `None` comes back.

A flow's return value is the method's result. `TypedWorkflowClient` and `AsyncWorkflowClient`
each drive flows with their own I/O (blocking or asyncio); the logic is written once, here.
The drivers close an open feed before every `Open` and `Sleep`, and when the flow ends.
"""

import enum
import json
import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent
from pydantic import BaseModel

from workflow_comm.client.errors import (
    ClientTimeout,
    ConnectionFailed,
    ServerError,
    ServiceUnavailable,
    StreamDisconnected,
    error_from_response,
)
from workflow_comm.models import (
    EventKeysPublic,
    EventPublic,
    EventsPublic,
    EventsWorkflowStarted,
    HealthPublic,
    MessageSent,
    MessagingWorkflowStarted,
    StreamingWorkflowStarted,
    StreamKeysPublic,
    StreamPage,
    WorkflowAction,
    WorkflowPublic,
    WorkflowsPublic,
    WorkflowStatusName,
)
from workflow_comm.models_mailbox import (
    MessagesPublic,
    RequestReplied,
    ServiceWorkflowStarted,
    TimelineEntry,
    TimelinePublic,
)
from workflow_comm.names import (
    REQUEST_TIMEOUT_DEFAULT,
    TERMINAL_STATUSES,
    MailboxState,
    WorkflowKind,
)

logger = logging.getLogger("workflow_comm.client")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
R = TypeVar("R")

Params: TypeAlias = dict[str, str | int | float]


# ---------------------------------------------------------------------------------------------
# What a flow can ask for


@dataclass(frozen=True)
class Call(Generic[M]):
    """One request and the model its answer parses into. Built once, sent sync or async."""

    method: str
    path: str
    model: type[M]
    params: Params = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds the server may legitimately hold the request (a long poll), beyond the usual.
    waits: float = 0.0
    # Error statuses whose body is still this model (GET /health answers 503 with a report).
    accept: frozenset[int] = frozenset()

    def parse(self, response: httpx.Response) -> M:
        """The answer as the model, or the `WorkflowClientError` it stands for (raised)."""
        if response.is_error and response.status_code not in self.accept:
            raise error_from_response(response)
        try:
            return self.model.model_validate(response.json())
        except ValueError as exc:
            raise ServerError(
                f"{self.method} {self.path}: unreadable answer ({exc})", response.status_code
            ) from exc


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Open:
    feed: "Feed[Any]"


@dataclass(frozen=True, slots=True)
class Emit(Generic[T]):
    item: T


class _NextEvent(enum.Enum):
    NEXT_EVENT = enum.auto()


NEXT_EVENT: Final = _NextEvent.NEXT_EVENT

Op: TypeAlias = Call[Any] | Sleep | Open | Emit[Any] | _NextEvent
# A flow yields ops, receives their outcomes, and returns the method's result.
Flow: TypeAlias = Generator[Op, Any, R]


class Stepper(Generic[R]):
    """Steps a flow for a driver: the next op, given the outcome (or error) of the last one.

    A driver loops `while (op := stepper.next_op()) is not None`, performs each op, and
    records `outcome` or `error`; `result` is the flow's return value once it has ended.
    """

    def __init__(self, flow: Flow[R]) -> None:
        self.flow = flow
        self.outcome: Any = None
        self.error: BaseException | None = None
        self.result: R | None = None

    def next_op(self) -> Op | None:
        try:
            if self.error is not None:
                op = self.flow.throw(self.error)
            else:
                op = self.flow.send(self.outcome)
        except StopIteration as stop:
            self.result = stop.value
            return None
        self.outcome, self.error = None, None
        return op


# ---------------------------------------------------------------------------------------------
# Live items and feeds


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


class Next(enum.Enum):
    """What a feed does after an event."""

    CONTINUE = enum.auto()
    RECONNECT = enum.auto()
    DONE = enum.auto()


class Feed(Generic[T]):
    """A server-sent-event endpoint: where to connect, how to resume, what each event means."""

    def __init__(self, path: str, params: Params | None = None) -> None:
        self.path = path
        self.params: Params = params or {}
        self.last_id: str | None = None

    def headers(self) -> dict[str, str]:
        # The standard EventSource resume: the server continues after this id.
        return {"Last-Event-ID": self.last_id} if self.last_id is not None else {}

    def on_event(self, sse: ServerSentEvent) -> tuple[T | None, Next]:
        """Map one event to (item to hand out or None, what to do next)."""
        if not sse.data:
            # No data (e.g. only a `retry:` field): per the SSE spec, nothing to dispatch.
            return None, Next.CONTINUE
        if sse.event == "message":
            item = self.item(sse)
            if sse.id:
                self.last_id = sse.id
            return item, Next.CONTINUE
        if sse.event == "closed":
            return self.closing(sse), Next.DONE
        if sse.event in ("overflow", "shutdown"):
            logger.info("%s: server sent %r %s; reconnecting", self.path, sse.event, sse.data)
            self.resume_hint(sse)
            return None, Next.RECONNECT
        return None, Next.CONTINUE  # an event type this client does not know: skip it

    def item(self, sse: ServerSentEvent) -> T:
        raise NotImplementedError

    def closing(self, sse: ServerSentEvent) -> T | None:
        return None

    def resume_hint(self, sse: ServerSentEvent) -> None:
        """Adjust the resume position from an overflow/shutdown event (default: last id)."""


class _OffsetFeed(Feed[T]):
    """A stream's live feed: resumes at the offset after the last value handed out."""

    def __init__(self, path: str, key: str, offset: int) -> None:
        super().__init__(path, {"key": key, "offset": offset})

    def item(self, sse: ServerSentEvent) -> T:
        offset = int(sse.id)
        self.params["offset"] = offset + 1
        return self.make(offset, sse.json())

    def make(self, offset: int, value: Any) -> T:
        raise NotImplementedError

    def resume_hint(self, sse: ServerSentEvent) -> None:
        resume = int(json.loads(sse.data)["resume_offset"])
        self.params["offset"] = resume
        self.last_id = str(resume - 1) if resume > 0 else None


class StreamFeed(_OffsetFeed[StreamItem]):
    def make(self, offset: int, value: Any) -> StreamItem:
        return StreamItem(offset=offset, value=value)


class StreamValuesFeed(_OffsetFeed[Any]):
    """The values alone, without their offsets."""

    def make(self, offset: int, value: Any) -> Any:
        return value


class EventsFeed(Feed[EventChange]):
    def item(self, sse: ServerSentEvent) -> EventChange:
        data = sse.json()
        return EventChange(key=data["key"], value=data["value"], version=int(data["version"]))


class TimelineFeed(Feed[TimelineEntry]):
    """A workflow's live timeline: each entry's id is its SSE id, so a reconnect resumes
    after the last entry handed out (the server sends the ones after it)."""

    def item(self, sse: ServerSentEvent) -> TimelineEntry:
        return TimelineEntry.model_validate(sse.json())


class StatusFeed(Feed[WorkflowPublic]):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.shown: WorkflowPublic | None = None

    def item(self, sse: ServerSentEvent) -> WorkflowPublic:
        return WorkflowPublic.model_validate(sse.json())

    def closing(self, sse: ServerSentEvent) -> WorkflowPublic | None:
        return self.item(sse)

    def on_event(self, sse: ServerSentEvent) -> tuple[WorkflowPublic | None, Next]:
        item, next_ = super().on_event(sse)
        # A reconnect, and the final `closed`, repeat the status last shown: hand it out once.
        if item is not None and item == self.shown:
            item = None
        if item is not None:
            self.shown = item
        return item, next_


@dataclass
class Reconnects:
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


class Deadline:
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


# ---------------------------------------------------------------------------------------------
# Requests: one function per endpoint


def _wf(workflow_id: str) -> str:
    # Quoted whole, so a bad ID reaches the server as typed and gets its 422, not a wrong route.
    return quote(workflow_id, safe="")


def _optional(**values: str | int | float | None) -> Params:
    """Query parameters, leaving out the ones not given (the server's defaults apply)."""
    return {name: value for name, value in values.items() if value is not None}


def start_events(
    workflow_id: str, n_steps: int, step_seconds: float | None
) -> Call[EventsWorkflowStarted]:
    path = f"/start-workflow-events/{_wf(workflow_id)}/{n_steps}"
    return Call("POST", path, EventsWorkflowStarted, _optional(step_seconds=step_seconds))


def start_messaging(
    workflow_id: str, n_steps: int, step_seconds: float | None, approval_timeout: float | None
) -> Call[MessagingWorkflowStarted]:
    path = f"/start-workflow-messaging/{_wf(workflow_id)}/{n_steps}"
    params = _optional(step_seconds=step_seconds, approval_timeout=approval_timeout)
    return Call("POST", path, MessagingWorkflowStarted, params)


def start_streaming(
    workflow_id: str, n_steps: int, step_seconds: float | None
) -> Call[StreamingWorkflowStarted]:
    path = f"/start-workflow-streaming/{_wf(workflow_id)}/{n_steps}"
    return Call("POST", path, StreamingWorkflowStarted, _optional(step_seconds=step_seconds))


def get_event(workflow_id: str, key: str, timeout: float) -> Call[EventPublic]:
    path = f"/workflow-events/{_wf(workflow_id)}/{quote(key, safe='')}"
    return Call("GET", path, EventPublic, {"timeout": timeout}, waits=timeout)


def get_all_events(workflow_id: str) -> Call[EventsPublic]:
    return Call("GET", f"/workflow-events/{_wf(workflow_id)}/all", EventsPublic)


def send_message(
    workflow_id: str, payload: Mapping[str, Any], topic: str | None, idempotency_key: str | None
) -> Call[MessageSent]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    path = f"/send-message/{_wf(workflow_id)}"
    params = _optional(topic=topic)
    return Call("POST", path, MessageSent, params, body=dict(payload), headers=headers)


def approval(approved: bool, message: str | None) -> dict[str, Any]:
    """The approval message a messaging workflow waits for."""
    payload: dict[str, Any] = {"approved": approved}
    if message is not None:
        payload["message"] = message
    return payload


def read_stream(
    workflow_id: str, offset: int, limit: int | None, key: str | None
) -> Call[StreamPage]:
    params = _optional(offset=offset, limit=limit, key=key)
    return Call("GET", f"/workflow-stream/{_wf(workflow_id)}", StreamPage, params)


def get_workflow(workflow_id: str) -> Call[WorkflowPublic]:
    return Call("GET", f"/workflows/{_wf(workflow_id)}", WorkflowPublic)


def list_workflows(
    status: WorkflowStatusName | None,
    kind: WorkflowKind | None,
    limit: int | None,
    app: str | None = None,
) -> Call[WorkflowsPublic]:
    params = _optional(status=status, kind=kind, limit=limit, app=app)
    return Call("GET", "/workflows", WorkflowsPublic, params)


def list_event_keys(workflow_id: str) -> Call[EventKeysPublic]:
    return Call("GET", f"/workflows/{_wf(workflow_id)}/event-keys", EventKeysPublic)


def list_stream_keys(workflow_id: str) -> Call[StreamKeysPublic]:
    return Call("GET", f"/workflows/{_wf(workflow_id)}/stream-keys", StreamKeysPublic)


def action(workflow_id: str, verb: str) -> Call[WorkflowAction]:
    return Call("POST", f"/workflows/{_wf(workflow_id)}/{verb}", WorkflowAction)


def health() -> Call[HealthPublic]:
    return Call("GET", "/health", HealthPublic, accept=frozenset({503}))


def stream_feed(workflow_id: str, key: str, offset: int) -> StreamFeed:
    return StreamFeed(f"/workflow-stream/{_wf(workflow_id)}/live", key, offset)


def stream_values_feed(workflow_id: str, key: str, offset: int) -> StreamValuesFeed:
    return StreamValuesFeed(f"/workflow-stream/{_wf(workflow_id)}/live", key, offset)


def events_feed(workflow_id: str) -> EventsFeed:
    return EventsFeed(f"/workflow-events/{_wf(workflow_id)}/live")


def status_feed(workflow_id: str) -> StatusFeed:
    return StatusFeed(f"/workflows/{_wf(workflow_id)}/live")


def timeline_feed(workflow_id: str) -> TimelineFeed:
    return TimelineFeed(f"/workflows/{_wf(workflow_id)}/timeline/live")


# ---------------------------------------------------------------------------------------------
# Flows: every method that takes more than one request


def wait_for_result(workflow_id: str, timeout: float, interval: float) -> Flow[WorkflowPublic]:
    """Poll the status until the workflow has finished; ClientTimeout after `timeout`."""
    deadline = Deadline(f"workflow {workflow_id}", timeout, interval)
    while True:
        workflow: WorkflowPublic = yield get_workflow(workflow_id)
        if workflow.status in TERMINAL_STATUSES:
            return workflow
        yield Sleep(deadline.next_sleep())


def poll_until_complete(
    workflow_id: str,
    timeout: float,
    interval: float,
    on_progress: Callable[[EventsPublic], None] | None,
) -> Flow[EventsPublic]:
    """Poll status and events until the workflow has finished; return its final events.

    `on_progress(events)` is called each time the events changed.
    """
    deadline = Deadline(f"workflow {workflow_id}", timeout, interval)
    seen: dict[str, Any] | None = None
    while True:
        # Status first: once it is final, the events read after it are final too.
        status: WorkflowPublic = yield get_workflow(workflow_id)
        events: EventsPublic = yield get_all_events(workflow_id)
        if on_progress is not None and events.events != seen:
            on_progress(events)
        seen = events.events
        if status.status in TERMINAL_STATUSES:
            return events
        yield Sleep(deadline.next_sleep())


def read_stream_all(
    workflow_id: str, offset: int, page_size: int | None, key: str | None
) -> Flow[StreamPage]:
    """Every value written from `offset` so far, page after page, merged into one page."""
    first: StreamPage = yield read_stream(workflow_id, offset, page_size, key)
    values = list(first.stream_values)
    last = first
    while last.has_more:
        last = yield read_stream(workflow_id, last.next_offset, page_size, key)
        values.extend(last.stream_values)
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


def follow(feed: Feed[T], retry: Reconnects) -> Flow[None]:
    """A live feed's items, until the server says it is done.

    A dropped connection, a read timeout, a 503, or an `overflow`/`shutdown` event reconnects
    after a backoff, resuming where the feed stopped; progress resets the retry count. Any
    other error (401, 403, 404, 422, ...) ends the flow with that error.
    """
    while True:
        cause: BaseException | None = None
        try:
            yield Open(feed)
            while (sse := (yield NEXT_EVENT)) is not None:
                item, next_ = feed.on_event(sse)
                if item is not None:
                    retry.progressed()
                    yield Emit(item)
                if next_ is Next.DONE:
                    return
                if next_ is Next.RECONNECT:
                    break
        except (ConnectionFailed, ClientTimeout, ServiceUnavailable) as exc:
            cause = exc
        yield Sleep(retry.next_delay(cause))


# ---------------------------------------------------------------------------------------------
# Request/reply, the mailbox and the timeline


def start_service(
    workflow_id: str, idle_timeout: float | None, step_seconds: float | None
) -> Call[ServiceWorkflowStarted]:
    path = f"/start-workflow-service/{_wf(workflow_id)}"
    params = _optional(idle_timeout=idle_timeout, step_seconds=step_seconds)
    return Call("POST", path, ServiceWorkflowStarted, params)


def request(
    workflow_id: str,
    payload: Mapping[str, Any],
    topic: str | None,
    timeout: float | None,
    idempotency_key: str | None,
) -> Call[RequestReplied]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    path = f"/workflows/{_wf(workflow_id)}/request"
    params = _optional(topic=topic, timeout=timeout)
    waits = REQUEST_TIMEOUT_DEFAULT if timeout is None else timeout
    return Call(
        "POST", path, RequestReplied, params, body=dict(payload), headers=headers, waits=waits
    )


def list_messages(
    workflow_id: str,
    topic: str | None,
    state: MailboxState | None,
    limit: int | None,
    offset: int | None,
) -> Call[MessagesPublic]:
    params = _optional(topic=topic, state=state, limit=limit, offset=offset)
    return Call("GET", f"/workflows/{_wf(workflow_id)}/messages", MessagesPublic, params)


def get_timeline(workflow_id: str, limit: int | None, offset: int | None) -> Call[TimelinePublic]:
    params = _optional(limit=limit, offset=offset)
    return Call("GET", f"/workflows/{_wf(workflow_id)}/timeline", TimelinePublic, params)
