"""The typed clients: `TypedWorkflowClient` (blocking) and `AsyncWorkflowClient` (asyncio).

Both have the same methods, arguments and answers (the models of `workflow_comm.models`,
`StreamItem`, `EventChange`). Each method is written once, in `TypedWorkflowClient`, as the
request, flow or feed of `flows.py` it performs (`return self._do(...)`), where all the logic
lives; `AsyncWorkflowClient` takes every one of them through `awaiting`, with the same
arguments, types and docstring. The two classes here only do the I/O, each its own way:
send a request, sleep, read a server-sent-event feed.
"""

import asyncio
import functools
import inspect
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterator,
    Mapping,
)
from contextlib import AsyncExitStack, ExitStack, aclosing
from types import TracebackType
from typing import (
    Any,
    ClassVar,
    Concatenate,
    Generic,
    ParamSpec,
    Self,
    TypeVar,
    get_origin,
    get_type_hints,
    overload,
)

import httpx
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse, connect_sse
from pydantic import BaseModel

from workflow_comm.client import flows
from workflow_comm.client.errors import WorkflowClientError, error_from_response, transport_error
from workflow_comm.client.flows import (
    NEXT_EVENT,
    Call,
    Emit,
    EventChange,
    Feed,
    Flow,
    Op,
    Open,
    Sleep,
    Stepper,
    StreamItem,
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
from workflow_comm.names import STREAM_PROGRESS, TOPIC_NOTIFICATION, MailboxState, WorkflowKind

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
T = TypeVar("T")
P = ParamSpec("P")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)

DEFAULT_BASE_URL = "http://localhost:8000"
# Extra seconds a long-polling request gets on top of the wait it asks the server for.
_WAIT_MARGIN = 10.0


class _Base(Generic[H]):
    """Settings shared by both clients, and the httpx client each one drives."""

    _http_class: ClassVar[type[httpx.Client] | type[httpx.AsyncClient]]

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
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        # Longer than the server's heartbeat interval, so a quiet stream is not taken for dead.
        self._sse_timeout = httpx.Timeout(timeout, read=sse_read_timeout)
        headers = httpx.Headers(httpx_options.pop("headers", None))
        if api_key:
            # httpx masks this header in reprs and logs; the live endpoints take it too.
            headers["Authorization"] = f"Bearer {api_key}"
        self._http: H = self._http_class(  # type: ignore[assignment]
            base_url=self.base_url, timeout=timeout, headers=headers, **httpx_options
        )

    def _request_options(self, call: Call[Any]) -> dict[str, Any]:
        timeout = self.timeout + call.waits + (_WAIT_MARGIN if call.waits else 0.0)
        return {
            "params": call.params,
            "json": call.body,
            "headers": call.headers,
            "timeout": timeout,
        }

    def _feed_options(self, feed: Feed[Any]) -> dict[str, Any]:
        return {"params": feed.params, "headers": feed.headers(), "timeout": self._sse_timeout}

    def _reconnects(self, feed: Feed[Any]) -> flows.Reconnects:
        return flows.Reconnects(feed.path, self.max_retries, self.retry_backoff, self.max_backoff)


def _not_a_flow_op(op: Op) -> TypeError:
    return TypeError(f"a flow yielded {op!r}, which this driver does not perform")


# ---------------------------------------------------------------------------------------------
# The blocking client


