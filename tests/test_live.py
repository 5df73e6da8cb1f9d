"""Live push (issue 3) against live server processes: SSE and WebSocket, Postgres and SQLite.

Every test starts real workflows on a real server and reads what it pushes: stream values,
event changes, status and WebSocket frames. The tests marked `needs_own_server` start a server
of their own, to kill it, stop it, or run it with small limits.

    .venv/bin/pytest tests/test_live.py -q -s     # -s shows the measured latencies
"""

import asyncio
import json
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse, connect_sse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support import OwnServer, ServerProcess, free_port, unique_id, wait_until
from workflow_comm import names
from workflow_comm.workflows import percent_done, stream_entry_count

# Named events that end a live response; everything else is an unnamed ("message") event.
END_EVENTS = {"closed", "overflow", "shutdown"}
TERMINAL = names.TERMINAL_STATUSES
# A live response may idle between values; a read that waits this long means it is stuck.
SSE_TIMEOUT = httpx.Timeout(30.0, read=15.0)
# A client that stopped reading with a small receive buffer: its kernel may have dropped a
# segment, which the server's kernel sends again at most TCP_RTO_MAX (120 s) later.
SLOW_READ = httpx.Timeout(30.0, read=130.0)
WS_TIMEOUT = 15.0


# --- helpers -------------------------------------------------------------------------------


def start(client: httpx.Client, kind: str, workflow_id: str, n_steps: int, **params: Any) -> None:
    response = client.post(f"/start-workflow-{kind}/{workflow_id}/{n_steps}", params=params)
    assert response.status_code == 200, f"start {kind}: {response.status_code} {response.text}"


def overflow_count(client: httpx.Client) -> float:
    """comm_live_overflows_total: live clients cut off for falling behind."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("comm_live_overflows_total "):
            return float(line.split()[1])
    raise AssertionError("comm_live_overflows_total is not in /metrics")


def sse_events(source: EventSource) -> Iterator[ServerSentEvent]:
    """The events a browser's EventSource would dispatch, up to and including an end event.

    httpx-sse also yields data-less events (for `retry:` and after each heartbeat comment,
    repeating the last id); EventSource ignores those, and so do these tests.
    """
    assert source.response.status_code == 200, (
        f"live response {source.response.status_code}: {source.response.read()!r}"
    )
    for event in source.iter_sse():
        if not event.data:
            continue
        yield event
        if event.event in END_EVENTS:
            return


def read_sse(
    client: httpx.Client,
    path: str,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> list[ServerSentEvent]:
    """Every event of one live response, the final `closed`/`overflow`/`shutdown` included."""
    with connect_sse(
        client, "GET", path, headers=headers or {}, params=params, timeout=SSE_TIMEOUT
    ) as source:
        return list(sse_events(source))


def stream_ids(events: list[ServerSentEvent]) -> list[int]:
    return [int(event.id) for event in events if event.event == "message"]


def stream_data(events: list[ServerSentEvent]) -> list[Any]:
    return [event.json() for event in events if event.event == "message"]


def finished(client: httpx.Client, workflow_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The workflow's WorkflowPublic once it has reached a terminal status."""

    def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/workflows/{workflow_id}").json()
        return body if body.get("status") in TERMINAL else None

    return wait_until(probe, timeout=timeout, interval=0.05, what=f"{workflow_id} finished")


def stored_stream(client: httpx.Client, workflow_id: str) -> list[Any]:
    body = client.get(f"/workflow-stream/{workflow_id}").json()
    assert body["closed"], f"stream of {workflow_id} not closed: {body}"
    values: list[Any] = body["stream_values"]
    return values


def written_at(value: dict[str, Any]) -> float:
    """When the workflow wrote a stream value (its ISO `timestamp`), as epoch seconds."""
    return datetime.fromisoformat(value["timestamp"]).timestamp()


def ws_url(base_url: str, workflow_id: str, **params: Any) -> str:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"{base_url.replace('http', 'ws', 1)}/ws/workflows/{workflow_id}" + (
        f"?{query}" if query else ""
    )


def ws_frames(ws: ClientConnection) -> Iterator[dict[str, Any]]:
    """JSON frames until the server closes the socket (each read bounded by WS_TIMEOUT)."""
    while True:
        try:
            text = ws.recv(timeout=WS_TIMEOUT)
        except ConnectionClosed:
            return
        frame: dict[str, Any] = json.loads(text)
        yield frame


def ws_until(ws: ClientConnection, frame_type: str) -> list[dict[str, Any]]:
    """Frames up to and including the first of `frame_type`."""
    seen: list[dict[str, Any]] = []
    for frame in ws_frames(ws):
        seen.append(frame)
        if frame["type"] == frame_type:
            return seen
    raise AssertionError(f"socket closed ({ws.close_code}) before a {frame_type} frame: {seen}")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# Small limits, so the tests of the cap, the heartbeat and slow consumers reach them fast.
