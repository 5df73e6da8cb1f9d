"""The typed Python clients (workflow_comm/client/) against a live server: sync, async, live push.

Every test talks to a real server process over HTTP; nothing is mocked. Each test that takes
`wc` or `kind` runs twice: with `TypedWorkflowClient`, and with `AsyncWorkflowClient` driven
through `AsyncClientAsSync` (tests/support.py), so both clients are held to one set of tests.
Tests marked `needs_own_server` start (and restart) servers of their own. The original
`WorkflowClient` is tested in test_client_original.py, the parts that need no server in
test_client_unit.py.
"""

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

import client_examples
from tests.support import ROOT, AsyncClientAsSync, OwnServer, ServerProcess, free_port, unique_id
from workflow_comm import client as client_module
from workflow_comm.client import (
    AsyncWorkflowClient,
    ClientTimeout,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    StreamDisconnected,
    TypedWorkflowClient,
    Unauthorized,
    ValidationFailed,
)
from workflow_comm.names import (
    EVENT_PROGRESS,
    EVENT_RESULT,
    EVENT_STATUS,
    MESSAGE_MAX_BYTES_DEFAULT,
    STATUS_COMPLETED,
    STATUS_REJECTED,
    STATUS_TIMED_OUT,
    STREAM_PROGRESS,
)
from workflow_comm.workflows import stream_entry_count

T = TypeVar("T")
WAIT = 30.0  # generous bound on any wait for a workflow to finish


CLIENT_KINDS = ("sync", "async")


