"""The typed clients without a server: answers, errors, live feeds and reconnects.

A fast tier: each test answers the client's requests from an `httpx.MockTransport` handler
(a scripted server), so parsing, error mapping, server-sent-event handling and the reconnect
logic are checked in milliseconds, for both clients (`kind`), and the flows of flows.py are
driven by hand with no I/O at all. The behaviour against a real server is in test_client.py.
"""

import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent

from tests.support import AsyncClientAsSync
from workflow_comm.client import (
    AsyncWorkflowClient,
    BadRequest,
    ClientTimeout,
    Conflict,
    ConnectionFailed,
    EventChange,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    StreamDisconnected,
    StreamItem,
    TooManyRequests,
    TypedWorkflowClient,
    Unauthorized,
    ValidationFailed,
    WorkflowClientError,
    flows,
)
from workflow_comm.client.typed import public_methods

Handler = Callable[[httpx.Request], httpx.Response]
BASE = "http://comm.test"


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def scripted(kind: str, handler: Handler, **options: Any) -> Iterator[TypedWorkflowClient]:
    """A client of that kind whose every request is answered by `handler`."""
    options = {"retry_backoff": 0.001, "max_backoff": 0.001, **options}
    transport = httpx.MockTransport(handler)
    if kind == "sync":
        with TypedWorkflowClient(BASE, transport=transport, **options) as client:
            yield client
    else:
        with AsyncClientAsSync(BASE, transport=transport, **options) as driven:
            yield driven  # type: ignore[misc]