TUNED_CAP = 2
TUNED_HEARTBEAT = 0.2
TUNED_BUFFER = 100
# Kernel send buffer and write buffer per connection: small, so a client that stops reading
# stalls the server's writes after kilobytes rather than megabytes of OS autotuning.
TUNED_SEND_BUFFER = 4096


@pytest.fixture(scope="module")
def tuned_server(own_server: OwnServer) -> ServerProcess:
    """A server of this module's own on the shared Postgres, with small live limits."""
    env = {
        "COMM_MAX_LIVE_CONNECTIONS": str(TUNED_CAP),
        "COMM_SSE_HEARTBEAT_SEC": str(TUNED_HEARTBEAT),
        "COMM_LIVE_BUFFER": str(TUNED_BUFFER),
        "COMM_SOCKET_SEND_BUFFER": str(TUNED_SEND_BUFFER),
    }
    return own_server(env=env)


def open_live_connections(http: httpx.Client) -> float:
    """The server's comm_live_connections gauge."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("comm_live_connections "):
            return float(line.split()[1])
    raise AssertionError("no comm_live_connections in /metrics")


@pytest.fixture
def tuned(tuned_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the tuned server, restarted first if a shutdown test stopped it.

    The server holds at most TUNED_CAP live connections: a test gets it once the server has
    released every connection of the tests before (a closed client's may take a moment).
    """
    assert tuned_server.process is not None
    if tuned_server.process.poll() is not None:
        tuned_server.start()
    with tuned_server.client(timeout=SSE_TIMEOUT) as http:
        wait_until(
            lambda: open_live_connections(http) == 0,
            timeout=30,
            what="the tuned server's live connections released",
        )
        yield http


# --- SSE: streams --------------------------------------------------------------------------


@pytest.mark.both_backends
def test_stream_values_arrive_in_order_exactly_once_while_running(client: httpx.Client) -> None:
    """Subscribed as the workflow starts, a client gets every stream value once, in offset
    order, as it is written (not replayed at the end), then `closed` with the next offset."""
    workflow_id, n_steps = unique_id("live-order"), 10
    # Steps of 0.5 s: the stream is written over 5 s, far longer than subscribing takes on a
    # loaded machine, so the first value surely arrives before the last is written.
    start(client, "streaming", workflow_id, n_steps, step_seconds=0.5)
    received: list[tuple[ServerSentEvent, float]] = []
    with connect_sse(
        client,
        "GET",
        f"/workflow-stream/{workflow_id}/live",
        params={"offset": 0},
        timeout=SSE_TIMEOUT,
    ) as source:
        received = [(event, time.time()) for event in sse_events(source)]
    events = [event for event, _ in received]
    expected = stream_entry_count(n_steps)

    assert stream_ids(events) == list(range(expected)), f"ids {stream_ids(events)}"
    finished(client, workflow_id)
    assert stream_data(events) == stored_stream(client, workflow_id), "pushed != stored values"
    closed = events[-1]
    assert closed.event == "closed", f"last event {closed.event}: {closed.data}"
    # close_stream is the workflow's last act, so `closed` may come just before SUCCESS.
    status = closed.json().get("status")
    assert status in {"PENDING", "SUCCESS"}, f"closed {closed.data}"
    assert closed.json() == {
        "workflow_id": workflow_id,
        "key": names.STREAM_PROGRESS,
        "status": status,
        "next_offset": expected,
    }, f"closed {closed.data}"
    first_received = received[0][1]
    last_written = written_at(stream_data(events)[-1])
    assert first_received < last_written, (
        f"first value received {first_received - last_written:.3f}s after the last was "
        "written: replayed after the fact, not pushed while running"
    )


@pytest.mark.both_backends
def test_resume_with_last_event_id_loses_and_repeats_nothing(client: httpx.Client) -> None:
    """A client that drops mid-stream and reconnects with Last-Event-ID gets each value
    exactly once over the two connections (the header wins over ?offset=0)."""
    workflow_id, n_steps = unique_id("live-resume"), 10
    # 5 s of stream: the drop at id 4 (about 1 s in) comes well before its end.
    start(client, "streaming", workflow_id, n_steps, step_seconds=0.5)
    path = f"/workflow-stream/{workflow_id}/live"
    first: list[ServerSentEvent] = []
    with connect_sse(client, "GET", path, timeout=SSE_TIMEOUT) as source:
        for event in sse_events(source):
            first.append(event)
            if event.id == "4":
                break
    dropped_at = time.time()
    second = read_sse(client, path, headers={"Last-Event-ID": first[-1].id}, params={"offset": 0})
    expected = stream_entry_count(n_steps)

    ids = stream_ids(first) + stream_ids(second)
    assert ids == list(range(expected)), f"first {stream_ids(first)} then {stream_ids(second)}"
    assert second[-1].event == "closed", f"resumed stream ended with {second[-1].event}"
    finished(client, workflow_id)
    values = stream_data(first) + stream_data(second)
    assert values == stored_stream(client, workflow_id), "resumed values != stored values"
    last_written = written_at(values[-1])
    assert dropped_at < last_written, (
        f"dropped {dropped_at - last_written:.3f}s after the stream's end: not mid-stream"
    )