@pytest.fixture(params=CLIENT_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Which typed client a test drives: TypedWorkflowClient or AsyncWorkflowClient."""
    return str(request.param)


@contextmanager
def open_client(kind: str, base_url: str, **options: Any) -> Iterator[TypedWorkflowClient]:
    """A client of that kind, with the blocking client's API either way."""
    if kind == "sync":
        with TypedWorkflowClient(base_url, **options) as client:
            yield client
    else:
        with AsyncClientAsSync(base_url, **options) as driven:
            yield driven  # type: ignore[misc]


@pytest.fixture
def wc(kind: str, base_url: str) -> Iterator[TypedWorkflowClient]:
    with open_client(kind, base_url) as client:
        yield client


def run_async(base_url: str, body: Callable[[AsyncWorkflowClient], Awaitable[T]]) -> T:
    """Run `body` with a fresh AsyncWorkflowClient in a fresh event loop."""

    async def main() -> T:
        async with AsyncWorkflowClient(base_url) as client:
            return await body(client)

    return asyncio.run(main())


def live_requests(log: list[httpx.Request]) -> dict[str, Any]:
    """httpx event hooks that record every request to a /live endpoint into `log`."""

    def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/live"):
            log.append(request)

    return {"request": [record]}


def assert_resumed_with_last_event_id(requests: list[httpx.Request]) -> None:
    """Reconnects happened, and from the first value received on, each sent Last-Event-ID.

    (A connection dropped before any value arrived rightly resumes from ?offset alone.)
    """
    resumed_at = [r.headers.get("Last-Event-ID") for r in requests[1:]]
    first = next((i for i, header in enumerate(resumed_at) if header), None)
    assert first is not None and all(resumed_at[first:]), f"Last-Event-ID: {resumed_at}"


# -- events --------------------------------------------------------------------------------


def test_start_workflow_with_events_returns_the_started_workflow(wc: TypedWorkflowClient) -> None:
    """start_workflow_with_events returns the parsed start answer of a new workflow."""
    wf = unique_id("ev")
    started = wc.start_workflow_with_events(wf, 2, step_seconds=0)
    assert (started.workflow_id, started.kind, started.created) == (wf, "events", True), started
    assert started.query_endpoints.all_events == f"/workflow-events/{wf}/all", started


def test_starting_an_existing_id_again_is_not_created(wc: TypedWorkflowClient) -> None:
    """A second start with the same ID and kind returns created=False, not an error."""
    wf = unique_id("ev")
    wc.start_workflow_with_events(wf, 1, step_seconds=0)
    again = wc.start_workflow_with_events(wf, 1, step_seconds=0)
    assert again.created is False, again


def test_get_workflow_event_waits_for_the_value(wc: TypedWorkflowClient) -> None:
    """get_workflow_event returns the result event once the server-side wait sees it set."""
    wf = unique_id("ev")
    wc.start_workflow_with_events(wf, 3, step_seconds=0.05)
    event = wc.get_workflow_event(wf, EVENT_RESULT, timeout=WAIT)
    fibs = [r["fibonacci"] for r in event.value["results"]]
    assert (event.event_key, fibs) == (EVENT_RESULT, [1, 1, 2]), event


def test_get_workflow_event_never_set_raises_not_found(wc: TypedWorkflowClient) -> None:
    """An event a finished workflow never set is a NotFound whose detail says 'is not set'."""
    wf = unique_id("ev")
    wc.start_workflow_with_events(wf, 1, step_seconds=0)
    wc.wait_for_result(wf, timeout=WAIT)
    with pytest.raises(NotFound) as caught:
        wc.get_workflow_event(wf, "no-such-key", timeout=1)
    assert "is not set" in str(caught.value.detail), caught.value.detail


def test_get_all_workflow_events_returns_every_key(wc: TypedWorkflowClient) -> None:
    """get_all_workflow_events returns status, progress and result of a finished workflow."""
    wf = unique_id("ev")
    wc.start_workflow_with_events(wf, 2, step_seconds=0)
    wc.wait_for_result(wf, timeout=WAIT)
    events = wc.get_all_workflow_events(wf).events
    assert events[EVENT_STATUS] == STATUS_COMPLETED, events
    assert events[EVENT_PROGRESS] == 100, events
    assert events[EVENT_RESULT]["total_steps"] == 2, events


def test_poll_until_complete_reports_progress_and_returns_final_events(
    wc: TypedWorkflowClient,
) -> None:
    """poll_until_complete calls on_progress on changes and returns the completed events."""
    wf = unique_id("ev")
    wc.start_workflow_with_events(wf, 3, step_seconds=0.1)
    seen: list[Any] = []
    final = wc.poll_until_complete(
        wf, timeout=WAIT, interval=0.05, on_progress=lambda e: seen.append(e.events)
    )
    assert final.events[EVENT_STATUS] == STATUS_COMPLETED, final.events
    assert final.events[EVENT_RESULT]["total_steps"] == 3, final.events
    assert seen and seen[-1] == final.events, f"{len(seen)} progress calls, last {seen[-1:]}"


def test_poll_until_complete_times_out(wc: TypedWorkflowClient) -> None:
    """poll_until_complete raises ClientTimeout (a TimeoutError) when the deadline passes."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 1, step_seconds=0, approval_timeout=60)
    began = time.monotonic()
    with pytest.raises(ClientTimeout):
        wc.poll_until_complete(wf, timeout=0.3, interval=0.05)
    elapsed = time.monotonic() - began
    assert elapsed < 10, f"gave up after {elapsed:.2f}s"
    wc.cancel_workflow(wf)


# -- messaging -----------------------------------------------------------------------------


def test_start_workflow_with_messaging_passes_approval_timeout(wc: TypedWorkflowClient) -> None:
    """start_workflow_with_messaging sends approval_timeout; the answer echoes it."""
    wf = unique_id("msg")
    started = wc.start_workflow_with_messaging(wf, 1, step_seconds=0, approval_timeout=42.5)
    assert (started.kind, started.approval_timeout) == ("messaging", 42.5), started
    wc.cancel_workflow(wf)


def test_send_approval_runs_the_steps(wc: TypedWorkflowClient) -> None:
    """send_approval() approves: the workflow runs its steps and completes."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 2, step_seconds=0)
    sent = wc.send_approval(wf, message="ship it")
    assert sent.payload == {"approved": True, "message": "ship it"}, sent
    done = wc.wait_for_result(wf, timeout=WAIT)
    assert done.result["outcome"] == STATUS_COMPLETED, done.result


def test_send_approval_false_rejects(wc: TypedWorkflowClient) -> None:
    """send_approval(approved=False) makes the workflow end as rejected."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 2, step_seconds=0)
    wc.send_approval(wf, approved=False)
    done = wc.wait_for_result(wf, timeout=WAIT)
    assert done.result["outcome"] == STATUS_REJECTED, done.result


def test_send_custom_message_on_another_topic_does_not_approve(wc: TypedWorkflowClient) -> None:
    """A message on another topic never reaches the approval wait, which then times out."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 1, step_seconds=0, approval_timeout=0.5)
    sent = wc.send_custom_message(wf, {"approved": True}, topic="elsewhere")
    assert sent.topic == "elsewhere", sent
    done = wc.wait_for_result(wf, timeout=WAIT)
    assert done.result["outcome"] == STATUS_TIMED_OUT, done.result


def test_send_custom_message_sends_the_idempotency_key(wc: TypedWorkflowClient) -> None:
    """The idempotency_key argument reaches the server (it echoes the header back)."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 1, step_seconds=0)
    sent = wc.send_custom_message(wf, {"approved": True}, idempotency_key="key-1")
    assert sent.idempotency_key == "key-1", sent


# -- streaming -----------------------------------------------------------------------------


def test_read_stream_returns_one_page(wc: TypedWorkflowClient) -> None:
    """read_stream with a limit returns that many values and says more are there."""
    wf = unique_id("st")
    wc.start_workflow_with_streaming(wf, 3, step_seconds=0)
    wc.wait_for_result(wf, timeout=WAIT)
    page = wc.read_stream(wf, offset=1, limit=2)
    assert (page.offset, page.total_messages, page.next_offset) == (1, 2, 3), page
    assert page.has_more and not page.closed, page


def test_read_stream_all_joins_every_page(wc: TypedWorkflowClient) -> None:
    """read_stream_all follows next_offset page by page and returns the whole closed stream."""
    wf = unique_id("st")
    wc.start_workflow_with_streaming(wf, 3, step_seconds=0)
    wc.wait_for_result(wf, timeout=WAIT)
    whole = wc.read_stream_all(wf, page_size=2)
    types = [v["type"] for v in whole.stream_values]
    assert len(types) == stream_entry_count(3), types
    assert (types[0], types[-1], whole.closed) == ("start", "complete", True), whole


# -- workflows -----------------------------------------------------------------------------


def test_get_workflow_returns_status_and_result(wc: TypedWorkflowClient) -> None:
    """get_workflow describes a finished workflow with its kind, status and result."""
    wf = unique_id("ev")
    wc.start_workflow_with_events(wf, 1, step_seconds=0)
    wc.wait_for_result(wf, timeout=WAIT)
    workflow = wc.get_workflow(wf)
    assert (workflow.kind, workflow.status) == ("events", "SUCCESS"), workflow
    assert workflow.result["total_steps"] == 1, workflow


def test_wait_for_result_times_out(wc: TypedWorkflowClient) -> None:
    """wait_for_result raises ClientTimeout while the workflow keeps waiting."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 1, step_seconds=0, approval_timeout=60)
    with pytest.raises(ClientTimeout):
        wc.wait_for_result(wf, timeout=0.3, interval=0.05)
    wc.cancel_workflow(wf)


def test_list_workflows_filters_by_kind(wc: TypedWorkflowClient) -> None:
    """list_workflows(kind=...) returns only that kind, newest first."""
    wf = unique_id("st")
    wc.start_workflow_with_streaming(wf, 1, step_seconds=0)
    listed = wc.list_workflows(kind="streaming", limit=20)
    assert {w.kind for w in listed.data} == {"streaming"}, listed
    assert wf in [w.workflow_id for w in listed.data], listed
    assert listed.count == len(listed.data), listed


def test_list_workflows_filters_by_application(wc: TypedWorkflowClient) -> None:
    """list_workflows(app=...) lists that DBOS application's workflows; an application the
    server does not serve answers an empty list."""
    wf = unique_id("st")
    wc.start_workflow_with_streaming(wf, 1, step_seconds=0)
    app = wc.get_workflow(wf).application_name
    assert app, "the status names the workflow's DBOS application"
    listed = wc.list_workflows(app=app, limit=50)
    assert wf in [w.workflow_id for w in listed.data], listed
    assert {w.application_name for w in listed.data} == {app}, listed
    assert wc.list_workflows(app=unique_id("not-served")).count == 0


def test_list_event_and_stream_keys(wc: TypedWorkflowClient) -> None:
    """list_event_keys and list_stream_keys name what a finished workflow wrote."""
    wf = unique_id("st")
    wc.start_workflow_with_streaming(wf, 2, step_seconds=0)
    wc.wait_for_result(wf, timeout=WAIT)
    event_keys = wc.list_event_keys(wf)
    assert event_keys.workflow_id == wf and event_keys.count == len(event_keys.data)
    assert sorted(wc.get_all_workflow_events(wf).events) == event_keys.data, event_keys
    stream_keys = wc.list_stream_keys(wf)
    assert [(s.key, s.closed) for s in stream_keys.data] == [(STREAM_PROGRESS, True)], stream_keys
    assert stream_keys.data[0].length == wc.read_stream_all(wf).total_messages, stream_keys
    with pytest.raises(NotFound):
        wc.list_stream_keys(unique_id("missing"))
    with pytest.raises(NotFound):
        wc.list_event_keys(unique_id("missing"))


def test_cancel_workflow_cancels(wc: TypedWorkflowClient) -> None:
    """cancel_workflow stops a waiting workflow: it is CANCELLED."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 1, step_seconds=0, approval_timeout=60)
    action = wc.cancel_workflow(wf)
    assert action.status == "CANCELLED", action
    assert wc.get_workflow(wf).status == "CANCELLED"


def test_resume_workflow_continues_a_cancelled_workflow(wc: TypedWorkflowClient) -> None:
    """resume_workflow restarts a cancelled workflow, which can then be approved."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 1, step_seconds=0, approval_timeout=60)
    wc.cancel_workflow(wf)
    action = wc.resume_workflow(wf)
    assert action.status in ("PENDING", "ENQUEUED"), action
    wc.send_approval(wf)
    done = wc.wait_for_result(wf, timeout=WAIT)
    assert done.status == "SUCCESS", done


def test_health_reports_ok(wc: TypedWorkflowClient) -> None:
    """health() parses the report of a server whose database answers."""
    health = wc.health()
    assert (health.status, health.database.reachable) == ("ok", True), health


# -- error mapping -------------------------------------------------------------------------


def test_unknown_workflow_raises_not_found(wc: TypedWorkflowClient) -> None:
    """A 404 becomes NotFound carrying the status code and the server's detail."""
    with pytest.raises(NotFound) as caught:
        wc.get_workflow(unique_id("missing"))
    assert caught.value.status_code == 404, caught.value.status_code
    assert "does not exist" in caught.value.detail, caught.value.detail


def test_id_of_another_kind_raises_conflict(wc: TypedWorkflowClient) -> None:
    """Starting a streaming workflow under an events workflow's ID is a 409 Conflict."""
    wf = unique_id("ev")
    wc.start_workflow_with_events(wf, 1, step_seconds=0)
    with pytest.raises(Conflict) as caught:
        wc.start_workflow_with_streaming(wf, 1, step_seconds=0)
    assert caught.value.status_code == 409, caught.value


def test_cancelling_a_finished_workflow_raises_conflict(wc: TypedWorkflowClient) -> None:
    """cancel_workflow on a finished workflow is a 409 Conflict that names its status."""
    wf = unique_id("ev")
    wc.start_workflow_with_events(wf, 1, step_seconds=0)
    wc.wait_for_result(wf, timeout=WAIT)
    with pytest.raises(Conflict) as caught:
        wc.cancel_workflow(wf)
    assert "SUCCESS" in caught.value.detail, caught.value.detail


def test_oversized_message_raises_payload_too_large(wc: TypedWorkflowClient) -> None:
    """A body over the server's limit is a 413 PayloadTooLarge."""
    wf = unique_id("msg")
    wc.start_workflow_with_messaging(wf, 1, step_seconds=0)
    with pytest.raises(PayloadTooLarge) as caught:
        wc.send_custom_message(wf, {"blob": "x" * (MESSAGE_MAX_BYTES_DEFAULT + 1)})
    assert caught.value.status_code == 413, caught.value
    wc.cancel_workflow(wf)


def test_out_of_bounds_parameter_raises_validation_failed(wc: TypedWorkflowClient) -> None:
    """A 422 becomes ValidationFailed; its detail lists the field and the message names it."""
    with pytest.raises(ValidationFailed) as caught:
        wc.start_workflow_with_events(unique_id("ev"), 0)
    fields = [problem["loc"][-1] for problem in caught.value.detail]
    assert fields == ["n_steps"], caught.value.detail
    assert "n_steps" in str(caught.value), str(caught.value)


def test_unreachable_server_raises_connection_failed(kind: str) -> None:
    """Nobody listening is a ConnectionFailed (a ConnectionError), not a raw httpx error."""
    with (
        open_client(kind, f"http://127.0.0.1:{free_port()}", timeout=5) as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        client.health()
    assert isinstance(caught.value, ConnectionError), type(caught.value).__mro__


# -- live push (server-sent events) --------------------------------------------------------


def test_iter_stream_yields_every_offset_until_closed(wc: TypedWorkflowClient) -> None:
    """iter_stream yields offsets 0..n-1 in order with their values, and stops at `closed`."""
    wf = unique_id("live")
    wc.start_workflow_with_streaming(wf, 3, step_seconds=0.05)
    items = list(wc.iter_stream(wf))
    assert [i.offset for i in items] == list(range(stream_entry_count(3))), items
    assert (items[0].value["type"], items[-1].value["type"]) == ("start", "complete"), items


def test_iter_stream_starts_at_the_given_offset(wc: TypedWorkflowClient) -> None:
    """iter_stream(offset=k) begins at offset k."""
    wf = unique_id("live")
    wc.start_workflow_with_streaming(wf, 2, step_seconds=0)
    offsets = [i.offset for i in wc.iter_stream(wf, offset=4)]
    assert offsets == list(range(4, stream_entry_count(2))), offsets


def test_iter_stream_resumes_after_dropped_connections(kind: str, base_url: str) -> None:
    """Connections that go silent past sse_read_timeout are dropped and resumed with
    Last-Event-ID: every offset arrives exactly once, in order."""
    requests: list[httpx.Request] = []
    with open_client(
        kind,
        base_url,
        sse_read_timeout=0.15,
        retry_backoff=0.01,
        max_backoff=0.1,
        max_retries=100,
        event_hooks=live_requests(requests),
    ) as client:
        wf = unique_id("live")
        # Silences of 1 s between values: the first connection opens while the stream is
        # being written, however slow, and every gap outlasts sse_read_timeout.
        client.start_workflow_with_streaming(wf, 3, step_seconds=1.0)
        offsets = [i.offset for i in client.iter_stream(wf)]
    assert offsets == list(range(stream_entry_count(3))), offsets
    assert_resumed_with_last_event_id(requests)


def test_iter_stream_unknown_workflow_raises_not_found(wc: TypedWorkflowClient) -> None:
    """A live stream of an unknown workflow is a NotFound, not a retry loop."""
    with pytest.raises(NotFound):
        list(wc.iter_stream(unique_id("missing")))


def test_stream_live_updates_yields_the_values(wc: TypedWorkflowClient) -> None:
    """stream_live_updates yields the stream's values themselves, through `complete`."""
    wf = unique_id("live")
    wc.start_workflow_with_streaming(wf, 2, step_seconds=0)
    types = [value["type"] for value in wc.stream_live_updates(wf)]
    assert types == ["start", "progress", "result", "progress", "result", "summary", "complete"]


def test_watch_events_yields_changes_until_the_workflow_ends(wc: TypedWorkflowClient) -> None:
    """watch_events yields {key, value, version} with rising versions, ending at completed."""
    wf = unique_id("watch")
    wc.start_workflow_with_events(wf, 2, step_seconds=0.05)
    changes = list(wc.watch_events(wf))
    versions = [c.version for c in changes]
    assert versions == sorted(set(versions)), versions
    last = {c.key: c.value for c in changes}
    assert last[EVENT_STATUS] == STATUS_COMPLETED, last
    assert last[EVENT_PROGRESS] == 100, last


def test_watch_status_ends_with_the_result(wc: TypedWorkflowClient) -> None:
    """watch_status yields status changes; the last is SUCCESS with the workflow's result."""
    wf = unique_id("watch")
    wc.start_workflow_with_events(wf, 2, step_seconds=0.05)
    statuses = list(wc.watch_status(wf))
    assert statuses[-1].status == "SUCCESS", [s.status for s in statuses]
    assert statuses[-1].result["total_steps"] == 2, statuses[-1]
    assert len(statuses) == len({s.model_dump_json() for s in statuses}), "repeated status"


@pytest.mark.needs_own_server
def test_iter_stream_resumes_across_a_server_restart(kind: str, tmp_path: Path) -> None:
    """A server stopped mid-stream and restarted: the client reconnects with Last-Event-ID
    and the recovered workflow's stream arrives complete, each offset once."""
    executor = unique_id("executor")
    first = ServerProcess(None, executor_id=executor, workdir=tmp_path).start()
    second: ServerProcess | None = None
    requests: list[httpx.Request] = []
    offsets: list[int] = []
    try:
        with open_client(
            kind,
            first.base_url,
            max_retries=40,
            retry_backoff=0.05,
            max_backoff=0.25,
            event_hooks=live_requests(requests),
        ) as client:
            wf = unique_id("restart")
            # 6 s of stream: the stop after offset 2 (about 1 s in) lands well before its end.
            client.start_workflow_with_streaming(wf, 6, step_seconds=1.0)
            for item in client.iter_stream(wf):
                offsets.append(item.offset)
                if item.offset == 2 and second is None:
                    first.stop()
                    second = ServerProcess(
                        None, executor_id=executor, workdir=tmp_path, port=first.port
                    ).start()
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert offsets == list(range(stream_entry_count(6))), offsets
    assert second is not None, "the stream ended before the restart"
    resumed_at = [r.headers.get("Last-Event-ID") for r in requests[1:]]
    assert resumed_at and all(int(i) >= 2 for i in resumed_at), f"reconnects: {resumed_at}"


@pytest.mark.needs_own_server
def test_live_connection_limit_is_retried_then_reported(kind: str, tmp_path: Path) -> None:
    """At the server's live-connection limit (503), iter_stream retries with backoff and,
    if no slot frees up, raises StreamDisconnected carrying the 503."""
    env = {"COMM_MAX_LIVE_CONNECTIONS": "1"}
    with (
        ServerProcess(None, workdir=tmp_path, env=env) as server,
        open_client(
            kind, server.base_url, max_retries=2, retry_backoff=0.05, max_backoff=0.1
        ) as client,
    ):
        wf = unique_id("limit")
        client.start_workflow_with_messaging(wf, 1, step_seconds=0, approval_timeout=60)
        holder = client.watch_status(wf)
        next(holder)  # holds the only live connection
        with pytest.raises(StreamDisconnected) as caught:
            list(client.iter_stream(wf))
        holder.close()
        client.cancel_workflow(wf)
    assert caught.value.status_code == 503, caught.value


# -- async client --------------------------------------------------------------------------


def test_async_client_runs_workflows_concurrently(base_url: str) -> None:
    """Five workflows driven with asyncio.gather overlap: each started before any finished."""
    count = 5

    async def body(client: AsyncWorkflowClient) -> list[Any]:
        async def one(i: int) -> Any:
            wf = unique_id(f"conc{i}")
            # 4 s each: the five concurrent starts all land before the first could finish.
            await client.start_workflow_with_events(wf, 2, step_seconds=2.0)
            return await client.wait_for_result(wf, timeout=WAIT, interval=0.05)

        return await asyncio.gather(*(one(i) for i in range(count)))

    results = run_async(base_url, body)
    assert [r.status for r in results] == ["SUCCESS"] * count, results
    last_start = max(r.created_at for r in results)
    first_end = min(r.completed_at for r in results)
    assert last_start < first_end, f"last started at {last_start}, first ended at {first_end}"


# -- the examples script -------------------------------------------------------------------


def test_client_examples_reexports_the_clients() -> None:
    """`from client_examples import WorkflowClient` gives the clients of workflow_comm.client."""
    assert client_examples.WorkflowClient is client_module.WorkflowClient
    assert client_examples.TypedWorkflowClient is client_module.TypedWorkflowClient
    assert client_examples.AsyncWorkflowClient is client_module.AsyncWorkflowClient


def test_client_examples_script_runs_every_example(base_url: str) -> None:
    """`python client_examples.py --base-url URL --step-seconds 0` runs all 9 and exits 0."""
    done = subprocess.run(
        [sys.executable, "client_examples.py", "--base-url", base_url, "--step-seconds", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}:\n{output[-3000:]}"
    for number in range(1, 10):
        assert f"--- Example {number} ok" in output, f"example {number}:\n{output[-3000:]}"
    assert "All 9 examples passed." in output, output[-3000:]


# -- API keys ------------------------------------------------------------------------------

WRITE_KEY = secrets.token_urlsafe(24)
READ_KEY = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def keyed_server(own_server: OwnServer) -> ServerProcess:
    """A server of our own that requires API keys: one write key and one read key."""
    return own_server(env={"COMM_API_KEYS": f"{WRITE_KEY}:write,{READ_KEY}:read"})


@pytest.mark.needs_own_server
def test_api_key_write_starts_and_sends(kind: str, keyed_server: ServerProcess) -> None:
    """With a write key the client starts a messaging workflow and approves it."""
    with open_client(kind, keyed_server.base_url, api_key=WRITE_KEY) as client:
        wf = unique_id("key")
        client.start_workflow_with_messaging(wf, 2, step_seconds=0)
        client.send_approval(wf)
        done = client.wait_for_result(wf, timeout=WAIT)
    assert done.result["outcome"] == STATUS_COMPLETED, done.result


@pytest.mark.needs_own_server
def test_api_key_write_follows_the_live_stream(kind: str, keyed_server: ServerProcess) -> None:
    """The key goes on the SSE requests too, as a header: iter_stream gets every offset."""
    requests: list[httpx.Request] = []
    with open_client(
        kind, keyed_server.base_url, api_key=WRITE_KEY, event_hooks=live_requests(requests)
    ) as client:
        wf = unique_id("key")
        client.start_workflow_with_streaming(wf, 3, step_seconds=0)
        offsets = [item.offset for item in client.iter_stream(wf)]
    assert offsets == list(range(stream_entry_count(3))), offsets
    sent = [(r.headers.get("Authorization"), r.url.params.get("api_key")) for r in requests]
    assert sent == [(f"Bearer {WRITE_KEY}", None)], "live request did not carry the key"


@pytest.mark.needs_own_server
def test_api_key_read_only_may_read_but_start_raises_forbidden(
    kind: str, keyed_server: ServerProcess
) -> None:
    """A read key lists workflows; starting one raises Forbidden carrying the 403."""
    with open_client(kind, keyed_server.base_url, api_key=READ_KEY) as client:
        client.list_workflows(limit=1)
        with pytest.raises(Forbidden) as caught:
            client.start_workflow_with_events(unique_id("key"), 1, step_seconds=0)
    assert caught.value.status_code == 403, caught.value


@pytest.mark.needs_own_server
def test_api_key_missing_raises_unauthorized(kind: str, keyed_server: ServerProcess) -> None:
    """Without a key, starting raises Unauthorized carrying the 401 and the server's words."""
    with (
        open_client(kind, keyed_server.base_url) as client,
        pytest.raises(Unauthorized) as caught,
    ):
        client.start_workflow_with_events(unique_id("key"), 1, step_seconds=0)
    assert caught.value.status_code == 401, caught.value
    assert "API key is required" in str(caught.value.detail), caught.value.detail


@pytest.mark.needs_own_server
def test_api_key_wrong_on_a_live_stream_raises_unauthorized_at_once(
    kind: str, keyed_server: ServerProcess
) -> None:
    """A live stream with an unknown key raises Unauthorized on the first answer: no retries."""
    requests: list[httpx.Request] = []
    with (
        open_client(
            kind, keyed_server.base_url, api_key="not-a-key", event_hooks=live_requests(requests)
        ) as client,
        pytest.raises(Unauthorized) as caught,
    ):
        next(client.iter_stream(unique_id("key")))
    assert "not valid" in str(caught.value.detail), caught.value.detail
    assert len(requests) == 1, f"{len(requests)} live requests"


@pytest.mark.needs_own_server
def test_api_key_client_examples_take_it_from_the_environment(keyed_server: ServerProcess) -> None:
    """`COMM_API_KEY=<key> python client_examples.py` uses the key (the --api-key default)."""
    done = subprocess.run(
        [sys.executable, "client_examples.py", "--base-url", keyed_server.base_url]
        + ["--step-seconds", "0", "--only", "5"],
        cwd=ROOT,
        env={**os.environ, "COMM_API_KEY": WRITE_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}:\n{output[-3000:]}"
    assert "--- Example 5 ok" in output, output[-3000:]
    assert WRITE_KEY not in output, "the examples printed the key"
