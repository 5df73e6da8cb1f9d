"""The typed clients: `TypedWorkflowClient` (blocking) and `AsyncWorkflowClient` (asyncio).

Both have the same methods, arguments and answers (the models of `workflow_comm.models`,
`StreamItem`, `EventChange`). Each method builds a request or a flow in `flows.py`, where all
the logic lives; the two classes here only do the I/O: send a request, sleep, read a
server-sent-event feed. The async client's docstrings are the sync client's, copied at import.
"""

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from contextlib import AsyncExitStack, ExitStack, aclosing
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

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
    StreamItem,
)
from workflow_comm.keys import STREAM_PROGRESS, TOPIC_NOTIFICATION, WorkflowKind
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

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
T = TypeVar("T")
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

    Live methods (`iter_stream`, `watch_events`, `watch_status`, `stream_live_updates`)
    reconnect after a dropped connection up to `max_retries` times in a row, waiting
    `retry_backoff` seconds doubled per attempt (at most `max_backoff`), resuming with
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

    def _drive(self, flow: Flow[R], path: str = "", result: list[R] | None = None) -> Iterator[Any]:
        """Run `flow`, yielding what it emits; its return value is appended to `result`."""
        source = _Source(self._http)
        outcome: Any = None
        error: WorkflowClientError | None = None
        try:
            while True:
                try:
                    op = flow.throw(error) if error is not None else flow.send(outcome)
                except StopIteration as stop:
                    if result is not None:
                        result.append(stop.value)
                    return
                outcome, error = None, None
                if isinstance(op, Emit):
                    yield op.item
                    continue
                try:
                    outcome = self._perform(op, source, path)
                except WorkflowClientError as exc:
                    error = exc
        finally:
            source.close()
            flow.close()

    def _run(self, flow: Flow[R]) -> R:
        result: list[R] = []
        for item in self._drive(flow, result=result):
            raise _not_a_flow_op(Emit(item))
        return result[0]

    def _follow(self, feed: Feed[T]) -> Generator[T, None, None]:
        yield from self._drive(flows.follow(feed, self._reconnects(feed)), feed.path)

    # -- events ---------------------------------------------------------------------------

    def start_workflow_with_events(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> EventsWorkflowStarted:
        """Start an events workflow of `n_steps` steps (`created` is False if it existed).

        Raises Conflict if the ID belongs to another kind of workflow.
        """
        return self._send(flows.start_events(workflow_id, n_steps, step_seconds))

    def get_workflow_event(self, workflow_id: str, key: str, timeout: float = 5) -> EventPublic:
        """The event's latest value; the server waits up to `timeout` s for it to be set.

        Raises NotFound if the workflow does not exist or the event is still not set.
        """
        return self._send(flows.get_event(workflow_id, key, timeout))

    def get_all_workflow_events(self, workflow_id: str) -> EventsPublic:
        """Every event the workflow has set (latest value of each), without waiting.

        Raises NotFound if the workflow does not exist.
        """
        return self._send(flows.get_all_events(workflow_id))

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
        return self._run(flows.poll_until_complete(workflow_id, timeout, interval, on_progress))

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
        return self._send(call)

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
        return self._send(flows.send_message(workflow_id, payload, topic, idempotency_key))

    # -- streaming ------------------------------------------------------------------------

    def start_workflow_with_streaming(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> StreamingWorkflowStarted:
        """Start a workflow that writes 3 + 2 * n_steps entries to `progress_stream`.

        Raises Conflict if the ID belongs to another kind of workflow.
        """
        return self._send(flows.start_streaming(workflow_id, n_steps, step_seconds))

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
        return self._send(flows.read_stream(workflow_id, offset, limit, key))

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
        return self._run(flows.read_stream_all(workflow_id, offset, page_size, key))

    def stream_live_updates(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> Generator[Any, None, None]:
        """Each stream value as the workflow writes it (pushed over SSE), until it closes.

        `iter_stream` without the offsets.
        """
        for item in self.iter_stream(workflow_id, key=key, offset=offset):
            yield item.value

    # -- live push (server-sent events) ---------------------------------------------------

    def iter_stream(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> Generator[StreamItem, None, None]:
        """Stream values from `offset` as they are written, until the stream is closed.

        Pushed over SSE. A dropped connection, or an `overflow`/`shutdown` from the server,
        is resumed where it stopped: no value is skipped or repeated. Raises NotFound for an
        unknown workflow, StreamDisconnected when reconnecting keeps failing.
        """
        return self._follow(flows.stream_feed(workflow_id, key, offset))

    def watch_events(self, workflow_id: str) -> Generator[EventChange, None, None]:
        """Every event's current value, then each change, until the workflow has finished.

        Reconnects and raises as `iter_stream` does.
        """
        return self._follow(flows.events_feed(workflow_id))

    def watch_status(self, workflow_id: str) -> Generator[WorkflowPublic, None, None]:
        """The workflow's status now and on each change; the last one carries its result.

        Reconnects and raises as `iter_stream` does.
        """
        return self._follow(flows.status_feed(workflow_id))

    # -- workflows ------------------------------------------------------------------------

    def get_workflow(self, workflow_id: str) -> WorkflowPublic:
        """Status, kind, timestamps, and the result or error once finished.

        Raises NotFound for an unknown workflow.
        """
        return self._send(flows.get_workflow(workflow_id))

    def wait_for_result(
        self, workflow_id: str, timeout: float = 60.0, interval: float = 0.2
    ) -> WorkflowPublic:
        """Poll until the workflow has finished and return it (see `.status`, `.result`).

        Raises ClientTimeout after `timeout` seconds, NotFound for an unknown workflow.
        """
        return self._run(flows.wait_for_result(workflow_id, timeout, interval))

    def list_workflows(
        self,
        status: WorkflowStatusName | None = None,
        kind: WorkflowKind | None = None,
        limit: int | None = None,
    ) -> WorkflowsPublic:
        """Recent workflows, newest first, optionally filtered by status and kind."""
        return self._send(flows.list_workflows(status, kind, limit))

    def cancel_workflow(self, workflow_id: str) -> WorkflowAction:
        """Cancel an unfinished workflow; raises Conflict if it already finished."""
        return self._send(flows.action(workflow_id, "cancel"))

    def resume_workflow(self, workflow_id: str) -> WorkflowAction:
        """Resume a cancelled or failed workflow; raises Conflict if it is not resumable."""
        return self._send(flows.action(workflow_id, "resume"))

    def health(self) -> HealthPublic:
        """The server's health report; `status` is "degraded" when the database is away."""
        return self._send(flows.health())


# ---------------------------------------------------------------------------------------------
# The asyncio client


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
    """The same API as `TypedWorkflowClient` for asyncio: coroutines and async iterators.

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

    async def _drive(
        self, flow: Flow[R], path: str = "", result: list[R] | None = None
    ) -> AsyncGenerator[Any, None]:
        """Run `flow`, yielding what it emits; its return value is appended to `result`."""
        source = _AsyncSource(self._http)
        outcome: Any = None
        error: WorkflowClientError | None = None
        try:
            while True:
                try:
                    op = flow.throw(error) if error is not None else flow.send(outcome)
                except StopIteration as stop:
                    if result is not None:
                        result.append(stop.value)
                    return
                outcome, error = None, None
                if isinstance(op, Emit):
                    yield op.item
                    continue
                try:
                    outcome = await self._perform(op, source, path)
                except WorkflowClientError as exc:
                    error = exc
        finally:
            await source.aclose()
            flow.close()

    async def _run(self, flow: Flow[R]) -> R:
        result: list[R] = []
        async with aclosing(self._drive(flow, result=result)) as emitted:
            async for item in emitted:
                raise _not_a_flow_op(Emit(item))
        return result[0]

    async def _follow(self, feed: Feed[T]) -> AsyncGenerator[T, None]:
        flow = flows.follow(feed, self._reconnects(feed))
        async with aclosing(self._drive(flow, feed.path)) as items:
            async for item in items:
                yield item

    # -- the same methods as TypedWorkflowClient (docstrings copied from it below) ----------

    async def start_workflow_with_events(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> EventsWorkflowStarted:
        return await self._send(flows.start_events(workflow_id, n_steps, step_seconds))

    async def get_workflow_event(
        self, workflow_id: str, key: str, timeout: float = 5
    ) -> EventPublic:
        return await self._send(flows.get_event(workflow_id, key, timeout))

    async def get_all_workflow_events(self, workflow_id: str) -> EventsPublic:
        return await self._send(flows.get_all_events(workflow_id))

    async def poll_until_complete(
        self,
        workflow_id: str,
        timeout: float = 60.0,
        interval: float = 0.5,
        on_progress: Callable[[EventsPublic], None] | None = None,
    ) -> EventsPublic:
        flow = flows.poll_until_complete(workflow_id, timeout, interval, on_progress)
        return await self._run(flow)

    async def start_workflow_with_messaging(
        self,
        workflow_id: str,
        n_steps: int,
        step_seconds: float | None = None,
        approval_timeout: float | None = None,
    ) -> MessagingWorkflowStarted:
        call = flows.start_messaging(workflow_id, n_steps, step_seconds, approval_timeout)
        return await self._send(call)

    async def send_approval(
        self,
        workflow_id: str,
        approved: bool = True,
        message: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageSent:
        payload = flows.approval(approved, message)
        return await self.send_custom_message(workflow_id, payload, idempotency_key=idempotency_key)

    async def send_custom_message(
        self,
        workflow_id: str,
        payload: Mapping[str, Any],
        topic: str = TOPIC_NOTIFICATION,
        idempotency_key: str | None = None,
    ) -> MessageSent:
        return await self._send(flows.send_message(workflow_id, payload, topic, idempotency_key))

    async def start_workflow_with_streaming(
        self, workflow_id: str, n_steps: int, step_seconds: float | None = None
    ) -> StreamingWorkflowStarted:
        return await self._send(flows.start_streaming(workflow_id, n_steps, step_seconds))

    async def read_stream(
        self,
        workflow_id: str,
        offset: int = 0,
        limit: int | None = None,
        key: str = STREAM_PROGRESS,
    ) -> StreamPage:
        return await self._send(flows.read_stream(workflow_id, offset, limit, key))

    async def read_stream_all(
        self,
        workflow_id: str,
        offset: int = 0,
        page_size: int | None = None,
        key: str = STREAM_PROGRESS,
    ) -> StreamPage:
        return await self._run(flows.read_stream_all(workflow_id, offset, page_size, key))

    async def stream_live_updates(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> AsyncGenerator[Any, None]:
        async with aclosing(self.iter_stream(workflow_id, key=key, offset=offset)) as items:
            async for item in items:
                yield item.value

    def iter_stream(
        self, workflow_id: str, key: str = STREAM_PROGRESS, offset: int = 0
    ) -> AsyncGenerator[StreamItem, None]:
        return self._follow(flows.stream_feed(workflow_id, key, offset))

    def watch_events(self, workflow_id: str) -> AsyncGenerator[EventChange, None]:
        return self._follow(flows.events_feed(workflow_id))

    def watch_status(self, workflow_id: str) -> AsyncGenerator[WorkflowPublic, None]:
        return self._follow(flows.status_feed(workflow_id))

    async def get_workflow(self, workflow_id: str) -> WorkflowPublic:
        return await self._send(flows.get_workflow(workflow_id))

    async def wait_for_result(
        self, workflow_id: str, timeout: float = 60.0, interval: float = 0.2
    ) -> WorkflowPublic:
        return await self._run(flows.wait_for_result(workflow_id, timeout, interval))

    async def list_workflows(
        self,
        status: WorkflowStatusName | None = None,
        kind: WorkflowKind | None = None,
        limit: int | None = None,
    ) -> WorkflowsPublic:
        return await self._send(flows.list_workflows(status, kind, limit))

    async def cancel_workflow(self, workflow_id: str) -> WorkflowAction:
        return await self._send(flows.action(workflow_id, "cancel"))

    async def resume_workflow(self, workflow_id: str) -> WorkflowAction:
        return await self._send(flows.action(workflow_id, "resume"))

    async def health(self) -> HealthPublic:
        return await self._send(flows.health())


def public_methods(cls: type) -> dict[str, Any]:
    """A client class's public methods by name."""
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


def _copy_docs(target: type, source: type) -> None:
    """Give `target`'s public methods the docstrings of `source`'s (one text for both)."""
    docs = public_methods(source)
    for name, method in public_methods(target).items():
        if method.__doc__ is None and name in docs:
            method.__doc__ = docs[name].__doc__


_copy_docs(AsyncWorkflowClient, TypedWorkflowClient)