async def _subscribe(
    http: httpx.AsyncClient, path: str
) -> tuple[list[ServerSentEvent], list[float], float]:
    """One subscriber: its events, their receipt times, and when its response began."""
    events: list[ServerSentEvent] = []
    times: list[float] = []
    async with aconnect_sse(http, "GET", path, timeout=SSE_TIMEOUT) as source:
        assert source.response.status_code == 200, f"subscribe: {source.response.status_code}"
        began = time.time()
        async for event in source.aiter_sse():
            if not event.data:
                continue
            events.append(event)
            times.append(time.time())
            if event.event in END_EVENTS:
                break
    return events, times, began


async def _fan_out(base_url: str, path: str, subscribers: int) -> list[Any]:
    limits = httpx.Limits(max_connections=subscribers + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as http:
        return await asyncio.gather(*(_subscribe(http, path) for _ in range(subscribers)))


def test_many_subscribers_receive_identical_complete_sequence(
    client: httpx.Client, base_url: str
) -> None:
    """220 concurrent subscribers of one stream each receive the identical, complete
    sequence; the write-to-receipt latency of values pushed live is printed (p50/p99)."""
    workflow_id, n_steps, subscribers = unique_id("live-fanout"), 6, 220
    # 3 s of stream: subscribers join while values are still being written.
    start(client, "streaming", workflow_id, n_steps, step_seconds=0.5)
    results = asyncio.run(_fan_out(base_url, f"/workflow-stream/{workflow_id}/live", subscribers))
    finished(client, workflow_id)
    stored = stored_stream(client, workflow_id)
    expected_ids = list(range(stream_entry_count(n_steps)))

    complete = [
        events
        for events, _, _ in results
        if stream_ids(events) == expected_ids and stream_data(events) == stored
    ]
    assert len(complete) == subscribers, (
        f"{len(complete)}/{subscribers} subscribers got the complete sequence; e.g. "
        f"{next((stream_ids(e) for e, _, _ in results if stream_ids(e) != expected_ids), None)}"
    )
    # Latency only for values written after the subscriber's response began: the others
    # were replayed to a late joiner, and their age says nothing about push.
    latencies = [
        received - written_at(event.json())
        for events, times, began in results
        for event, received in zip(events, times, strict=True)
        if event.event == "message" and written_at(event.json()) > began
    ]
    assert latencies, "no value was written after any subscriber joined"
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    report = (
        f"{subscribers} subscribers, {len(latencies)} live deliveries: write-to-receipt "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms, "
        f"mean {statistics.fmean(latencies) * 1000:.1f} ms"
    )
    print(f"\n[push latency] {report}")  # noqa: T201 - the measured number the issue asks for
    # Generous: this 2-core machine is shared; the number that matters is printed above.
    assert p99 < 15.0, report


@pytest.mark.needs_own_server
def test_subscriber_survives_sigkill_and_restart(postgres_url: str) -> None:
    """A subscriber whose server is SIGKILLed mid-stream reconnects to the restarted server
    (same executor, same Postgres) with Last-Event-ID and ends with the exact full stream."""
    workflow_id, n_steps = unique_id("live-crash"), 10
    executor, port = unique_id("executor"), free_port()
    first = ServerProcess(postgres_url, executor_id=executor, port=port).start()
    try:
        with httpx.Client(base_url=first.base_url, timeout=SSE_TIMEOUT) as http:
            # 5 s of stream: the kill at id 4 (about 1 s in) lands mid-stream.
            start(http, "streaming", workflow_id, n_steps, step_seconds=0.5)
            before: list[ServerSentEvent] = []
            broke_with: Exception | None = None
            try:
                with connect_sse(
                    http, "GET", f"/workflow-stream/{workflow_id}/live", timeout=SSE_TIMEOUT
                ) as source:
                    for event in sse_events(source):
                        before.append(event)
                        if event.id == "4":
                            first.kill()
            except httpx.TransportError as exc:
                broke_with = exc
    finally:
        first.kill()
    assert before and before[-1].event == "message", f"before the kill: {before}"
    second = ServerProcess(
        postgres_url, executor_id=executor, port=port, workdir=first.workdir
    ).start()
    try:
        with httpx.Client(base_url=second.base_url, timeout=SSE_TIMEOUT) as http:
            after = read_sse(
                http,
                f"/workflow-stream/{workflow_id}/live",
                headers={"Last-Event-ID": before[-1].id},
            )
            final = finished(http, workflow_id)
            stored = stored_stream(http, workflow_id)
    finally:
        second.stop()
    ids = stream_ids(before) + stream_ids(after)
    assert ids == list(range(stream_entry_count(n_steps))), (
        f"before the kill {stream_ids(before)} ({broke_with!r}), after {stream_ids(after)}"
    )
    assert stream_data(before) + stream_data(after) == stored, "values != stored stream"
    assert after[-1].event == "closed", f"resumed stream ended with {after[-1].event}"
    assert after[-1].json()["next_offset"] == stream_entry_count(n_steps), after[-1].data
    assert final["status"] == "SUCCESS", f"recovered workflow {final}"


# --- SSE: events and status ----------------------------------------------------------------


@pytest.mark.both_backends
def test_events_watch_sees_every_progress_change(client: httpx.Client) -> None:
    """The events watch delivers, after the first progress value it shows, every later
    progress value in order up to 100, and `closed` only after status `completed`."""
    workflow_id, n_steps = unique_id("live-events"), 5
    start(client, "events", workflow_id, n_steps, step_seconds=0.05)
    events = read_sse(client, f"/workflow-events/{workflow_id}/live")
    changes = [event.json() for event in events if event.event == "message"]
    progress = [change["value"] for change in changes if change["key"] == names.EVENT_PROGRESS]
    statuses = [change["value"] for change in changes if change["key"] == names.EVENT_STATUS]
    every = [0] + [percent_done(step, n_steps) for step in range(1, n_steps + 1)]

    assert progress, f"no progress value in {changes}"
    assert progress == every[every.index(progress[0]) :], f"progress {progress}, all {every}"
    versions = [change["version"] for change in changes]
    assert versions == sorted(set(versions)), f"versions not increasing: {versions}"
    assert [int(event.id) for event in events[:-1]] == versions, "ids != versions"
    assert statuses[-1] == names.STATUS_COMPLETED, f"statuses {statuses}"
    assert events[-1].event == "closed", f"last event {events[-1].event}: {events[-1].data}"
    assert events[-1].json() == {"workflow_id": workflow_id, "status": "SUCCESS"}, (
        f"closed {events[-1].data}"
    )


@pytest.mark.both_backends
def test_status_watch_shows_pending_then_success_with_result(client: httpx.Client) -> None:
    """The status watch sends PENDING, then SUCCESS with the result, then `closed` carrying
    the final WorkflowPublic."""
    workflow_id = unique_id("live-status")
    # The workflow waits for its approval, sent only once the watch has shown PENDING: the
    # watch sees it running however late it subscribes.
    start(client, "messaging", workflow_id, 3, step_seconds=0, approval_timeout=600)
    with connect_sse(
        client, "GET", f"/workflows/{workflow_id}/live", timeout=SSE_TIMEOUT
    ) as source:
        received = sse_events(source)
        events = [next(received)]
        sent = client.post(f"/send-message/{workflow_id}", json={"approved": True})
        assert sent.status_code == 200, f"approval: {sent.status_code} {sent.text}"
        events.extend(received)
    updates = [event.json() for event in events if event.event == "message"]
    final = finished(client, workflow_id)

    assert [u["status"] for u in updates] == ["PENDING", "SUCCESS"], f"updates {updates}"
    assert updates[0]["result"] is None, f"PENDING carries a result: {updates[0]}"
    assert updates[-1]["result"] == final["result"], f"SUCCESS update {updates[-1]}"
    assert final["result"]["total_steps"] == 3, f"result {final['result']}"
    assert events[-1].event == "closed", f"last event {events[-1].event}"
    assert events[-1].json() == final, f"closed {events[-1].data} != {final}"


@pytest.mark.needs_own_server
def test_slow_consumer_is_cut_off_and_resumes_without_loss(
    tuned: httpx.Client, tuned_server: ServerProcess
) -> None:
    """With COMM_LIVE_BUFFER=100, a client that stops reading while far more is written than
    the socket buffers hold gets `overflow` with the offset to resume at and is disconnected;
    resuming there completes the stream with nothing lost, and the server's memory stays
    bounded."""
    workflow_id, n_steps = unique_id("live-slow"), 200
    memory_before = tuned.get("/health").json()["memory_mb"]
    start(tuned, "streaming", workflow_id, n_steps, step_seconds=0)
    # Written whole first, so the client's pause below lasts only as long as the server takes
    # to fill the buffers and cut it off, however loaded the machine.
    finished(tuned, workflow_id, timeout=120)
    overflows_before = overflow_count(tuned)
    path = f"/workflow-stream/{workflow_id}/live"
    # A small receive buffer on the client's side too, so the ~70 KB of this stream overflow
    # them: with the server's send and write buffers (4 KB each) about 20 KB are held. A
    # buffer this small makes the client's kernel drop some segments while it does not read,
    # and the server's kernel retransmits them with exponential backoff: a pause of tens of
    # seconds would leave the client waiting about as long once it reads again.
    small_buffer = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    slow_client = httpx.Client(base_url=str(tuned.base_url), transport=small_buffer)
    with slow_client, connect_sse(slow_client, "GET", path, timeout=SLOW_READ) as source:
        events = sse_events(source)
        slow = [next(events)]
        # Stop reading until the server has cut this client off: the socket buffers and then
        # the server's queue for this client fill up.
        try:
            wait_until(lambda: overflow_count(tuned) > overflows_before, timeout=120)
            counted = True
        except AssertionError:
            counted = False  # what the client got instead is in the failure below
        try:
            slow.extend(events)
        except httpx.ReadTimeout:
            raise AssertionError(
                f"no byte for {SLOW_READ.read} s once the slow client read again, after "
                f"{len(stream_ids(slow))} values (cut off within 120 s: {counted})"
            ) from None
    memory_after = tuned.get("/health").json()["memory_mb"]
    assert counted and slow[-1].event == "overflow", (
        f"slow client ended with `{slow[-1].event}` after {len(stream_ids(slow))} values "
        f"(buffer {TUNED_BUFFER}; cut off within 120 s: {counted}): {slow[-1].data}"
    )

    resume_offset = slow[-1].json()["resume_offset"]
    assert resume_offset == stream_ids(slow)[-1] + 1, (
        f"resume_offset {resume_offset}, last id received {stream_ids(slow)[-1]}"
    )
    rest = read_sse(tuned, path, params={"offset": resume_offset})
    ids = stream_ids(slow) + stream_ids(rest)
    assert ids == list(range(stream_entry_count(n_steps))), (
        f"slow got {stream_ids(slow)}, resumed got {stream_ids(rest)}"
    )
    assert stream_data(slow) + stream_data(rest) == stored_stream(tuned, workflow_id)
    assert memory_after < memory_before + 100, (
        f"RSS grew from {memory_before} MB to {memory_after} MB"
    )


# --- WebSocket -----------------------------------------------------------------------------


def test_websocket_send_is_acked_and_the_workflow_reacts(
    client: httpx.Client, base_url: str
) -> None:
    """A `send` frame to a waiting messaging workflow is acked with its id; event frames then
    show it approved, processing and completed, and a `closed` frame ends the socket."""
    workflow_id = unique_id("live-ws-send")
    start(client, "messaging", workflow_id, 2, step_seconds=0.05)
    with connect(ws_url(base_url, workflow_id), open_timeout=WS_TIMEOUT) as ws:
        ws_until(ws, "event")  # the socket is subscribed: the first event is here
        payload = {"approved": True}
        ws.send(json.dumps({"type": "send", "id": "a1", "payload": payload}))
        frames = list(ws_frames(ws))
        close_code = ws.close_code

    acks = [frame for frame in frames if frame["type"] == "ack"]
    assert acks == [{"type": "ack", "id": "a1", "topic": names.TOPIC_NOTIFICATION}], f"{frames}"
    statuses = [f["value"] for f in frames if f["type"] == "event" and f["key"] == "status"]
    assert statuses[0] == names.STATUS_APPROVED and statuses[-1] == names.STATUS_COMPLETED, (
        f"status events after the send: {statuses}"
    )
    assert names.status_processing(2) in statuses, f"status events {statuses}"
    messages = [f["value"] for f in frames if f["type"] == "event" and f["key"] == "message"]
    assert messages == [payload], f"message events {messages}"
    assert frames[-1] == {"type": "closed", "status": "SUCCESS"}, f"last frame {frames[-1]}"
    kinds = [f["type"] if f["type"] != "status" else f["workflow"]["status"] for f in frames]
    last_event = max(i for i, kind in enumerate(kinds) if kind == "event")
    assert kinds.index("SUCCESS") > last_event, f"SUCCESS before the last event: {kinds}"
    assert close_code == 1000, f"close code {close_code}"
    assert finished(client, workflow_id)["result"]["approved"] is True


def test_websocket_stream_frames_carry_offsets(client: httpx.Client, base_url: str) -> None:
    """A socket on a streaming workflow gets each stream value once as a `stream` frame with
    its offset, then `stream_closed` with the next offset, then `closed`."""
    workflow_id, n_steps = unique_id("live-ws-stream"), 4
    start(client, "streaming", workflow_id, n_steps, step_seconds=0.05)
    with connect(ws_url(base_url, workflow_id), open_timeout=WS_TIMEOUT) as ws:
        frames = list(ws_frames(ws))
    stream = [frame for frame in frames if frame["type"] == "stream"]
    expected = stream_entry_count(n_steps)

    offsets = [frame["offset"] for frame in stream]
    assert offsets == list(range(expected)), f"offsets {offsets}"
    assert {frame["key"] for frame in stream} == {names.STREAM_PROGRESS}, f"{stream[:2]}"
    assert [frame["value"] for frame in stream] == stored_stream(client, workflow_id)
    closes = [frame for frame in frames if frame["type"] == "stream_closed"]
    assert closes == [
        {"type": "stream_closed", "key": names.STREAM_PROGRESS, "next_offset": expected}
    ], f"stream_closed frames {closes}"
    assert frames[-1] == {"type": "closed", "status": "SUCCESS"}, f"last frame {frames[-1]}"


def test_websocket_bad_frames_get_errors_and_socket_stays_usable(
    client: httpx.Client, base_url: str
) -> None:
    """Invalid JSON, a wrong type, a missing or non-object payload, a binary frame and an
    oversize frame each get an error frame; a valid send afterwards is still acked."""
    workflow_id = unique_id("live-ws-bad")
    start(client, "messaging", workflow_id, 1, step_seconds=0)
    bad: list[tuple[str | bytes, str]] = [
        ("{not json", "Invalid JSON"),
        (json.dumps({"type": "shout", "id": "b2", "payload": {}}), "type"),
        (json.dumps({"type": "send", "id": "b3"}), "payload: Field required"),
        (json.dumps({"type": "send", "id": "b4", "payload": [1, 2]}), "payload"),
        (b"\x00\x01binary", "binary"),
        (json.dumps({"type": "send", "id": "b6", "payload": {"x": "a" * 66_000}}), "too large"),
    ]
    with connect(ws_url(base_url, workflow_id), open_timeout=WS_TIMEOUT) as ws:
        for frame, _ in bad:
            ws.send(frame)
        ws.send(json.dumps({"type": "send", "id": "ok", "payload": {"approved": True}}))
        frames = ws_until(ws, "ack")

    errors = [frame for frame in frames if frame["type"] == "error"]
    assert len(errors) == len(bad), (
        f"{len(errors)} error frames for {len(bad)} bad frames: {errors}"
    )
    for (_, expected), error in zip(bad, errors, strict=True):
        assert expected.lower() in error["detail"].lower(), f"{expected!r} not in {error}"
    assert [e["id"] for e in errors[1:4]] == ["b2", "b3", "b4"], f"error ids {errors}"
    assert frames[-1] == {"type": "ack", "id": "ok", "topic": names.TOPIC_NOTIFICATION}, (
        f"after the bad frames: {frames[-1]}"
    )


# COMM_MAX_MESSAGE_BYTES and the transport's hard cap on a frame (4 times it) by default.
MESSAGE_BOUND = names.MESSAGE_MAX_BYTES_DEFAULT
FRAME_CAP = 4 * MESSAGE_BOUND


def test_websocket_frames_over_the_bound_get_errors_until_the_transport_cap(
    client: httpx.Client, base_url: str
) -> None:
    """Frames of 70,000 and 200,000 bytes (over the 65,536-byte message bound, under the
    262,144-byte transport cap) each get an error frame and the socket goes on; a frame over
    the cap closes the socket with 1009."""
    workflow_id = unique_id("live-ws-big")
    start(client, "messaging", workflow_id, 1, step_seconds=0, approval_timeout=120)

    def frame_of(size: int, frame_id: str) -> str:
        head = json.dumps({"type": "send", "id": frame_id, "payload": {"x": ""}})
        text = head.replace('"x": ""', '"x": "' + "a" * (size - len(head)) + '"')
        assert len(text.encode()) == size
        return text

    # Another topic: the workflow waits on `notification`, so it keeps waiting.
    other = {"type": "send", "id": "ok", "topic": "other", "payload": {"small": True}}
    with connect(ws_url(base_url, workflow_id), open_timeout=WS_TIMEOUT) as ws:
        ws.send(frame_of(70_000, "s70k"))
        ws.send(frame_of(200_000, "s200k"))
        ws.send(json.dumps(other))
        frames = ws_until(ws, "ack")
        ws.send(frame_of(FRAME_CAP + 1, "over"))
        after = list(ws_frames(ws))
        close_code = ws.close_code
    client.post(f"/workflows/{workflow_id}/cancel")

    errors = [frame for frame in frames if frame["type"] == "error"]
    assert [e["detail"] for e in errors] == [
        f"Frame too large: the limit is {MESSAGE_BOUND} bytes."
    ] * 2, f"error frames {errors}"
    assert frames[-1] == {"type": "ack", "id": "ok", "topic": "other"}, f"{frames[-1]}"
    assert not [f for f in after if f["type"] in ("ack", "error")], f"after the cap: {after}"
    assert close_code == 1009, f"close code {close_code} after a {FRAME_CAP + 1}-byte frame"


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("{id}", "stream_offset=1073741825", "query.stream_offset"),
        ("{id}", "stream_offset=-1", "query.stream_offset"),
        ("{id}", "stream_key=a%2Fb", "query.stream_key"),
        ("bad%20id", "", "path.workflow_id"),
        ("x" * 129, "", "path.workflow_id"),
    ],
    ids=["offset-over", "offset-negative", "key-slash", "id-space", "id-129"],
)
def test_websocket_out_of_bounds_parameter_gets_an_error_frame_and_4422(
    client: httpx.Client, base_url: str, path: str, query: str, field: str
) -> None:
    """A parameter out of bounds is not a bare 403 handshake refusal: the socket opens, gets
    one error frame naming the field, and closes with 4422 (its own code, not auth's)."""
    workflow_id = unique_id("live-ws-422")
    start(client, "events", workflow_id, 1, step_seconds=0)
    url = f"{base_url.replace('http', 'ws', 1)}/ws/workflows/{path.format(id=workflow_id)}"
    with connect(url + (f"?{query}" if query else ""), open_timeout=WS_TIMEOUT) as ws:
        frames = list(ws_frames(ws))
        close_code = ws.close_code
    assert [frame["type"] for frame in frames] == ["error"], f"frames {frames}"
    assert frames[0]["id"] is None, frames
    assert frames[0]["detail"].startswith(f"Invalid parameter: {field}: "), frames[0]
    assert close_code == 4422, f"close code {close_code}"