class _Source:
    """The open server-sent-event connection of a blocking live method, if any."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http
        self._stack: ExitStack | None = None
        self._events: Iterator[ServerSentEvent] | None = None

    def open(self, feed: Feed[Any], options: dict[str, Any]) -> None:
        self.close()
        stack = ExitStack()
        try:
            source: EventSource = stack.enter_context(
                connect_sse(self._http, "GET", feed.path, **options)
            )
            if source.response.is_error:
                source.response.read()
                raise error_from_response(source.response)
            self._events = source.iter_sse()  # ends with the response the stack closes
        except httpx.TransportError as exc:
            stack.close()
            raise transport_error(exc, f"GET {feed.path}") from exc
        except BaseException:
            stack.close()
            raise
        self._stack = stack

    def next_event(self, path: str) -> ServerSentEvent | None:
        assert self._events is not None, "NEXT_EVENT before Open"
        try:
            return next(self._events, None)
        except httpx.TransportError as exc:
            raise transport_error(exc, f"GET {path}") from exc

    def close(self) -> None:
        stack, self._stack, self._events = self._stack, None, None
        if stack is not None:
            stack.close()


class TypedWorkflowClient(_Base[httpx.Client]):
    """Blocking client with typed answers (one httpx.Client inside).

    Use it as a context manager, or call `close()`. Extra keyword arguments (headers,
    transport, event_hooks, ...) go to `httpx.Client`.

    `api_key` is sent as `Authorization: Bearer <key>` on every request, the live ones
    included, for a server started with COMM_API_KEYS. Without a valid key such a server
    answers 401 (`Unauthorized`); a read-only key that starts, sends, cancels or resumes gets
    403 (`Forbidden`). Neither is retried, not even by the live methods.

    Live methods (`iter_stream`, `watch_events`, `watch_status`, `stream_live_updates`,
    `iter_timeline`) reconnect after a dropped connection up to `max_retries` times in a row,
    waiting `retry_backoff` seconds doubled per attempt (at most `max_backoff`), resuming with
    `Last-Event-ID`. `sse_read_timeout` is how long a live connection may stay silent before
    it counts as dropped.
    """

    _http_class = httpx.Client

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

    # -- the I/O ----------------------------------------------------------------------------

    def _send(self, call: Call[M]) -> M:
        try:
            response = self._http.request(call.method, call.path, **self._request_options(call))
        except httpx.TransportError as exc:
            raise transport_error(exc, f"{call.method} {call.path}") from exc
        return call.parse(response)

    def _perform(self, op: Op, source: _Source, path: str) -> Any:
        if isinstance(op, Call):
            return self._send(op)
        if op is NEXT_EVENT:
            return source.next_event(path)
        source.close()
        if isinstance(op, Open):
            source.open(op.feed, self._feed_options(op.feed))
        elif isinstance(op, Sleep):
            time.sleep(op.seconds)
        else:
            raise _not_a_flow_op(op)
        return None

    def _drive(self, stepper: Stepper[Any], path: str = "") -> Iterator[Any]:
        """Run a flow, yielding what it emits (a live method's items)."""
        source = _Source(self._http)
        try:
            while (op := stepper.next_op()) is not None:
                if isinstance(op, Emit):
                    yield op.item
                    continue
                try:
                    stepper.outcome = self._perform(op, source, path)
                except WorkflowClientError as exc:
                    stepper.error = exc
        finally:
            source.close()
            stepper.flow.close()

    def _run(self, flow: Flow[R]) -> R:
        stepper = Stepper(flow)
        for item in self._drive(stepper):
            raise _not_a_flow_op(Emit(item))
        return stepper.result  # type: ignore[return-value]  # set when the flow ended

    def _follow(self, feed: Feed[T]) -> Generator[T, None, None]:
        yield from self._drive(Stepper(flows.follow(feed, self._reconnects(feed))), feed.path)

    @overload
    def _do(self, built: Call[M]) -> M: ...
    @overload
    def _do(self, built: Feed[T]) -> Generator[T, None, None]: ...
    @overload
    def _do(self, built: Flow[R]) -> R: ...
    def _do(self, built: Call[Any] | Feed[Any] | Flow[Any]) -> Any:
        """Perform what a method built: send a request, follow a feed, or run a flow.

        Every public method is one `return self._do(...)`: `AsyncWorkflowClient` relies on it
        (see `awaiting`).
        """
        if isinstance(built, Call):
            return self._send(built)
        if isinstance(built, Feed):
            return self._follow(built)
        return self._run(built)

    # -- events ---------------------------------------------------------------------------

    def start_workflow_with_events(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> EventsWorkflowStarted:
        """Start an events workflow of `n_steps` steps (`created` is False if it existed).

        Raises Conflict if the ID belongs to another kind of workflow.
        """
        return self._do(flows.start_events(workflow_id, n_steps, step_seconds))

    def get_workflow_event(self, workflow_id: str, key: str, timeout: float = 5) -> EventPublic:
        """The event's latest value; the server waits up to `timeout` s for it to be set.

        Raises NotFound if the workflow does not exist or the event is still not set.
        """
        return self._do(flows.get_event(workflow_id, key, timeout))

    def get_all_workflow_events(self, workflow_id: str) -> EventsPublic:
        """Every event the workflow has set (latest value of each), without waiting.

        Raises NotFound if the workflow does not exist.
        """
        return self._do(flows.get_all_events(workflow_id))

    def poll_until_complete(
        self,
        workflow_id: str,
        timeout: float = 60.0,
        interval: float = 0.5,
        on_progress: Callable[[EventsPublic], None] | None = None,
    ) -> EventsPublic:
        """Poll until the workflow finishes; return its final events (`result` among them).

        `on_progress` is called with the events each time they changed. Raises ClientTimeout
        after `timeout` seconds, NotFound for an unknown workflow. For push instead of
        polling, see `watch_events`.
        """
        return self._do(flows.poll_until_complete(workflow_id, timeout, interval, on_progress))

    # -- messaging ------------------------------------------------------------------------

    def start_workflow_with_messaging(
        self,
        workflow_id: str,
        n_steps: int,
        step_seconds: float | None = None,
        approval_timeout: float | None = None,
    ) -> MessagingWorkflowStarted:
        """Start a workflow that waits up to `approval_timeout` s for an approval message.

        Raises Conflict if the ID belongs to another kind of workflow.
        """
        call = flows.start_messaging(workflow_id, n_steps, step_seconds, approval_timeout)
        return self._do(call)

    def send_approval(
        self,
        workflow_id: str,
        approved: bool = True,
        message: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageSent:
        """Send `{"approved": approved, "message": message}` on the notification topic.

        A repeated `idempotency_key` is delivered once. Raises NotFound for an unknown
        workflow.
        """
        payload = flows.approval(approved, message)
        return self._do(
            flows.send_message(workflow_id, payload, TOPIC_NOTIFICATION, idempotency_key)
        )

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
        return self._do(flows.send_message(workflow_id, payload, topic, idempotency_key))

    # -- streaming ------------------------------------------------------------------------

    def start_workflow_with_streaming(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> StreamingWorkflowStarted:
        """Start a workflow that writes 3 + 2 * n_steps entries to `progress_stream`.

        Raises Conflict if the ID belongs to another kind of workflow.
        """
        return self._do(flows.start_streaming(workflow_id, n_steps, step_seconds))

    def read_stream(
        self,
        workflow_id: str,
        offset: int = 0,
        limit: int | None = None,
        key: str = STREAM_PROGRESS,
    ) -> StreamPage:
        """One page: the values written from `offset` so far (at most `limit`), at once.

        Raises NotFound for an unknown workflow.
        """
        return self._do(flows.read_stream(workflow_id, offset, limit, key))

    def read_stream_all(
        self,
        workflow_id: str,
        offset: int = 0,
        page_size: int | None = None,
        key: str = STREAM_PROGRESS,
    ) -> StreamPage:
        """Every value written from `offset` so far, reading page after page, as one page.

        Raises NotFound for an unknown workflow.
        """
        return self._do(flows.read_stream_all(workflow_id, offset, page_size, key))

    def stream_live_updates(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> Generator[Any, None, None]:
        """Each stream value as the workflow writes it (pushed over SSE), until it closes.

        `iter_stream` without the offsets.
        """
        return self._do(flows.stream_values_feed(workflow_id, key, offset))

    # -- live push (server-sent events) ---------------------------------------------------

    def iter_stream(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> Generator[StreamItem, None, None]:
        """Stream values from `offset` as they are written, until the stream is closed.

        Pushed over SSE. A dropped connection, or an `overflow`/`shutdown` from the server,
        is resumed where it stopped: no value is skipped or repeated. Raises NotFound for an
        unknown workflow, StreamDisconnected when reconnecting keeps failing.
        """
        return self._do(flows.stream_feed(workflow_id, key, offset))

    def watch_events(self, workflow_id: str) -> Generator[EventChange, None, None]:
        """Every event's current value, then each change, until the workflow has finished.

        Reconnects and raises as `iter_stream` does.
        """
        return self._do(flows.events_feed(workflow_id))

    def watch_status(self, workflow_id: str) -> Generator[WorkflowPublic, None, None]:
        """The workflow's status now and on each change; the last one carries its result.

        Reconnects and raises as `iter_stream` does.
        """
        return self._do(flows.status_feed(workflow_id))

    # -- workflows ------------------------------------------------------------------------

    def get_workflow(self, workflow_id: str) -> WorkflowPublic:
        """Status, kind, timestamps, and the result or error once finished.

        Raises NotFound for an unknown workflow.
        """
        return self._do(flows.get_workflow(workflow_id))

    def wait_for_result(
        self, workflow_id: str, timeout: float = 60.0, interval: float = 0.2
    ) -> WorkflowPublic:
        """Poll until the workflow has finished and return it (see `.status`, `.result`).

        Raises ClientTimeout after `timeout` seconds, NotFound for an unknown workflow.
        """
        return self._do(flows.wait_for_result(workflow_id, timeout, interval))

    def list_workflows(
        self,
        status: WorkflowStatusName | None = None,
        kind: WorkflowKind | None = None,
        limit: int | None = None,
        app: str | None = None,
    ) -> WorkflowsPublic:
        """Recent workflows, newest first, optionally filtered by status, kind and DBOS
        application name (one the server serves: see COMM_SERVE_APPS)."""
        return self._do(flows.list_workflows(status, kind, limit, app))

    def list_event_keys(self, workflow_id: str) -> EventKeysPublic:
        """The keys of every event the workflow has set so far, sorted (`.data`).

        Raises NotFound for an unknown workflow.
        """
        return self._do(flows.list_event_keys(workflow_id))

    def list_stream_keys(self, workflow_id: str) -> StreamKeysPublic:
        """Every stream the workflow has written to so far (`.data`: key, length, closed).

        Raises NotFound for an unknown workflow.
        """
        return self._do(flows.list_stream_keys(workflow_id))

    def cancel_workflow(self, workflow_id: str) -> WorkflowAction:
        """Cancel an unfinished workflow; raises Conflict if it already finished."""
        return self._do(flows.action(workflow_id, "cancel"))

    def resume_workflow(self, workflow_id: str) -> WorkflowAction:
        """Resume a cancelled or failed workflow; raises Conflict if it is not resumable."""
        return self._do(flows.action(workflow_id, "resume"))

    def health(self) -> HealthPublic:
        """The server's health report; `status` is "degraded" when the database is away."""
        return self._do(flows.health())

    # -- request/reply, the mailbox, the timeline --------------------------------------------

    def start_workflow_service(
        self,
        workflow_id: str,
        idle_timeout: float | None = None,
        step_seconds: float | None = None,
    ) -> ServiceWorkflowStarted:
        """Start a service workflow that answers {"n": k} with F(k) until idle for
        `idle_timeout` seconds (`created` is False if it existed)."""
        return self._do(flows.start_service(workflow_id, idle_timeout, step_seconds))

    def request(
        self,
        workflow_id: str,
        payload: Mapping[str, Any],
        topic: str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> RequestReplied:
        """Send a request and return the workflow's reply (`reply`), waiting up to `timeout` s.

        With an `idempotency_key`, a repeat (after NoReply, or a lost connection) gets the same
        reply and the workflow handles the request once. Raises NoReply (a ClientTimeout) if
        no reply came in time, Conflict if the workflow finished without replying.
        """
        return self._do(flows.request(workflow_id, payload, topic, timeout, idempotency_key))

    def list_messages(
        self,
        workflow_id: str,
        topic: str | None = None,
        state: MailboxState | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> MessagesPublic:
        """The workflow's mailbox, oldest first: `state` "pending", "consumed" or "all"."""
        return self._do(flows.list_messages(workflow_id, topic, state, limit, offset))

    def get_timeline(
        self, workflow_id: str, limit: int | None = None, offset: int | None = None
    ) -> TimelinePublic:
        """What happened to the workflow, in order (a page of it)."""
        return self._do(flows.get_timeline(workflow_id, limit, offset))

    def iter_timeline(self, workflow_id: str) -> Generator[TimelineEntry, None, None]:
        """Every timeline entry so far, then each new one as it happens, until the workflow
        has finished (its `end` entry is the last; the current status is not sent).

        Pushed over SSE. Reconnects and raises as `iter_stream` does: a reconnect resumes
        after the last entry handed out, so none is repeated.
        """
        return self._do(flows.timeline_feed(workflow_id))


# ---------------------------------------------------------------------------------------------
# The asyncio client


class _Recorder:
    """Stands in for a `TypedWorkflowClient` while one of its methods runs, for `awaiting`:
    `_do` hands back what the method built (a `Call`, `Feed` or flow) instead of doing it."""

    @staticmethod
    def _do(built: Any) -> Any:
        return built


_RECORDER: Any = _Recorder()


@overload
def awaiting(  # type: ignore[overload-overlap]  # a generator is also an R
    method: Callable[Concatenate[TypedWorkflowClient, P], Generator[T, None, None]],
) -> Callable[Concatenate["AsyncWorkflowClient", P], AsyncGenerator[T, None]]: ...
@overload
def awaiting(
    method: Callable[Concatenate[TypedWorkflowClient, P], R],
) -> Callable[Concatenate["AsyncWorkflowClient", P], Coroutine[Any, Any, R]]: ...
def awaiting(method: Callable[..., Any]) -> Callable[..., Any]:
    """`TypedWorkflowClient`'s `method`, performed by an `AsyncWorkflowClient`.

    The method runs with `_Recorder` for `self` to build its request, feed or flow, which
    the async client then performs: a coroutine for a request or a flow, an async iterator
    for a feed. Arguments, defaults, docstring and types are the sync method's own.
    """
    live = get_origin(get_type_hints(method)["return"]) is Generator

    def build(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return method(_RECORDER, *args, **kwargs)

    if live:

        def follow(self: "AsyncWorkflowClient", *args: Any, **kwargs: Any) -> Any:
            return self._follow(build(args, kwargs))

        wrapper: Callable[..., Any] = follow
    else:

        async def perform(self: "AsyncWorkflowClient", *args: Any, **kwargs: Any) -> Any:
            built = build(args, kwargs)
            if isinstance(built, Call):
                return await self._send(built)
            return await self._run(built)

        wrapper = perform
    functools.update_wrapper(wrapper, method)
    wrapper.__qualname__ = f"AsyncWorkflowClient.{method.__name__}"
    return wrapper


class _AsyncSource:
    """The open server-sent-event connection of an async live method, if any."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._stack: AsyncExitStack | None = None
        self._events: AsyncIterator[ServerSentEvent] | None = None

    async def open(self, feed: Feed[Any], options: dict[str, Any]) -> None:
        await self.aclose()
        stack = AsyncExitStack()
        try:
            source: EventSource = await stack.enter_async_context(
                aconnect_sse(self._http, "GET", feed.path, **options)
            )
            if source.response.is_error:
                await source.response.aread()
                raise error_from_response(source.response)
            self._events = await stack.enter_async_context(aclosing(source.aiter_sse()))
        except httpx.TransportError as exc:
            await stack.aclose()
            raise transport_error(exc, f"GET {feed.path}") from exc
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def next_event(self, path: str) -> ServerSentEvent | None:
        assert self._events is not None, "NEXT_EVENT before Open"
        try:
            return await anext(self._events, None)
        except httpx.TransportError as exc:
            raise transport_error(exc, f"GET {path}") from exc

    async def aclose(self) -> None:
        stack, self._stack, self._events = self._stack, None, None
        if stack is not None:
            await stack.aclose()


class AsyncWorkflowClient(_Base[httpx.AsyncClient]):
    """`TypedWorkflowClient`'s methods for asyncio: coroutines, and async iterators for the
    live ones (`iter_stream`, `watch_events`, `watch_status`, `stream_live_updates`,
    `iter_timeline`).

    Use it as an async context manager, or call `aclose()`. `api_key`, reconnection and the
    other settings work as in `TypedWorkflowClient`; extra keyword arguments go to
    `httpx.AsyncClient`. Run many workflows at once with `asyncio.gather`. Use
    `contextlib.aclosing` around a live iterator you may leave early.
    """

    _http_class = httpx.AsyncClient

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

    # -- the I/O ----------------------------------------------------------------------------

    async def _send(self, call: Call[M]) -> M:
        try:
            response = await self._http.request(
                call.method, call.path, **self._request_options(call)
            )
        except httpx.TransportError as exc:
            raise transport_error(exc, f"{call.method} {call.path}") from exc
        return call.parse(response)

    async def _perform(self, op: Op, source: _AsyncSource, path: str) -> Any:
        if isinstance(op, Call):
            return await self._send(op)
        if op is NEXT_EVENT:
            return await source.next_event(path)
        await source.aclose()
        if isinstance(op, Open):
            await source.open(op.feed, self._feed_options(op.feed))
        elif isinstance(op, Sleep):
            await asyncio.sleep(op.seconds)
        else:
            raise _not_a_flow_op(op)
        return None

    async def _drive(self, stepper: Stepper[Any], path: str = "") -> AsyncGenerator[Any, None]:
        """Run a flow, yielding what it emits (a live method's items)."""
        source = _AsyncSource(self._http)
        try:
            while (op := stepper.next_op()) is not None:
                if isinstance(op, Emit):
                    yield op.item
                    continue
                try:
                    stepper.outcome = await self._perform(op, source, path)
                except WorkflowClientError as exc:
                    stepper.error = exc
        finally:
            await source.aclose()
            stepper.flow.close()

    async def _run(self, flow: Flow[R]) -> R:
        stepper = Stepper(flow)
        async with aclosing(self._drive(stepper)) as emitted:
            async for item in emitted:
                raise _not_a_flow_op(Emit(item))
        return stepper.result  # type: ignore[return-value]  # set when the flow ended

    async def _follow(self, feed: Feed[T]) -> AsyncGenerator[T, None]:
        stepper = Stepper(flows.follow(feed, self._reconnects(feed)))
        async with aclosing(self._drive(stepper, feed.path)) as items:
            async for item in items:
                yield item

    # -- TypedWorkflowClient's methods, each performed with asyncio ------------------------

    start_workflow_with_events = awaiting(TypedWorkflowClient.start_workflow_with_events)
    get_workflow_event = awaiting(TypedWorkflowClient.get_workflow_event)
    get_all_workflow_events = awaiting(TypedWorkflowClient.get_all_workflow_events)
    poll_until_complete = awaiting(TypedWorkflowClient.poll_until_complete)
    start_workflow_with_messaging = awaiting(TypedWorkflowClient.start_workflow_with_messaging)
    send_approval = awaiting(TypedWorkflowClient.send_approval)
    send_custom_message = awaiting(TypedWorkflowClient.send_custom_message)
    start_workflow_with_streaming = awaiting(TypedWorkflowClient.start_workflow_with_streaming)
    read_stream = awaiting(TypedWorkflowClient.read_stream)
    read_stream_all = awaiting(TypedWorkflowClient.read_stream_all)
    stream_live_updates = awaiting(TypedWorkflowClient.stream_live_updates)
    iter_stream = awaiting(TypedWorkflowClient.iter_stream)
    watch_events = awaiting(TypedWorkflowClient.watch_events)
    watch_status = awaiting(TypedWorkflowClient.watch_status)
    get_workflow = awaiting(TypedWorkflowClient.get_workflow)
    wait_for_result = awaiting(TypedWorkflowClient.wait_for_result)
    list_workflows = awaiting(TypedWorkflowClient.list_workflows)
    list_event_keys = awaiting(TypedWorkflowClient.list_event_keys)
    list_stream_keys = awaiting(TypedWorkflowClient.list_stream_keys)
    cancel_workflow = awaiting(TypedWorkflowClient.cancel_workflow)
    resume_workflow = awaiting(TypedWorkflowClient.resume_workflow)
    health = awaiting(TypedWorkflowClient.health)
    start_workflow_service = awaiting(TypedWorkflowClient.start_workflow_service)
    request = awaiting(TypedWorkflowClient.request)
    list_messages = awaiting(TypedWorkflowClient.list_messages)
    get_timeline = awaiting(TypedWorkflowClient.get_timeline)
    iter_timeline = awaiting(TypedWorkflowClient.iter_timeline)


def public_methods(cls: type) -> dict[str, Any]:
    """A client class's public methods by name."""
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }
