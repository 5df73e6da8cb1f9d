"""End-to-end tests: every endpoint over HTTP, against a live server process and a live database.

By default pytest starts a throwaway PostgreSQL and the server on it (plus a second server on
the SQLite default for the tests marked `both_backends`), then drives the HTTP API with httpx:

    .venv/bin/pytest test_communication.py -q
    .venv/bin/pytest test_communication.py -q -s      # also print the measured latencies

Like the original script, it also runs as a program against a server someone already started;
every argument goes on to pytest, and conftest.py's --base-url option does the rest:

    python server.py --port 8000 &
    python test_communication.py --base-url http://localhost:8000 -q

Each test starts its own workflows under a fresh ID, so the suite can share a server with
other users. Waits are bounded polls (`wait_until`); the only timed assertions are generous
"never blocks" bounds, and every assertion message carries the measured value.
"""

import asyncio
import json
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT, UvicornServer, fibonacci_table, unique_id, wait_until
from workflow_comm import names

TERMINAL = names.TERMINAL_STATUSES
# F(1)..F(10), written out: the server's arithmetic is checked against independent values.
FIBONACCI_1_TO_10 = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]


# ---------------------------------------------------------------- helpers


def start(client: httpx.Client, kind: str, workflow_id: str, n_steps: int, **params: Any) -> Any:
    """POST /start-workflow-{kind}/...; asserts a 200 and returns the body."""
    response = client.post(f"/start-workflow-{kind}/{workflow_id}/{n_steps}", params=params)
    assert response.status_code == 200, f"start {kind} {workflow_id}: {response.text}"
    return response.json()