def test_websocket_unknown_workflow_is_refused(base_url: str) -> None:
    """A socket on a workflow that does not exist gets an error frame and close code 4404."""
    workflow_id = unique_id("live-ws-none")
    with connect(ws_url(base_url, workflow_id), open_timeout=WS_TIMEOUT) as ws:
        frames = list(ws_frames(ws))
        close_code = ws.close_code
    assert [frame["type"] for frame in frames] == ["error"], f"frames {frames}"
    assert "does not exist" in frames[0]["detail"], f"error {frames[0]}"
    assert close_code == 4404, f"close code {close_code}"


# --- limits, shutdown, heartbeats ----------------------------------------------------------


@pytest.mark.needs_own_server
def test_connection_cap_refuses_then_admits_after_a_close(
    tuned: httpx.Client, tuned_server: ServerProcess
) -> None:
    """At COMM_MAX_LIVE_CONNECTIONS=2, a third SSE gets a 503 JSON detail and a socket an
    error frame and close 1013; once one connection closes, a new one is accepted."""
    workflow_id = unique_id("live-cap")
    start(tuned, "messaging", workflow_id, 1, step_seconds=0)
    path = f"/workflows/{workflow_id}/live"
    with ExitStack() as first, ExitStack() as second:
        held = []  # referenced: a dropped iterator closes its connection
        for stack in (first, second):
            source = stack.enter_context(connect_sse(tuned, "GET", path, timeout=SSE_TIMEOUT))
            held.append(sse_events(source))
            next(held[-1])  # subscribed: the current status is here
        with tuned.stream("GET", path) as third:
            refused = (third.status_code, third.read() if third.status_code != 200 else b"")
        with connect(ws_url(tuned_server.base_url, workflow_id), open_timeout=WS_TIMEOUT) as ws:
            ws_refusal = list(ws_frames(ws))
            ws_close = ws.close_code
        first.close()

        def admitted() -> bool:
            with connect_sse(tuned, "GET", path, timeout=SSE_TIMEOUT) as source:
                return source.response.status_code == 200 and bool(next(sse_events(source)))

        wait_until(admitted, timeout=10, what="a live connection after one closed")
    tuned.post(f"/send-message/{workflow_id}", json={"approved": False})

    assert refused[0] == 503, f"third connection: {refused}"
    assert f"limit {TUNED_CAP}" in json.loads(refused[1])["detail"], f"503 body {refused}"
    assert [frame["type"] for frame in ws_refusal] == ["error"], f"socket frames {ws_refusal}"
    assert ws_close == 1013, f"socket close code {ws_close}"