def sse(*events: str) -> bytes:
    """A text/event-stream body from event blocks such as 'id: 0\\ndata: 1'."""
    return "".join(f"{event}\n\n" for event in events).encode()


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that sends `chunks`, then fails as a dropped connection would."""

    def __init__(self, chunks: list[bytes], then_drop: bool) -> None:
        self.chunks = chunks
        self.then_drop = then_drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.then_drop:
            raise httpx.ReadError("connection dropped")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.then_drop:
            raise httpx.ReadError("connection dropped")


def event_stream(body: bytes, then_drop: bool = False) -> httpx.Response:
    headers = {"content-type": "text/event-stream"}
    return httpx.Response(200, headers=headers, stream=_Body([body], then_drop))


WORKFLOW = {
    "workflow_id": "wf-1",
    "kind": "events",
    "status": "PENDING",
    "name": "workflow_with_events",
    "created_at": 1,
    "updated_at": 1,
    "completed_at": None,
    "executor_id": "e",
    "application_version": "v",
}


# -- answers and errors -----------------------------------------------------------------------


def test_an_answer_parses_into_its_model(kind: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path.startswith(b"/workflow-events/wf%201/progress?")
        assert request.url.params["timeout"] == "2.5"
        return httpx.Response(
            200, json={"workflow_id": "wf 1", "event_key": "progress", "value": 7}
        )

    with scripted(kind, handler) as client:
        event = client.get_workflow_event("wf 1", "progress", timeout=2.5)
    assert (event.workflow_id, event.value) == ("wf 1", 7)


def test_an_unreadable_answer_is_a_server_error(kind: str) -> None:
    with (
        scripted(kind, lambda request: httpx.Response(200, text="<html>")) as client,
        pytest.raises(ServerError, match="unreadable answer"),
    ):
        client.get_workflow("wf-1")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (413, PayloadTooLarge),
        (422, ValidationFailed),
        (429, TooManyRequests),
        (503, ServiceUnavailable),
        (500, ServerError),
        (502, ServerError),
        (418, WorkflowClientError),
    ],
)
def test_each_error_status_maps_to_its_class(
    kind: str, status: int, error: type[WorkflowClientError]
) -> None:
    body = {"detail": f"status {status}"}
    with (
        scripted(kind, lambda request: httpx.Response(status, json=body)) as client,
        pytest.raises(error) as caught,
    ):
        client.cancel_workflow("wf-1")
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert str(caught.value) == f"POST /workflows/wf-1/cancel -> {status}: status {status}"


def test_a_422_lists_each_field_and_a_503_carries_retry_after(kind: str) -> None:
    problems = [{"loc": ["path", "n_steps"], "msg": "too big", "type": "less_than_equal"}]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/workflow-stream/"):
            return httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "3"})
        return httpx.Response(422, json={"detail": problems})

    with scripted(kind, handler) as client:
        with pytest.raises(ValidationFailed) as invalid:
            client.start_workflow_with_events("wf-1", 5000)
        with pytest.raises(ServiceUnavailable) as busy:
            client.read_stream("wf-1")
    assert invalid.value.detail == problems
    assert str(invalid.value).endswith("-> 422: path.n_steps: too big")
    assert busy.value.retry_after == 3.0


@pytest.mark.parametrize(
    ("failure", "error"),
    [(httpx.ConnectError("refused"), ConnectionFailed), (httpx.ReadTimeout("slow"), ClientTimeout)],
)
def test_transport_failures_map_to_client_errors(
    kind: str, failure: Exception, error: type[WorkflowClientError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with scripted(kind, handler) as client, pytest.raises(error) as caught:
        client.list_workflows()
    assert caught.value.status_code is None
    assert isinstance(caught.value.__cause__, type(failure))


def test_requests_carry_the_api_key_idempotency_key_and_body(kind: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        payload = json.loads(request.content)
        answer = {"workflow_id": "wf-1", "message": "sent", "payload": payload, "topic": "t"}
        return httpx.Response(200, json=answer)

    with scripted(kind, handler, api_key="k-1") as client:
        sent = client.send_custom_message("wf-1", {"a": 1}, topic="t", idempotency_key="i-1")
    assert sent.payload == {"a": 1}
    request = seen[0]
    assert request.headers["Authorization"] == "Bearer k-1"
    assert request.headers["Idempotency-Key"] == "i-1"
    assert request.url.params["topic"] == "t"


# -- multi-request flows ------------------------------------------------------------------------


def test_wait_for_result_polls_until_a_final_status(kind: str) -> None:
    statuses = iter(["PENDING", "PENDING", "SUCCESS"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**WORKFLOW, "status": next(statuses), "result": 5})

    with scripted(kind, handler) as client:
        done = client.wait_for_result("wf-1", timeout=10, interval=0.001)
    assert (done.status, done.result) == ("SUCCESS", 5)
    assert next(statuses, None) is None, "it did not stop at the first final status"


def test_wait_for_result_raises_client_timeout(kind: str) -> None:
    with (
        scripted(kind, lambda request: httpx.Response(200, json=WORKFLOW)) as client,
        pytest.raises(ClientTimeout, match="not finished within 0.05s"),
    ):
        client.wait_for_result("wf-1", timeout=0.05, interval=0.01)


def test_poll_until_complete_reports_each_change_once(kind: str) -> None:
    steps = iter([("PENDING", {"progress": 0}), ("PENDING", {"progress": 0})])
    final = ("SUCCESS", {"progress": 100, "result": {"ok": True}})
    current: list[tuple[str, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/workflows/"):
            current[:] = [next(steps, final)]
            return httpx.Response(200, json={**WORKFLOW, "status": current[0][0]})
        return httpx.Response(200, json={"workflow_id": "wf-1", "events": current[0][1]})

    reported: list[dict[str, Any]] = []
    with scripted(kind, handler) as client:
        events = client.poll_until_complete(
            "wf-1", timeout=10, interval=0.001, on_progress=lambda e: reported.append(e.events)
        )
    assert events.events == final[1]
    assert reported == [{"progress": 0}, final[1]]


def test_read_stream_all_joins_pages(kind: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        values = list(range(offset, min(offset + 2, 5)))
        page = {
            "workflow_id": "wf-1",
            "stream_key": "progress_stream",
            "stream_values": values,
            "total_messages": len(values),
            "offset": offset,
            "next_offset": offset + len(values),
            "has_more": offset + len(values) < 5,
            "closed": offset + len(values) == 5,
        }
        return httpx.Response(200, json=page)

    with scripted(kind, handler) as client:
        page = client.read_stream_all("wf-1", page_size=2)
    assert page.stream_values == [0, 1, 2, 3, 4]
    assert (page.offset, page.next_offset, page.has_more, page.closed) == (0, 5, False, True)


# -- live feeds ---------------------------------------------------------------------------------


def test_iter_stream_resumes_after_a_drop_overflow_and_503(kind: str) -> None:
    """Four connections: two values then a drop; a 503; an overflow; the rest and `closed`.
    Every offset arrives once, in order, and each reconnect resumes where it stopped."""
    answers = iter(
        [
            lambda: event_stream(sse("id: 0\ndata: 0", "id: 1\ndata: 1"), then_drop=True),
            lambda: httpx.Response(503, json={"detail": "busy"}),
            lambda: event_stream(
                sse("id: 2\ndata: 2", 'event: overflow\ndata: {"resume_offset": 3}')
            ),
            lambda: event_stream(sse("id: 3\ndata: 3", "event: closed\ndata: {}")),
        ]
    )
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return next(answers)()

    with scripted(kind, handler) as client:
        items = list(client.iter_stream("wf-1", offset=0))
    assert items == [StreamItem(i, i) for i in range(4)]
    resumes = [(r.url.params["offset"], r.headers.get("Last-Event-ID")) for r in requests]
    assert resumes == [("0", None), ("2", "1"), ("2", "1"), ("3", "2")]


def test_a_feed_gives_up_after_max_retries(kind: str) -> None:
    with (
        scripted(kind, lambda r: httpx.Response(503, json={"detail": "full"}), max_retries=2) as c,
        pytest.raises(StreamDisconnected, match="gave up after 2 reconnects") as caught,
    ):
        list(c.watch_events("wf-1"))
    assert caught.value.status_code == 503


def test_a_feed_refused_for_good_raises_at_once(kind: str) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(404, json={"detail": "no such workflow"})

    with scripted(kind, handler) as client, pytest.raises(NotFound):
        list(client.watch_status("wf-1"))
    assert len(requests) == 1


def test_watch_events_and_status_items(kind: str) -> None:
    change = json.dumps({"key": "progress", "value": 50, "version": 3})
    status = json.dumps(WORKFLOW)
    done = json.dumps({**WORKFLOW, "status": "SUCCESS"})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/workflow-events/"):
            return event_stream(sse(f"id: 3\ndata: {change}", "event: closed\ndata: {}"))
        # The status feed repeats the last status in `closed`: it is handed out once.
        events = [f"data: {status}", f"data: {done}", f"event: closed\ndata: {done}"]
        return event_stream(sse(*events))

    with scripted(kind, handler) as client:
        assert list(client.watch_events("wf-1")) == [EventChange("progress", 50, 3)]
        assert [s.status for s in client.watch_status("wf-1")] == ["PENDING", "SUCCESS"]


def test_the_follow_flow_needs_no_io() -> None:
    """flows.follow, driven by hand: what it asks for, what it hands out, when it sleeps."""
    feed = flows.stream_feed("wf-1", "progress_stream", 0)
    flow = flows.follow(feed, flows.Reconnects("t", max_retries=1, backoff=0.5, max_backoff=1))
    assert next(flow) == flows.Open(feed)
    assert flow.send(None) is flows.NEXT_EVENT
    assert flow.send(ServerSentEvent(data="10", id="0")) == flows.Emit(StreamItem(0, 10))
    assert flow.send(None) is flows.NEXT_EVENT
    assert flow.throw(ConnectionFailed("dropped")) == flows.Sleep(0.5)
    assert flow.send(None) == flows.Open(feed)
    assert (feed.params["offset"], feed.headers()) == (1, {"Last-Event-ID": "0"})
    flow.send(None)
    with pytest.raises(StopIteration):
        flow.send(ServerSentEvent(event="closed", data="{}"))


# -- one API ------------------------------------------------------------------------------------


def test_both_typed_clients_have_the_same_methods_arguments_and_docs() -> None:
    sync, asynchronous = public_methods(TypedWorkflowClient), public_methods(AsyncWorkflowClient)
    sync.pop("close")
    asynchronous.pop("aclose")
    assert sorted(sync) == sorted(asynchronous)
    for name, method in sync.items():
        twin = asynchronous[name]
        assert inspect.signature(method).parameters == inspect.signature(twin).parameters, name
        assert method.__doc__ and method.__doc__ == twin.__doc__, name