def get_workflow(client: httpx.Client, workflow_id: str) -> Any:
    response = client.get(f"/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_finished(client: httpx.Client, workflow_id: str, timeout: float = 30.0) -> Any:
    """Poll GET /workflows/{id} until the workflow is terminal; returns its last description."""

    def finished() -> Any:
        workflow = get_workflow(client, workflow_id)
        return workflow if workflow["status"] in TERMINAL else None

    return wait_until(finished, timeout=timeout, what=f"workflow {workflow_id} to finish")


def get_event(client: httpx.Client, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
    """GET /workflow-events/{id}/{key}; asserts a 200 and returns the value.

    The server answers as soon as the event is set; `timeout` only bounds how long a slow
    (loaded) server may take to get there."""
    response = client.get(f"/workflow-events/{workflow_id}/{key}", params={"timeout": timeout})
    assert response.status_code == 200, f"event {key} of {workflow_id}: {response.text}"
    body = response.json()
    assert body["workflow_id"] == workflow_id and body["event_key"] == key, body
    return body["value"]


def wait_event(client: httpx.Client, workflow_id: str, key: str, value: Any) -> None:
    """Poll the event until it holds `value`."""
    wait_until(
        lambda: get_event(client, workflow_id, key) == value,
        timeout=30.0,
        what=f"event {key}={value!r} on {workflow_id}",
    )


def read_stream(client: httpx.Client, workflow_id: str, **params: Any) -> Any:
    response = client.get(f"/workflow-stream/{workflow_id}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def send(
    client: httpx.Client, workflow_id: str, payload: Any, key: str | None = None, **params: Any
) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    response = client.post(
        f"/send-message/{workflow_id}", json=payload, params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, detail_contains: str = "") -> str:
    """Asserts the status and a JSON body with a `detail`; returns the detail as text."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, "
        f"got {response.status_code} {response.text[:300]}"
    )
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert "detail" in body, body
    detail = json.dumps(body["detail"]) if not isinstance(body["detail"], str) else body["detail"]
    assert detail_contains in detail, f"{detail_contains!r} not in {detail!r}"
    return detail


def waiting_messaging_workflow(client: httpx.Client, approval_timeout: float = 120.0) -> str:
    """A messaging workflow that has reached its recv and waits for approval."""
    workflow_id = unique_id("waiting")
    start(client, "messaging", workflow_id, 2, step_seconds=0, approval_timeout=approval_timeout)
    wait_event(client, workflow_id, names.EVENT_STATUS, names.STATUS_WAITING)
    return workflow_id


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def long_stream(base_url: str, backend: str) -> str | None:
    """A streaming workflow of N_STEPS_MAX steps: the longest stream this server writes.

    Started when the module starts (autouse), so its 10-20 s of work overlaps the other
    tests; the tests that read it wait for it to finish. Not on SQLite: the long-stream
    tests run on Postgres (or --base-url) only, to keep the suite fast.
    """
    if backend == "sqlite":
        return None
    workflow_id = unique_id("long-stream")
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        start(http, "streaming", workflow_id, names.N_STEPS_MAX, step_seconds=0)
    return workflow_id


@pytest.fixture
def finished_long_stream(client: httpx.Client, long_stream: str | None) -> str:
    """The long stream's workflow ID, once it has finished."""
    assert long_stream is not None
    workflow = wait_finished(client, long_stream, timeout=120.0)
    assert workflow["status"] == "SUCCESS", workflow
    return long_stream


# ---------------------------------------------------------------- events


@pytest.mark.both_backends
def test_events_start_returns_query_endpoints(client: httpx.Client) -> None:
    """Starting an events workflow answers with its ID, kind and the URLs to query."""
    workflow_id = unique_id("events")
    body = start(client, "events", workflow_id, 3, step_seconds=0)
    base = f"/workflow-events/{workflow_id}"
    assert body["workflow_id"] == workflow_id
    assert body["kind"] == "events" and body["created"] is True, body
    assert body["status_endpoint"] == f"/workflows/{workflow_id}"
    assert body["query_endpoints"] == {
        "progress": f"{base}/{names.EVENT_PROGRESS}",
        "status": f"{base}/{names.EVENT_STATUS}",
        "result": f"{base}/{names.EVENT_RESULT}",
        "all_events": f"{base}/all",
    }
    assert wait_finished(client, workflow_id)["status"] == "SUCCESS"


@pytest.mark.both_backends
def test_events_progress_is_monotonic_and_reaches_100(client: httpx.Client) -> None:
    """Polling `progress` while the workflow runs sees it rise step by step, never fall, to 100."""
    workflow_id = unique_id("progress")
    # Steps of a second: each progress value lasts long enough to be seen on a loaded machine.
    start(client, "events", workflow_id, 5, step_seconds=1.0)
    seen: list[int] = []

    def poll() -> bool:
        seen.append(get_event(client, workflow_id, names.EVENT_PROGRESS))
        return seen[-1] == 100

    wait_until(poll, timeout=30.0, what="progress 100")
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert set(seen) <= {0, 20, 40, 60, 80, 100}, f"unexpected progress values: {set(seen)}"
    assert len(set(seen)) >= 3, (
        f"saw too few intermediate values while running: {sorted(set(seen))}"
    )


@pytest.mark.both_backends
def test_events_status_follows_the_steps_to_completed(client: httpx.Client) -> None:
    """`status` goes started -> processing_step_1..n -> completed, in that order."""
    workflow_id = unique_id("status")
    n_steps = 3
    start(client, "events", workflow_id, n_steps, step_seconds=1.0)  # long enough to be seen
    order = [names.STATUS_STARTED]
    order += [names.status_processing(step) for step in range(1, n_steps + 1)]
    order += [names.STATUS_COMPLETED]
    seen: list[str] = []

    def poll() -> bool:
        seen.append(get_event(client, workflow_id, names.EVENT_STATUS))
        return seen[-1] == names.STATUS_COMPLETED

    wait_until(poll, timeout=30.0, what="status completed")
    assert set(seen) <= set(order), f"unexpected status values: {seen}"
    positions = [order.index(status) for status in seen]
    assert positions == sorted(positions), f"status went backwards: {seen}"
    assert any(status.startswith("processing_step_") for status in seen), seen


@pytest.mark.both_backends
def test_events_result_has_exact_fibonacci_values(client: httpx.Client) -> None:
    """`result` holds total_steps and F(1)..F(n) exactly; GET waits for it to be set."""
    workflow_id = unique_id("result")
    start(client, "events", workflow_id, 10, step_seconds=0)
    result = get_event(client, workflow_id, names.EVENT_RESULT, timeout=30.0)
    assert result["total_steps"] == 10, result
    assert result["results"] == [
        {"n": n, "fibonacci": f} for n, f in enumerate(FIBONACCI_1_TO_10, start=1)
    ], result


@pytest.mark.both_backends
def test_events_all_returns_final_values(client: httpx.Client) -> None:
    """GET /workflow-events/{id}/all returns the latest value of every event, at once."""
    workflow_id = unique_id("all")
    start(client, "events", workflow_id, 4, step_seconds=0)
    wait_finished(client, workflow_id)
    response = client.get(f"/workflow-events/{workflow_id}/all")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "workflow_id": workflow_id,
        "events": {
            names.EVENT_STATUS: names.STATUS_COMPLETED,
            names.EVENT_PROGRESS: 100,
            names.EVENT_RESULT: {"total_steps": 4, "results": fibonacci_table(4)},
        },
    }


@pytest.mark.both_backends
def test_workflow_status_describes_finished_workflow(client: httpx.Client) -> None:
    """GET /workflows/{id} of a finished workflow: kind, SUCCESS, times and the result."""
    workflow_id = unique_id("described")
    start(client, "events", workflow_id, 2, step_seconds=0)
    workflow = wait_finished(client, workflow_id)
    assert workflow["workflow_id"] == workflow_id
    assert workflow["kind"] == "events" and workflow["status"] == "SUCCESS", workflow
    assert workflow["name"] == "workflow_with_events"
    assert workflow["created_at"] <= workflow["updated_at"], workflow
    assert workflow["created_at"] <= workflow["completed_at"], workflow
    assert workflow["executor_id"] and workflow["application_version"], workflow
    assert workflow["error"] is None
    assert workflow["result"] == {"total_steps": 2, "results": fibonacci_table(2)}


# ---------------------------------------------------------------- messaging


@pytest.mark.both_backends
def test_messaging_start_waits_for_approval(client: httpx.Client) -> None:
    """A messaging workflow answers with where to send, then waits (PENDING) on its topic."""
    workflow_id = unique_id("msg-start")
    body = start(client, "messaging", workflow_id, 2, step_seconds=0, approval_timeout=600)
    assert body["workflow_id"] == workflow_id
    assert body["kind"] == "messaging" and body["created"] is True, body
    assert body["send_approval"] == f"/send-message/{workflow_id}"
    assert body["topic"] == names.TOPIC_NOTIFICATION
    assert body["approval_timeout"] == 600
    assert body["status_endpoint"] == f"/workflows/{workflow_id}"
    assert body["note"], body
    wait_event(client, workflow_id, names.EVENT_STATUS, names.STATUS_WAITING)
    assert get_workflow(client, workflow_id)["status"] == "PENDING"
    client.post(f"/workflows/{workflow_id}/cancel")


@pytest.mark.both_backends
def test_messaging_approval_completes_the_workflow(client: httpx.Client) -> None:
    """{"approved": true} runs the steps; the `message` event holds the payload."""
    workflow_id = waiting_messaging_workflow(client)
    payload = {"approved": True, "message": "LGTM", "by": "reviewer"}
    sent = send(client, workflow_id, payload)
    assert sent["workflow_id"] == workflow_id
    assert sent["payload"] == payload and sent["topic"] == names.TOPIC_NOTIFICATION, sent
    assert sent["idempotency_key"] is None, sent
    workflow = wait_finished(client, workflow_id)
    assert workflow["status"] == "SUCCESS", workflow
    assert workflow["result"] == {
        "outcome": names.STATUS_COMPLETED,
        "approved": True,
        "message": payload,
        "total_steps": 2,
        "results": fibonacci_table(2),
    }
    assert get_event(client, workflow_id, names.EVENT_MESSAGE) == payload
    assert get_event(client, workflow_id, names.EVENT_STATUS) == names.STATUS_COMPLETED
    assert get_event(client, workflow_id, names.EVENT_PROGRESS) == 100


@pytest.mark.both_backends
@pytest.mark.parametrize(
    "payload",
    [{"approved": False, "reason": "not yet"}, {"approved": "yes"}, {"note": "no decision"}],
    ids=["approved-false", "approved-not-boolean", "no-approved-field"],
)
def test_messaging_anything_but_approved_true_rejects(
    client: httpx.Client, payload: dict[str, Any]
) -> None:
    """Only {"approved": true} approves: any other object rejects and runs no step."""
    workflow_id = waiting_messaging_workflow(client)
    send(client, workflow_id, payload)
    workflow = wait_finished(client, workflow_id)
    assert workflow["status"] == "SUCCESS", workflow
    assert workflow["result"] == {
        "outcome": names.STATUS_REJECTED,
        "approved": False,
        "message": payload,
    }
    events = client.get(f"/workflow-events/{workflow_id}/all").json()["events"]
    assert events[names.EVENT_STATUS] == names.STATUS_REJECTED
    assert events[names.EVENT_MESSAGE] == payload
    assert names.EVENT_PROGRESS not in events, f"a rejected workflow ran steps: {events}"


@pytest.mark.both_backends
def test_messaging_times_out_without_a_message(client: httpx.Client) -> None:
    """With no message within approval_timeout the workflow ends `timed_out`, not earlier."""
    workflow_id = unique_id("msg-timeout")
    start(client, "messaging", workflow_id, 2, step_seconds=0, approval_timeout=1)
    workflow = wait_finished(client, workflow_id)
    assert workflow["status"] == "SUCCESS", workflow
    assert workflow["result"] == {
        "outcome": names.STATUS_TIMED_OUT,
        "approved": False,
        "message": None,
    }
    assert get_event(client, workflow_id, names.EVENT_STATUS) == names.STATUS_TIMED_OUT
    waited_ms = workflow["completed_at"] - workflow["created_at"]
    assert waited_ms >= 950, f"timed out after {waited_ms} ms, before the 1 s approval_timeout"


@pytest.mark.both_backends
def test_idempotency_key_repeat_is_never_delivered(client: httpx.Client) -> None:
    """A second send with the same Idempotency-Key to the same workflow is dropped.

    The first send with key K goes to a topic the workflow never reads, so it does not end
    the wait. The approval then sent with K must be dropped (keys are per destination, not per
    topic); a later rejection without a key is what the workflow receives. Had the repeat
    been delivered, the workflow would have received the approval first and completed.
    """
    workflow_id = waiting_messaging_workflow(client)
    idem_key = unique_id("idem")
    parked = send(client, workflow_id, {"approved": True}, idem_key, topic="parked")
    assert parked["idempotency_key"] == idem_key and parked["topic"] == "parked", parked
    repeat = send(client, workflow_id, {"approved": True, "copy": 2}, idem_key)
    assert repeat["idempotency_key"] == idem_key, repeat
    rejection = {"approved": False, "sent": "after the repeat"}
    send(client, workflow_id, rejection)
    workflow = wait_finished(client, workflow_id)
    assert workflow["result"]["outcome"] == names.STATUS_REJECTED, (
        f"the repeated Idempotency-Key was delivered: {workflow['result']}"
    )
    assert workflow["result"]["message"] == rejection, workflow["result"]


# ---------------------------------------------------------------- streaming


@pytest.mark.both_backends
def test_streaming_start_says_how_long_the_stream_will_be(client: httpx.Client) -> None:
    """Starting a streaming workflow answers with where to read and 3 + 2n expected entries."""
    workflow_id = unique_id("stream-start")
    body = start(client, "streaming", workflow_id, 4, step_seconds=0)
    assert body["workflow_id"] == workflow_id
    assert body["kind"] == "streaming" and body["created"] is True, body
    assert body["read_stream"] == f"/workflow-stream/{workflow_id}"
    assert body["stream_key"] == names.STREAM_PROGRESS
    assert body["expected_entries"] == 11, body
    assert body["status_endpoint"] == f"/workflows/{workflow_id}"
    wait_finished(client, workflow_id)


@pytest.mark.both_backends
def test_stream_read_during_execution_is_partial_and_open(client: httpx.Client) -> None:
    """Read while running: what was written so far, at once, with closed=false."""
    workflow_id = unique_id("stream-live")
    # 5 steps of 2 s: the stream stays open for 10 s, far longer than reading it takes.
    body = start(client, "streaming", workflow_id, 5, step_seconds=2.0)
    page = wait_until(
        lambda: (p := read_stream(client, workflow_id))["total_messages"] >= 2 and p,
        timeout=30.0,
        what="the first stream entries",
    )
    assert page["closed"] is False, page
    assert page["has_more"] is False, page
    assert 2 <= page["total_messages"] < body["expected_entries"], page
    assert page["next_offset"] == page["total_messages"] == len(page["stream_values"]), page
    assert page["stream_values"][0]["type"] == "start", page
    assert client.post(f"/workflows/{workflow_id}/cancel").status_code == 200


@pytest.mark.both_backends
def test_stream_read_after_completion_is_whole_and_closed(client: httpx.Client) -> None:
    """Read after the workflow finished: exactly 3 + 2n entries and closed=true."""
    workflow_id = unique_id("stream-done")
    start(client, "streaming", workflow_id, 4, step_seconds=0)
    wait_finished(client, workflow_id)
    page = read_stream(client, workflow_id)
    assert page["workflow_id"] == workflow_id and page["stream_key"] == names.STREAM_PROGRESS
    assert page["total_messages"] == len(page["stream_values"]) == 11, page
    assert page["offset"] == 0 and page["next_offset"] == 11, page
    assert page["closed"] is True and page["has_more"] is False, page


@pytest.mark.both_backends
def test_stream_entries_are_in_order(client: httpx.Client) -> None:
    """start, then (progress, result) for steps 1..n, then summary, then complete."""
    workflow_id = unique_id("stream-order")
    n_steps = 5
    start(client, "streaming", workflow_id, n_steps, step_seconds=0)
    wait_finished(client, workflow_id)
    values = read_stream(client, workflow_id)["stream_values"]
    types = [value["type"] for value in values]
    assert types == ["start"] + ["progress", "result"] * n_steps + ["summary", "complete"], types
    steps = [(value["type"], value["step"]) for value in values[1:-2]]
    expected_steps = [(kind, s) for s in range(1, n_steps + 1) for kind in ("progress", "result")]
    assert steps == expected_steps, steps
    results = [{"n": v["n"], "fibonacci": v["fibonacci"]} for v in values if v["type"] == "result"]
    assert results == fibonacci_table(n_steps)
    assert values[-2]["results"] == fibonacci_table(n_steps), values[-2]
    timestamps = [value["timestamp"] for value in values]
    assert timestamps == sorted(timestamps), f"timestamps out of order: {timestamps}"


@pytest.mark.both_backends
def test_stream_pagination_edges(client: httpx.Client) -> None:
    """limit=1 pages one value at a time; an offset at or past the end is empty and closed."""
    workflow_id = unique_id("stream-edges")
    start(client, "streaming", workflow_id, 1, step_seconds=0)
    wait_finished(client, workflow_id)
    first = read_stream(client, workflow_id, limit=1)
    assert first["total_messages"] == 1 and first["stream_values"][0]["type"] == "start", first
    assert first["has_more"] is True and first["closed"] is False, first
    assert first["next_offset"] == 1
    last = read_stream(client, workflow_id, offset=4, limit=1)
    assert last["stream_values"][0]["type"] == "complete", last
    assert last["has_more"] is False and last["closed"] is True, last
    for offset in (5, 6, 10_000):
        past = read_stream(client, workflow_id, offset=offset)
        assert past["stream_values"] == [] and past["total_messages"] == 0, past
        assert past["next_offset"] == offset and past["offset"] == offset, past
        assert past["has_more"] is False and past["closed"] is True, past


@pytest.mark.both_backends
def test_stream_of_a_workflow_that_writes_none_is_empty_and_closed(client: httpx.Client) -> None:
    """Reading a stream that a finished workflow never wrote: empty, closed, not an error."""
    workflow_id = unique_id("no-stream")
    start(client, "events", workflow_id, 1, step_seconds=0)
    wait_finished(client, workflow_id)
    page = read_stream(client, workflow_id)
    assert page["stream_values"] == [] and page["closed"] is True, page


# ---------------------------------------------------------------- unknown IDs and unset events


# An answer "at once" comes within AT_ONCE seconds: milliseconds normally, and still far
# below the 60 s an event read with timeout=60 would wait, however loaded the machine.
AT_ONCE = 10.0
UNKNOWN_ID_REQUESTS = [
    ("GET", "/workflow-events/{id}/status?timeout=60"),
    ("GET", "/workflow-events/{id}/all"),
    ("POST", "/send-message/{id}"),
    ("GET", "/workflow-stream/{id}"),
    ("GET", "/workflows/{id}"),
    ("POST", "/workflows/{id}/cancel"),
    ("POST", "/workflows/{id}/resume"),
]


@pytest.mark.both_backends
@pytest.mark.parametrize(("method", "path"), UNKNOWN_ID_REQUESTS, ids=lambda v: str(v))
def test_unknown_workflow_is_404_at_once(client: httpx.Client, method: str, path: str) -> None:
    """Every endpoint answers 404 "does not exist" for an unknown ID, without waiting."""
    url = path.format(id=unique_id("unknown"))
    started = time.perf_counter()
    response = client.request(method, url, json={"approved": True} if method == "POST" else None)
    elapsed = time.perf_counter() - started
    assert_error(response, 404, "does not exist")
    assert elapsed < AT_ONCE, f"{method} {url} took {elapsed:.2f}s to say 404"


@pytest.mark.both_backends
def test_event_not_set_yet_is_404_after_the_timeout(client: httpx.Client) -> None:
    """An event a running workflow has not set: 404 "not set", after waiting `timeout`."""
    workflow_id = waiting_messaging_workflow(client)
    started = time.perf_counter()
    response = client.get(f"/workflow-events/{workflow_id}/{names.EVENT_RESULT}?timeout=1")
    elapsed = time.perf_counter() - started
    assert_error(response, 404, "not set")
    assert 0.95 <= elapsed < 6.0, f"answered after {elapsed:.2f}s for timeout=1"
    client.post(f"/workflows/{workflow_id}/cancel")


@pytest.mark.both_backends
def test_event_on_finished_workflow_is_404_at_once(client: httpx.Client) -> None:
    """A finished workflow can set nothing more: 404 "not set" at once, whatever the timeout."""
    workflow_id = unique_id("finished")
    start(client, "events", workflow_id, 1, step_seconds=0)
    wait_finished(client, workflow_id)
    started = time.perf_counter()
    response = client.get(f"/workflow-events/{workflow_id}/never-set?timeout=60")
    elapsed = time.perf_counter() - started
    assert_error(response, 404, "not set")
    assert elapsed < AT_ONCE, f"waited {elapsed:.2f}s on a finished workflow (timeout 60 s)"


def waiting_requests(client: httpx.Client) -> float:
    """The server's comm_waiting_requests gauge: event reads waiting right now."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("comm_waiting_requests "):
            return float(line.split()[1])
    raise AssertionError("no comm_waiting_requests in /metrics")


@pytest.mark.both_backends
def test_waiting_event_read_ends_when_the_workflow_finishes(
    client: httpx.Client, base_url: str
) -> None:
    """A read waiting (timeout=60) on a key the workflow never sets is answered 404 "the
    workflow finished (SUCCESS) without setting it" soon after the workflow ends, not after
    its timeout. The workflow waits for an approval, so the read surely waits first."""
    workflow_id = waiting_messaging_workflow(client)
    url = f"{base_url}/workflow-events/{workflow_id}/never-set"
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiter = pool.submit(httpx.get, url, params={"timeout": 60}, timeout=90.0)
        wait_until(
            lambda: waiter.done() or waiting_requests(client) >= 1,
            timeout=30.0,
            what="the read waiting on the server",
        )
        assert not waiter.done(), f"answered before the workflow finished: {waiter.result()}"
        sent_at = time.perf_counter()
        send(client, workflow_id, {"approved": True})
        response = waiter.result(timeout=90.0)
        answered_after = time.perf_counter() - sent_at
    assert wait_finished(client, workflow_id)["status"] == "SUCCESS"
    assert_error(
        response,
        404,
        f"Event 'never-set' is not set on workflow '{workflow_id}': "
        "the workflow finished (SUCCESS) without setting it.",
    )
    assert answered_after < 30.0, f"answered {answered_after:.1f}s after the approval"


@pytest.mark.both_backends
def test_stream_offset_past_the_end_of_an_open_stream_stays_put(client: httpx.Client) -> None:
    """An offset past what a running workflow has written: no values, next_offset = offset
    (the length is not reported), not closed, so a client polls there until values come."""
    workflow_id = waiting_messaging_workflow(client)
    page = read_stream(client, workflow_id, offset=7)
    client.post(f"/workflows/{workflow_id}/cancel")
    assert page["stream_values"] == [] and page["total_messages"] == 0, page
    assert page["offset"] == 7 and page["next_offset"] == 7, page
    assert page["has_more"] is False and page["closed"] is False, page


# ---------------------------------------------------------------- duplicates


@pytest.mark.both_backends
@pytest.mark.parametrize("kind", ["events", "messaging", "streaming"])
def test_same_id_same_kind_returns_the_existing_workflow(client: httpx.Client, kind: str) -> None:
    """Starting an ID again with the same kind: 200 created=false, the original runs unchanged."""
    workflow_id = unique_id(f"dup-{kind}")
    first = start(client, kind, workflow_id, 2, step_seconds=0, approval_timeout=60)
    again = start(client, kind, workflow_id, 7, step_seconds=5, approval_timeout=30)
    assert first["created"] is True and again["created"] is False, again
    assert again["workflow_id"] == workflow_id and again["kind"] == kind, again
    # The answer to a repeat describes the workflow that runs, not the repeat's arguments.
    if kind == "streaming":
        assert again["expected_entries"] == first["expected_entries"] == 7, (
            f"the repeat describes a stream of {again['expected_entries']} entries; "
            "the existing one has 7"
        )
    if kind == "messaging":
        assert again["approval_timeout"] == 60, again
        send(client, workflow_id, {"approved": True})
    workflow = wait_finished(client, workflow_id)
    assert workflow["result"]["total_steps"] == 2, workflow["result"]


@pytest.mark.both_backends
@pytest.mark.parametrize(
    ("first", "second"),
    [("events", "messaging"), ("messaging", "streaming"), ("streaming", "events")],
)
def test_same_id_other_kind_is_409(client: httpx.Client, first: str, second: str) -> None:
    """An ID already used by another kind of workflow: 409, and the original is untouched."""
    workflow_id = unique_id("conflict")
    start(client, first, workflow_id, 1, step_seconds=0)
    response = client.post(f"/start-workflow-{second}/{workflow_id}/1?step_seconds=0")
    assert_error(response, 409, workflow_id)
    named = {"events": "an events", "messaging": "a messaging", "streaming": "a streaming"}
    assert f"already exists as {named[first]} workflow" in response.text, response.text
    assert f"to start {named[second]} workflow" in response.text, response.text
    assert get_workflow(client, workflow_id)["kind"] == first
    client.post(f"/workflows/{workflow_id}/cancel")


# ---------------------------------------------------------------- never blocks

N_WAITERS = 60
# Long enough that the probes surely end while every waiter still waits, even when the 60
# requests take seconds to arrive on a loaded machine.
WAITER_TIMEOUT = 8.0
# The probes start once the server reports every waiter waiting (comm_waiting_requests):
# they measure the server while the waiters wait, not while 60 requests arrive at once
# (under heavy machine load that burst alone took over a second on SQLite). A blocked event
# loop would hold /health for seconds. A server without /metrics (--base-url) gets a pause.
WAITERS_SETTLE_SECONDS = 1.0
HEALTH_PROBES = 20


async def waiting_gauge(http: httpx.AsyncClient) -> float | None:
    """The server's comm_waiting_requests gauge; None if it serves no metrics."""
    response = await http.get("/metrics")
    if response.status_code != 200:
        return None
    for line in response.text.splitlines():
        if line.startswith("comm_waiting_requests "):
            return float(line.split()[1])
    return None


async def all_waiting(http: httpx.AsyncClient, waiters: int) -> None:
    """Return once the server reports `waiters` event reads waiting (or after a pause)."""
    deadline = time.monotonic() + 30.0
    while (count := await waiting_gauge(http)) is not None and count < waiters:
        assert time.monotonic() < deadline, f"only {count} of {waiters} waiters arrived in 30 s"
        await asyncio.sleep(0.05)
    if count is None:
        await asyncio.sleep(WAITERS_SETTLE_SECONDS)


async def wait_and_probe(base_url: str, workflow_id: str) -> dict[str, Any]:
    """N_WAITERS requests wait on an event that is never set; meanwhile time GET /health."""
    limits = httpx.Limits(max_connections=N_WAITERS + 5, max_keepalive_connections=N_WAITERS + 5)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as http:

        async def wait_once() -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await http.get(
                f"/workflow-events/{workflow_id}/{names.EVENT_RESULT}",
                params={"timeout": WAITER_TIMEOUT},
            )
            return response, time.perf_counter() - started

        waiters = [asyncio.create_task(wait_once()) for _ in range(N_WAITERS)]
        await all_waiting(http, N_WAITERS)
        health_seconds = []
        for _ in range(HEALTH_PROBES):
            started = time.perf_counter()
            response = await http.get("/health")
            health_seconds.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            await asyncio.sleep(0.02)
        still_waiting = sum(not waiter.done() for waiter in waiters)
        answers = await asyncio.gather(*waiters)
    return {"health": health_seconds, "still_waiting": still_waiting, "answers": answers}


@pytest.mark.both_backends
def test_server_never_blocks_while_many_clients_wait(
    client: httpx.Client, base_url: str, backend: str
) -> None:
    """60 requests waiting on an event do not slow /health; each waits its full timeout."""
    workflow_id = waiting_messaging_workflow(client)
    measured = asyncio.run(wait_and_probe(base_url, workflow_id))
    client.post(f"/workflows/{workflow_id}/cancel")
    health = measured["health"]
    waits = [elapsed for _, elapsed in measured["answers"]]
    numbers = (
        f"[{backend}] /health while {N_WAITERS} clients waited: "
        f"p50 {statistics.median(health) * 1000:.1f} ms, max {max(health) * 1000:.1f} ms "
        f"over {len(health)} calls; waiters answered after {min(waits):.2f}-{max(waits):.2f}s "
        f"(timeout {WAITER_TIMEOUT:g}s)"
    )
    print(numbers)
    assert max(health) < 1.0, numbers
    assert measured["still_waiting"] == N_WAITERS, (
        f"only {measured['still_waiting']} of {N_WAITERS} waiters were still waiting "
        f"when the health probes ended; {numbers}"
    )
    for response, _ in measured["answers"]:
        assert_error(response, 404, "not set")
    assert min(waits) >= WAITER_TIMEOUT - 0.05, f"a waiter returned early: {numbers}"
    assert max(waits) < WAITER_TIMEOUT + 5.0, f"a waiter returned late: {numbers}"


async def wait_for_message_event(
    base_url: str, workflow_id: str, payload: dict[str, Any], waiters: int
) -> tuple[list[httpx.Response], float, list[float]]:
    """`waiters` requests wait on the `message` event; then the message is sent."""
    limits = httpx.Limits(max_connections=waiters + 5, max_keepalive_connections=waiters + 5)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as http:

        async def wait_once() -> tuple[httpx.Response, float]:
            response = await http.get(
                f"/workflow-events/{workflow_id}/{names.EVENT_MESSAGE}", params={"timeout": 30}
            )
            return response, time.perf_counter()

        tasks = [asyncio.create_task(wait_once()) for _ in range(waiters)]
        await asyncio.sleep(0.3)  # pacing: the waiters reach the server before the send
        assert not any(task.done() for task in tasks), "a waiter answered before the send"
        sent_at = time.perf_counter()
        response = await http.post(f"/send-message/{workflow_id}", json=payload)
        assert response.status_code == 200, response.text
        answers = await asyncio.gather(*tasks)
    return [r for r, _ in answers], sent_at, [at - sent_at for _, at in answers]


@pytest.mark.both_backends
def test_waiting_clients_wake_when_the_event_is_set(client: httpx.Client, base_url: str) -> None:
    """Clients waiting on an event all get its value soon after it is set, not at the timeout."""
    workflow_id = waiting_messaging_workflow(client)
    payload = {"approved": True, "message": "wake up"}
    responses, _, delays = asyncio.run(wait_for_message_event(base_url, workflow_id, payload, 20))
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["value"] == payload
    print(f"20 waiters woke {min(delays):.3f}-{max(delays):.3f}s after the send")
    assert max(delays) < 5.0, f"waiters woke {max(delays):.2f}s after the send (timeout 30 s)"
    wait_finished(client, workflow_id)


# ---------------------------------------------------------------- bad input

LONG_ID = "a" * (names.WORKFLOW_ID_MAX_LEN + 1)
BIG_BODY = json.dumps({"blob": "x" * names.MESSAGE_MAX_BYTES_DEFAULT}).encode()

# (id, method, path, extra request arguments, expected status). {wf} is a waiting workflow.
BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("id-too-long", "POST", f"/start-workflow-events/{LONG_ID}/1", {}, 422),
    ("id-too-long-get", "GET", f"/workflows/{LONG_ID}", {}, 422),
    ("id-space", "POST", "/start-workflow-events/bad id/1", {}, 422),
    ("id-unicode", "POST", "/start-workflow-streaming/\u00e9t\u00e9/1", {}, 422),
    ("id-leading-dash", "POST", "/start-workflow-events/-x/1", {}, 422),
    ("id-encoded-slash", "POST", "/start-workflow-events/a%2Fb/1", {}, 404),
    ("id-encoded-slash-get", "GET", "/workflow-events/a%2Fb/all", {}, 404),
    ("n-steps-0", "POST", "/start-workflow-events/{new}/0", {}, 422),
    ("n-steps-1001", "POST", "/start-workflow-events/{new}/1001", {}, 422),
    ("n-steps-text", "POST", "/start-workflow-streaming/{new}/ten", {}, 422),
    ("n-steps-float", "POST", "/start-workflow-messaging/{new}/2.5", {}, 422),
    ("step-seconds-negative", "POST", "/start-workflow-events/{new}/1?step_seconds=-1", {}, 422),
    ("step-seconds-61", "POST", "/start-workflow-streaming/{new}/1?step_seconds=61", {}, 422),
    ("step-seconds-nan", "POST", "/start-workflow-events/{new}/1?step_seconds=nan", {}, 422),
    ("timeout-negative", "GET", "/workflow-events/{wf}/status?timeout=-1", {}, 422),
    ("timeout-121", "GET", "/workflow-events/{wf}/status?timeout=121", {}, 422),
    ("event-key-bad", "GET", "/workflow-events/{wf}/bad key", {}, 422),
    (
        "approval-timeout-0",
        "POST",
        "/start-workflow-messaging/{new}/1?approval_timeout=0",
        {},
        422,
    ),
    (
        "approval-timeout-86401",
        "POST",
        "/start-workflow-messaging/{new}/1?approval_timeout=86401",
        {},
        422,
    ),
    (
        "body-not-json",
        "POST",
        "/send-message/{wf}",
        {"content": b"approved", "headers": {"content-type": "application/json"}},
        400,
    ),
    ("body-array", "POST", "/send-message/{wf}", {"json": [{"approved": True}]}, 422),
    ("body-string", "POST", "/send-message/{wf}", {"json": "approved"}, 422),
    ("body-number", "POST", "/send-message/{wf}", {"json": 1}, 422),
    ("body-missing", "POST", "/send-message/{wf}", {}, 422),
    ("body-too-large", "POST", "/send-message/{wf}", {"content": BIG_BODY}, 413),
    ("body-too-large-chunked", "POST", "/send-message/{wf}", {"chunked": BIG_BODY}, 413),
    ("topic-space", "POST", "/send-message/{wf}?topic=bad topic", {"json": {}}, 422),
    ("topic-empty", "POST", "/send-message/{wf}?topic=", {"json": {}}, 422),
    (
        "idempotency-key-too-long",
        "POST",
        "/send-message/{wf}",
        {"json": {}, "headers": {"Idempotency-Key": "k" * (names.IDEMPOTENCY_KEY_MAX_LEN + 1)}},
        422,
    ),
    ("limit-0", "GET", "/workflow-stream/{wf}?limit=0", {}, 422),
    ("limit-5001", "GET", "/workflow-stream/{wf}?limit=5001", {}, 422),
    ("offset-negative", "GET", "/workflow-stream/{wf}?offset=-1", {}, 422),
    ("stream-key-bad", "GET", "/workflow-stream/{wf}?key=a/b", {}, 422),
    ("list-limit-0", "GET", "/workflows?limit=0", {}, 422),
    ("list-status-unknown", "GET", "/workflows?status=RUNNING", {}, 422),
    ("list-kind-unknown", "GET", "/workflows?kind=queue", {}, 422),
]