@pytest.mark.needs_own_server
def test_idle_sse_connection_gets_heartbeat_comments(tuned: httpx.Client) -> None:
    """At COMM_SSE_HEARTBEAT_SEC=0.2, an idle SSE connection receives `: ping` comments."""
    workflow_id = unique_id("live-ping")
    start(tuned, "messaging", workflow_id, 1, step_seconds=0)
    lines: list[str] = []
    began = time.monotonic()
    with tuned.stream(
        "GET", f"/workflows/{workflow_id}/live", timeout=httpx.Timeout(10.0, read=5.0)
    ) as response:
        for line in response.iter_lines():
            lines.append(line)
            if lines.count(": ping") == 3:
                break
    took = time.monotonic() - began
    tuned.post(f"/send-message/{workflow_id}", json={"approved": False})

    pings = lines.count(": ping")
    assert pings == 3, f"{pings} pings in {took:.2f}s: {lines}"
    print(f"\n[heartbeat] 3 pings in {took:.2f}s at {TUNED_HEARTBEAT} s")  # noqa: T201


# --- errors before the stream starts -------------------------------------------------------


@pytest.mark.both_backends
@pytest.mark.parametrize(
    "path", ["/workflow-stream/{}/live", "/workflow-events/{}/live", "/workflows/{}/live"]
)
def test_unknown_workflow_gets_404_json(client: httpx.Client, path: str) -> None:
    """Every SSE endpoint answers 404 JSON, not an event stream, for an unknown workflow."""
    workflow_id = unique_id("live-none")
    response = client.get(path.format(workflow_id))
    assert response.status_code == 404, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "does not exist" in response.json()["detail"], response.text


@pytest.mark.parametrize("last_event_id", ["abc", "-2", "1.5"])
def test_invalid_last_event_id_gets_422(client: httpx.Client, last_event_id: str) -> None:
    """A Last-Event-ID that is not an offset (0 or more) is refused with 422."""
    workflow_id = unique_id("live-bad-id")
    start(client, "streaming", workflow_id, 1, step_seconds=0)
    response = client.get(
        f"/workflow-stream/{workflow_id}/live", headers={"Last-Event-ID": last_event_id}
    )
    assert response.status_code == 422, f"{last_event_id!r}: {response.status_code}"
    assert "Last-Event-ID" in response.text, response.text


@pytest.mark.parametrize(
    "path", ["/workflow-stream/{}/live", "/workflow-events/{}/live"], ids=["stream", "events"]
)
@pytest.mark.parametrize("last_event_id", [-1, names.STREAM_OFFSET_MAX])
def test_last_event_id_out_of_bounds_is_a_422_naming_the_header(
    client: httpx.Client, path: str, last_event_id: int
) -> None:
    """Last-Event-ID is the id of an event received: 0 to 2^30 - 1, so a stream resumes at
    most at offset 2^30, the bound of ?offset=. -1 and 2^30 get a JSON 422 naming it."""
    workflow_id = unique_id("live-id-bound")
    start(client, "streaming", workflow_id, 1, step_seconds=0)
    response = client.get(path.format(workflow_id), headers={"Last-Event-ID": str(last_event_id)})
    assert response.status_code == 422, f"{last_event_id}: {response.status_code}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    [error] = response.json()["detail"]
    assert error["loc"] == ["header", "Last-Event-ID"], error