@pytest.fixture(scope="module")
def target_workflow(base_url: str) -> Iterator[str]:
    """One waiting messaging workflow the bad requests aim at; cancelled afterwards."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        workflow_id = waiting_messaging_workflow(http, approval_timeout=600)
        yield workflow_id
        http.post(f"/workflows/{workflow_id}/cancel")


def chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """A body sent with Transfer-Encoding: chunked, so no Content-Length announces its size."""
    for at in range(0, len(body), size):
        yield body[at : at + size]


@pytest.mark.parametrize(
    ("method", "path", "extra", "status"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_is_a_4xx_with_detail(
    client: httpx.Client,
    target_workflow: str,
    method: str,
    path: str,
    extra: dict[str, Any],
    status: int,
) -> None:
    """Every invalid input gets its 4xx with a JSON `detail`, never a 500; /health still answers."""
    url = path.format(wf=target_workflow, new=unique_id("bad"))
    extra = dict(extra)
    if "chunked" in extra:
        extra["content"] = chunks(extra.pop("chunked"))
        extra["headers"] = {"content-type": "application/json"}
    response = client.request(method, url, **extra)
    assert_error(response, status)
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{bad", "Expecting property name enclosed in double quotes at character 1."),
        ('{"note": "caf\u00e9"}'.encode("latin-1"), "it is not UTF-8 text."),
        (b"[" * 20_000 + b"]" * 20_000, "it is nested too deeply."),
    ],
    ids=["syntax", "not-utf8", "too-deep"],
)
def test_unparseable_json_body_is_one_400_with_its_reason(
    client: httpx.Client, target_workflow: str, body: bytes, reason: str
) -> None:
    """Whatever keeps the JSON parser from reading a body (bad syntax, not UTF-8, nesting
    too deep) gets one answer: 400 "The request body cannot be parsed as JSON: <reason>"."""
    response = client.post(
        f"/send-message/{target_workflow}",
        content=body,
        headers={"content-type": "application/json"},
    )
    detail = assert_error(response, 400)
    assert detail == f"The request body cannot be parsed as JSON: {reason}", detail


def test_bad_messages_never_reach_the_workflow(client: httpx.Client, target_workflow: str) -> None:
    """After all the rejected sends, the target workflow is still waiting for its message."""
    assert get_workflow(client, target_workflow)["status"] == "PENDING"
    assert get_event(client, target_workflow, names.EVENT_STATUS) == names.STATUS_WAITING


# ---------------------------------------------------------------- /workflows


def test_list_workflows_filters_by_status_and_kind(client: httpx.Client) -> None:
    """GET /workflows filters by status and kind, newest first, at most `limit`."""
    finished = unique_id("list-events")
    start(client, "events", finished, 1, step_seconds=0)
    wait_finished(client, finished)
    waiting = waiting_messaging_workflow(client)

    pending = client.get("/workflows", params={"kind": "messaging", "status": "PENDING"}).json()
    assert pending["count"] == len(pending["data"]), pending["count"]
    assert waiting in [w["workflow_id"] for w in pending["data"]]
    assert {(w["kind"], w["status"]) for w in pending["data"]} == {("messaging", "PENDING")}

    done = client.get("/workflows", params={"kind": "events", "status": "SUCCESS"}).json()
    assert finished in [w["workflow_id"] for w in done["data"]]
    assert {(w["kind"], w["status"]) for w in done["data"]} == {("events", "SUCCESS")}
    created = [w["created_at"] for w in done["data"]]
    assert created == sorted(created, reverse=True), "not newest first"

    one = client.get("/workflows", params={"limit": 1}).json()
    assert one["count"] == len(one["data"]) == 1, one
    client.post(f"/workflows/{waiting}/cancel")


def test_cancel_a_waiting_workflow_then_again_is_409(client: httpx.Client) -> None:
    """Cancelling a waiting workflow makes it CANCELLED; cancelling it again is a 409."""
    workflow_id = waiting_messaging_workflow(client)
    response = client.post(f"/workflows/{workflow_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert response.json()["workflow_id"] == workflow_id
    assert get_workflow(client, workflow_id)["status"] == "CANCELLED"
    assert_error(client.post(f"/workflows/{workflow_id}/cancel"), 409, "CANCELLED")


def test_resume_a_cancelled_workflow_runs_it_to_the_end(client: httpx.Client) -> None:
    """A cancelled workflow resumes: it waits again for its message and then completes."""
    workflow_id = waiting_messaging_workflow(client)
    client.post(f"/workflows/{workflow_id}/cancel")
    response = client.post(f"/workflows/{workflow_id}/resume")
    assert response.status_code == 200, response.text
    assert response.json()["status"] in {"PENDING", "ENQUEUED"}, response.json()
    send(client, workflow_id, {"approved": True})
    workflow = wait_finished(client, workflow_id)
    assert workflow["status"] == "SUCCESS", workflow
    assert workflow["result"]["outcome"] == names.STATUS_COMPLETED, workflow["result"]


def test_resume_is_409_for_finished_or_running_workflows(client: httpx.Client) -> None:
    """Resume refuses a SUCCESS workflow and a PENDING one its own server still runs."""
    finished = unique_id("resume-done")
    start(client, "events", finished, 1, step_seconds=0)
    wait_finished(client, finished)
    assert_error(client.post(f"/workflows/{finished}/resume"), 409, "SUCCESS")
    running = waiting_messaging_workflow(client)
    assert_error(client.post(f"/workflows/{running}/resume"), 409, "PENDING")
    client.post(f"/workflows/{running}/cancel")


# ---------------------------------------------------------------- health


@pytest.mark.both_backends
def test_health_reports_server_and_database(client: httpx.Client, backend: str) -> None:
    """GET /health: ok, with memory, threads, uptime, the database and its latency."""
    response = client.get("/health")
    assert response.status_code == 200, response.text
    health = response.json()
    assert health["status"] == "ok", health
    assert health["memory_mb"] > 0 and health["threads"] >= 1, health
    assert health["uptime_seconds"] >= 0, health
    database = health["database"]
    assert database["reachable"] is True and database["latency_ms"] >= 0, database
    if backend != "external":
        assert database["backend"] == backend, database
    assert health["executor_id"] and health["application_version"] and health["version"], health


# ---------------------------------------------------------------- long streams
# Last in the file, so the long workflow (started by the autouse fixture) has run meanwhile.


def test_long_stream_comes_whole_in_one_default_read(
    client: httpx.Client, finished_long_stream: str
) -> None:
    """One GET with default parameters returns all 3 + 2 * 1000 entries, closed."""
    page = read_stream(client, finished_long_stream)
    expected = 3 + 2 * names.N_STEPS_MAX
    assert page["total_messages"] == len(page["stream_values"]) == expected, (
        f"{page['total_messages']} entries, expected {expected}"
    )
    assert page["closed"] is True and page["has_more"] is False, page["closed"]
    assert page["next_offset"] == expected
    summary = page["stream_values"][-2]
    assert summary["type"] == "summary"
    assert summary["results"] == fibonacci_table(names.N_STEPS_MAX)


def test_long_stream_paging_reconstructs_the_same_list(
    client: httpx.Client, finished_long_stream: str
) -> None:
    """Paging with limit=100 yields the one-read list exactly, with correct has_more/next_offset."""
    long_stream = finished_long_stream
    whole = read_stream(client, long_stream)["stream_values"]
    collected: list[Any] = []
    offset = 0
    pages = 0
    while True:
        page = read_stream(client, long_stream, offset=offset, limit=100)
        pages += 1
        assert page["offset"] == offset
        assert page["next_offset"] == offset + page["total_messages"], page["next_offset"]
        collected += page["stream_values"]
        offset = page["next_offset"]
        if not page["has_more"]:
            break
        assert page["total_messages"] == 100 and page["closed"] is False, (
            f"page at {page['offset']}: {page['total_messages']} values, closed={page['closed']}"
        )
        assert pages < 100, "paging does not end"
    assert page["closed"] is True, page["closed"]
    assert pages == 21, f"{pages} pages for {len(whole)} entries"
    assert collected == whole


@pytest.mark.needs_own_server
def test_uvicorn_cli_serves_the_same_app(postgres_url: str, tmp_path: Path) -> None:
    """`uvicorn server:app` (not only `python server.py`) launches DBOS in the lifespan and
    runs workflows, and stops on SIGTERM within its graceful-shutdown timeout."""
    server = UvicornServer(
        "server:app",
        postgres_url,
        "--app-dir",
        str(ROOT),
        "--timeout-graceful-shutdown",
        "5",
        executor_id=unique_id("uvicorn-cli"),
        workdir=tmp_path,
    )
    try:
        server.start()
        workflow_id = unique_id("uvicorn-cli")
        with server.client() as client:
            started = client.post(f"/start-workflow-events/{workflow_id}/3?step_seconds=0")
            assert started.status_code == 200, started.text
            result = client.get(f"/workflow-events/{workflow_id}/result?timeout=120")
            assert result.status_code == 200, f"{result.status_code} {result.text}"
            assert result.json()["value"]["total_steps"] == 3, result.text
    finally:
        code = server.stop(timeout=30)
    # uvicorn re-raises SIGTERM once it has shut down cleanly: -15 is a clean exit here.
    assert code in (0, -signal.SIGTERM), f"uvicorn exited {code}:\n{server.log()}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