def test_last_event_id_at_its_bound_resumes_at_the_offset_bound(client: httpx.Client) -> None:
    """Last-Event-ID 2^30 - 1 on a finished stream: nothing to send, and `closed` says
    next_offset 2^30, within the documented bound."""
    workflow_id = unique_id("live-id-max")
    start(client, "streaming", workflow_id, 1, step_seconds=0)
    finished(client, workflow_id)
    events = read_sse(
        client,
        f"/workflow-stream/{workflow_id}/live",
        headers={"Last-Event-ID": str(names.STREAM_OFFSET_MAX - 1)},
    )
    assert [event.event for event in events] == ["closed"], [e.event for e in events]
    assert events[0].json()["next_offset"] == names.STREAM_OFFSET_MAX, events[0].data


# Last: it stops the tuned server (a later user of it would restart it).
@pytest.mark.needs_own_server
def test_sigterm_ends_live_connections_and_exits_promptly(
    tuned: httpx.Client, tuned_server: ServerProcess
) -> None:
    """SIGTERM with an SSE client and a WebSocket client on a waiting workflow: the SSE client
    gets `event: shutdown`, the socket a `shutdown` frame, and the server exits within 10 s."""
    workflow_id = unique_id("live-term")
    start(tuned, "messaging", workflow_id, 1, step_seconds=0)
    process = tuned_server.process
    assert process is not None
    with (
        connect_sse(tuned, "GET", f"/workflow-events/{workflow_id}/live") as source,
        connect(ws_url(tuned_server.base_url, workflow_id), open_timeout=WS_TIMEOUT) as ws,
    ):
        events = sse_events(source)
        first = next(events)
        ws_until(ws, "event")
        began = time.monotonic()
        process.terminate()
        exit_code = process.wait(timeout=30)
        took = time.monotonic() - began
        # What the server sent before it went is still in this side's socket buffers.
        rest: list[ServerSentEvent] = []
        try:
            rest.extend(events)
        except httpx.TransportError as exc:  # the server went without ending the response
            rest.append(ServerSentEvent(event="broken", data=repr(exc)))
        frames = list(ws_frames(ws))
        ws_close = ws.close_code
    print(f"\n[shutdown] server exited {exit_code} {took:.2f}s after SIGTERM")  # noqa: T201

    assert first.json()["value"] == names.STATUS_WAITING, f"first event {first.data}"
    assert rest and rest[-1].event == "shutdown", f"SSE after SIGTERM: {rest}"
    assert rest[-1].json()["last_event_id"] == int(first.id), f"shutdown {rest[-1].data}"
    assert frames[-1:] == [{"type": "shutdown", "resume_offset": 0}], f"socket: {frames}"
    assert ws_close == 1001, f"socket close code {ws_close}"
    assert took < 10, f"server took {took:.2f}s to exit after SIGTERM"
