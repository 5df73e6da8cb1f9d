"""One mechanism for every wait and watch: shared per-workflow state, batched database reads.

The servers here count the SQL statements they send (`python -m bench.server`: the app plus
`/bench/db-statements/by-source`, and the rows returned, `/bench/db-rows/by-shape`), so the
tests can check what the live hub costs the database:
- many requests waiting on one event key are answered with the same value, read once;
- the batched status poll is one statement per interval, whatever the number of watched
  workflows, and so are the heads of the watched live timelines;
- one request after another to a service workflow reads its new event rows only, not its
  whole history;
- a status change made by another instance reaches the subscribers of this one;
- `GET /workflows/live` pushes new workflows and status changes, to each tenant its own;
- a live stream can start with its last N values (`tail`) or its latest (`from=latest`).
No timing is asserted: every wait is for an observable condition, with a generous deadline.
"""

import asyncio
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dbos import DBOSClient, EnqueueOptions
from httpx_sse import ServerSentEvent, connect_sse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support import ServerProcess, gauge, unique_id, wait_until
from workflow_comm import names

pytestmark = pytest.mark.needs_own_server

WAIT = 60.0  # seconds: the longest any condition here is waited for
SSE_TIMEOUT = httpx.Timeout(30.0, read=30.0)
N_WAITERS = 200
# The statements of the live hub, by the start of their text (dbos_internals.py).
EVENTS_READ = "SELECT h.workflow_uuid, h.key, h.value, h.serialization, h.function_id"
STATUS_POLL = (
    "SELECT s.workflow_uuid, s.status FROM dbos.workflow_status s JOIN unnest(",
    "SELECT s.workflow_uuid, s.status FROM workflow_status s JOIN (SELECT i.value",
)
# The live timelines' heads (dbos_internals.live_timeline_queries): one per interval.
# A request's read of one workflow's status (dbos_internals.DirectReads.status).
STATUS_READ = "SELECT s.workflow_uuid, s.status, s.name, s.created_at"
TIMELINE_HEADS = "SELECT s.workflow_uuid, s.created_at, s.executor_id, s.status, s.updated_at"
# What sends statements on a clock of its own, whatever is watched (bench/server.py names the
# sources): DBOS's queue, scheduler, background-jobs and LISTEN threads, and the takeover
# scan's and executor lock's connections (takeover.py). How many of theirs fall into a window
# depends on how long the window lasts, not on how many workflows are watched.
CLOCK_DRIVEN = (
    "queue_thread",
    "queue-worker-",
    "dynamic_scheduler_loop",
    "dbos-background-jobs",
    "run_notification_listener",
    "takeover-scan",
    "executor-lock",
)
TENANT_KEYS = {"acme": "acme-key-0123456789abcdef", "globex": "globex-key-0123456789abcdef"}


class CountingServer(ServerProcess):
    """The server with the benchmark's statement counter (bench/server.py)."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.server", "--port", str(self.port)]


@pytest.fixture(scope="module")
def server(postgres_url: str) -> Iterator[ServerProcess]:
    with CountingServer(postgres_url) as started:
        yield started


@pytest.fixture(scope="module")
def sqlite_server_counted() -> Iterator[ServerProcess]:
    """On a SQLite file of its own, named, so a DBOSClient can reach the same database."""
    folder = Path(tempfile.mkdtemp(prefix="comm-sqlite-"))
    with CountingServer(f"sqlite:///{folder / 'comm.sqlite'}", workdir=folder) as started:
        yield started


@pytest.fixture(scope="module")
def other_instance(postgres_url: str) -> Iterator[ServerProcess]:
    """A second server process on the same Postgres (another executor)."""
    with ServerProcess(postgres_url) as started:
        yield started


@pytest.fixture(scope="module")
def tenant_server(postgres_url: str) -> Iterator[ServerProcess]:
    keys = ",".join(f"{key}:write:{tenant}" for tenant, key in TENANT_KEYS.items())
    with ServerProcess(postgres_url, env={"COMM_API_KEYS": keys}) as started:
        yield started


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        yield client


def statements(http: httpx.Client, *, clock_driven: bool = True) -> Counter[str]:
    """The statements the server has sent so far, by shape; without `clock_driven`, only
    those of the threads and connections that serve clients and the live hub."""
    sources: dict[str, dict[str, int]] = http.get("/bench/db-statements/by-source").json()
    shapes: Counter[str] = Counter()
    for source, counts in sources.items():
        if clock_driven or not source.startswith(CLOCK_DRIVEN):
            shapes.update(counts)
    return shapes


def rows(http: httpx.Client) -> Counter[str]:
    """The rows the server's SELECTs have returned so far, by statement shape (Postgres)."""
    return Counter(http.get("/bench/db-rows/by-shape").json())


def count_of(shapes: Counter[str], prefix: str | tuple[str, ...]) -> int:
    return sum(n for shape, n in shapes.items() if shape.startswith(prefix))


def start_messaging(http: httpx.Client, workflow_id: str) -> None:
    """A workflow that waits (up to 600 s, past every test here) for one message."""
    answer = http.post(
        f"/start-workflow-messaging/{workflow_id}/1",
        params={"step_seconds": 0, "approval_timeout": 600},
    )
    assert answer.status_code == 200, answer.text
    waiting = http.get(f"/workflow-events/{workflow_id}/status", params={"timeout": WAIT})
    assert waiting.json()["value"] == names.STATUS_WAITING, waiting.text


def until(deadline: float, events: Iterator[ServerSentEvent]) -> Iterator[ServerSentEvent]:
    """The events with data, failing once `deadline` (time.monotonic()) has passed: idle
    responses keep sending heartbeats, so a read alone would never time out."""
    for event in events:
        assert time.monotonic() < deadline, "no expected event before the deadline"
        if event.data:
            yield event


def sse_until_end(client: httpx.Client, path: str, **options: Any) -> list[ServerSentEvent]:
    """Every event with data up to and including an end event."""
    seen: list[ServerSentEvent] = []
    with connect_sse(client, "GET", path, timeout=SSE_TIMEOUT, **options) as source:
        assert source.response.status_code == 200, source.response.read()
        for event in source.iter_sse():
            if event.data:
                seen.append(event)
                if event.event in ("closed", "overflow", "shutdown"):
                    break
    return seen


class Background:
    """Runs coroutines on an event loop of its own thread, for many concurrent clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def background() -> Iterator[Background]:
    runner = Background()
    yield runner
    runner.close()


# --- waiting requests ------------------------------------------------------------------------


def test_many_waiters_on_one_key_get_the_same_value_read_once(
    http: httpx.Client, server: ServerProcess, background: Background
) -> None:
    """200 requests wait on one key; the message that sets it answers them all with the same
    value, and the database is read for it a handful of times (once per change the workflow
    makes), not once per waiting request. A request that comes to wait on a workflow already
    waited on reads nothing at all: not even the workflow's status."""
    workflow_id = unique_id("shared-wait")
    start_messaging(http, workflow_id)

    async def wait(count: int) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=count + 10)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as client:
            path = f"/workflow-events/{workflow_id}/{names.EVENT_MESSAGE}"
            return await asyncio.gather(
                *(
                    client.get(path, params={"timeout": WAIT}, timeout=WAIT + 30)
                    for _ in range(count)
                )
            )

    def waiting(count: int) -> None:
        wait_until(
            lambda: gauge(http, "comm_waiting_requests") >= count,
            timeout=WAIT,
            what=f"{count} requests waiting",
        )

    first = background.submit(wait(1))
    waiting(1)
    status_reads_before = count_of(statements(http), STATUS_READ)
    others = background.submit(wait(N_WAITERS - 1))
    waiting(N_WAITERS)
    status_reads = count_of(statements(http), STATUS_READ) - status_reads_before
    assert status_reads == 0, f"{status_reads} status reads by {N_WAITERS - 1} more waiters"
    before = count_of(statements(http), EVENTS_READ)
    # A rejection: the workflow sets `message`, then `result` and `status`, and ends.
    message = {"approved": False, "note": "read once"}
    sent = http.post(f"/send-message/{workflow_id}", json=message)
    assert sent.status_code == 200, sent.text
    responses = first.result(timeout=WAIT + 60) + others.result(timeout=WAIT + 60)
    reads = count_of(statements(http), EVENTS_READ) - before

    assert [r.status_code for r in responses] == [200] * N_WAITERS, {
        r.status_code: r.text for r in responses
    }
    values = {json.dumps(r.json(), sort_keys=True) for r in responses}
    expected = {"workflow_id": workflow_id, "event_key": names.EVENT_MESSAGE, "value": message}
    assert values == {json.dumps(expected, sort_keys=True)}, values
    # At most one read per event the workflow set (3) and one after it finished, plus slack
    # for notifications that arrive while a read runs; never one per waiter.
    assert reads <= 8, f"{reads} event reads for {N_WAITERS} waiters"


def test_waiter_whose_key_is_set_gets_it_at_once_and_timeout_keeps_its_message(
    http: httpx.Client,
) -> None:
    workflow_id = unique_id("shared-timeout")
    start_messaging(http, workflow_id)
    now = http.get(f"/workflow-events/{workflow_id}/status", params={"timeout": 100})
    assert now.status_code == 200 and now.json()["value"] == names.STATUS_WAITING, now.text
    missing = http.get(f"/workflow-events/{workflow_id}/never", params={"timeout": 1})
    assert missing.status_code == 404, missing.text
    assert missing.json() == {
        "detail": f"Event 'never' is not set on workflow '{workflow_id}': "
        "it was not set within 1s; retry or raise ?timeout=."
    }
    http.post(f"/workflows/{workflow_id}/cancel")


def test_waiter_learns_the_workflow_finished_without_the_key(
    http: httpx.Client, background: Background, server: ServerProcess
) -> None:
    workflow_id = unique_id("shared-finished")
    start_messaging(http, workflow_id)

    async def wait_one() -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            return await client.get(
                f"/workflow-events/{workflow_id}/never", params={"timeout": 100}, timeout=130
            )

    answer = background.submit(wait_one())
    wait_until(lambda: gauge(http, "comm_waiting_requests") >= 1, timeout=WAIT, what="a waiter")
    http.post(f"/send-message/{workflow_id}", json={"approved": False})
    response = answer.result(timeout=WAIT)
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == (
        f"Event 'never' is not set on workflow '{workflow_id}': "
        "the workflow finished (SUCCESS) without setting it."
    )


# --- the batched poll ------------------------------------------------------------------------


def statements_per_poll(
    http: httpx.Client, polls: int, interval: str | tuple[str, ...] = STATUS_POLL
) -> float:
    """The statements the server sends per status poll (or per statement of another shape
    sent once per interval), over `polls` polls, but those sent on a clock of their own
    (CLOCK_DRIVEN): on a loaded machine the window stretches, and more of theirs fall into it,
    with no watcher costing any more."""
    first = statements(http, clock_driven=False)
    wait_until(
        lambda: count_of(statements(http), interval) - count_of(first, interval) >= polls,
        timeout=WAIT,
        what=f"{polls} polls",
    )
    last = statements(http, clock_driven=False)
    done = count_of(last, interval) - count_of(first, interval)
    return (sum(last.values()) - sum(first.values())) / done


def enqueue_idle(server: ServerProcess, workflow_ids: list[str]) -> None:
    """Workflows that stay idle whatever the time: enqueued on a queue no process serves, so
    they stay ENQUEUED (not finished, so watched and polled) and nothing runs or waits in
    them. A running workflow would not do: one asleep in a step wakes and writes once its
    step ends, and one waiting in recv costs DBOS's own polling on SQLite, per waiter."""
    client = DBOSClient(system_database_url=server.env["DBOS_SYSTEM_DATABASE_URL"])
    try:
        for workflow_id in workflow_ids:
            options: EnqueueOptions = {
                "queue_name": "never-served",
                "workflow_name": "idle",
                "workflow_id": workflow_id,
            }
            client.enqueue(options)
    finally:
        client.destroy()


OPENING = 20  # live connections idle_cost opens at once


def idle_cost(
    server: ServerProcess,
    background: Background,
    paths: list[str],
    interval: str | tuple[str, ...] = STATUS_POLL,
) -> float:
    """Statements per poll (see statements_per_poll) while each of `paths` is watched over
    SSE by one client."""
    stop = asyncio.Event()

    async def watch() -> None:
        limits = httpx.Limits(max_connections=len(paths) + 10)
        # Opened OPENING at a time: this measures watching, not a burst of opens (which a
        # loaded machine may answer with 503 once its reads take over COMM_DB_TIMEOUT_SEC).
        opening = asyncio.Semaphore(OPENING)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as client:

            async def one(path: str) -> None:
                async with opening:
                    request = client.build_request("GET", path, timeout=None)
                    answer = await client.send(request, stream=True)
                try:
                    assert answer.status_code == 200
                    reading = asyncio.ensure_future(answer.aread())
                    await stop.wait()
                    reading.cancel()
                finally:
                    await answer.aclose()

            await asyncio.gather(*(one(path) for path in paths), return_exceptions=True)

    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        running = background.submit(watch())
        wait_until(
            lambda: gauge(http, "comm_live_connections") == len(paths),
            timeout=WAIT,
            what=f"{len(paths)} live connections",
        )
        try:
            statements_per_poll(http, 2, interval)  # settle: everything watched has been read
            return statements_per_poll(http, 12, interval)
        finally:
            background.loop.call_soon_threadsafe(stop.set)
            running.result(timeout=WAIT)
            wait_until(
                lambda: gauge(http, "comm_live_connections") == 0,
                timeout=WAIT,
                what="live connections closed",
            )


@pytest.fixture(scope="module")
def idle_workflows(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[list[str]]:
    """N_WAITERS idle workflows (enqueue_idle) on the Postgres server, for the tests that
    watch many; cancelled at the end of the module."""
    workflow_ids = [unique_id("shared-idle") for _ in range(N_WAITERS)]
    enqueue_idle(server, workflow_ids)
    yield workflow_ids
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        for workflow_id in workflow_ids:
            http.post(f"/workflows/{workflow_id}/cancel")


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_poll_statements_do_not_grow_with_watched_workflows(
    database: str, request: pytest.FixtureRequest, background: Background
) -> None:
    """Idle, the server sends the same statements per status-poll interval whether 5 or 200
    workflows are watched (status and events, over SSE): one status query covers them all,
    and on SQLite one events query per events poll. DBOS's background threads and the
    takeover scan, on clocks of their own, are not counted (CLOCK_DRIVEN). The watched
    workflows are ENQUEUED on a queue nobody serves, so nothing at all changes while they
    are watched."""
    if database == "postgres":
        server: ServerProcess = request.getfixturevalue("server")
        workflow_ids: list[str] = request.getfixturevalue("idle_workflows")
    else:
        server = request.getfixturevalue("sqlite_server_counted")
        workflow_ids = [unique_id("shared-poll") for _ in range(N_WAITERS)]
        enqueue_idle(server, workflow_ids)
    paths = [f"/workflow-events/{workflow_id}/live" for workflow_id in workflow_ids]
    few = idle_cost(server, background, paths[:5])
    many = idle_cost(server, background, paths)
    # On SQLite the events poll runs five times per status poll, on its own timer: a little
    # more room for how many of them fall into a window.
    slack = 1.0 if database == "postgres" else 2.0
    measured = f"{few:.2f} statements per status poll with 5 watched, {many:.2f} with 200"
    print(f"\n[{database}] {measured}")  # noqa: T201
    assert many <= few + slack, measured


def test_timeline_statements_do_not_grow_with_watched_timelines(
    server: ServerProcess, background: Background, idle_workflows: list[str]
) -> None:
    """Idle, live timelines cost the same statements per interval whether 5 or 200 are
    watched: one statement reads the heads of them all, and nothing else is read while no
    head moves (no timeline is read on its own, per interval or otherwise)."""
    paths = [f"/workflows/{workflow_id}/timeline/live" for workflow_id in idle_workflows]
    few = idle_cost(server, background, paths[:5], TIMELINE_HEADS)
    many = idle_cost(server, background, paths, TIMELINE_HEADS)
    measured = f"{few:.2f} statements per interval with 5 timelines watched, {many:.2f} with 200"
    print(f"\n{measured}")  # noqa: T201
    assert many <= few + 1.0, measured


def test_each_request_reads_only_the_new_event_rows(http: httpx.Client) -> None:
    """One request after another to one service workflow: each request's wait reads the
    service's new event rows (its count and its reply), not its whole event history, which
    grows by two rows per request: the hub keeps the workflow's state between waiters."""
    workflow_id = unique_id("shared-service")
    started = http.post(f"/start-workflow-service/{workflow_id}", params={"idle_timeout": 600})
    assert started.status_code == 200, started.text
    rows_read: list[int] = []
    for n in range(30):
        before = count_of(rows(http), EVENTS_READ)
        answer = http.post(f"/workflows/{workflow_id}/request", json={"n": n})
        assert answer.status_code == 200, answer.text
        rows_read.append(count_of(rows(http), EVENTS_READ) - before)
    http.post(f"/workflows/{workflow_id}/cancel")
    # Each request sets two events; a read may come between them, or see one twice if a
    # notification lands while it runs. The whole history of the last request is 61 rows.
    assert max(rows_read[10:]) <= 6, f"event rows read per request: {rows_read}"


# --- several instances -----------------------------------------------------------------------


def test_status_change_by_another_instance_reaches_subscribers(
    http: httpx.Client, server: ServerProcess, other_instance: ServerProcess
) -> None:
    """A workflow watched here (SSE and WebSocket) is cancelled through another server
    process: both subscribers see CANCELLED and the end."""
    workflow_id = unique_id("shared-other")
    start_messaging(http, workflow_id)
    ws_url = server.base_url.replace("http", "ws", 1) + f"/ws/workflows/{workflow_id}"
    with connect(ws_url, open_timeout=30) as socket:
        frames: list[dict[str, Any]] = []

        def socket_saw_pending() -> bool:
            frames.append(json.loads(socket.recv(timeout=WAIT)))
            return any(f["type"] == "status" for f in frames)

        wait_until(socket_saw_pending, timeout=WAIT, interval=0, what="the PENDING status frame")
        seen: list[ServerSentEvent] = []
        with connect_sse(
            http, "GET", f"/workflows/{workflow_id}/live", timeout=SSE_TIMEOUT
        ) as source:
            events = (e for e in source.iter_sse() if e.data)
            seen.append(next(events))
            assert seen[0].json()["status"] == "PENDING", seen[0].data
            cancelled = httpx.post(f"{other_instance.base_url}/workflows/{workflow_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            for event in events:
                seen.append(event)
                if event.event == "closed":
                    break
        while frames[-1]["type"] != "closed":
            frames.append(json.loads(socket.recv(timeout=WAIT)))
    assert [e.json()["status"] for e in seen] == ["PENDING", "CANCELLED", "CANCELLED"], seen
    assert seen[-1].event == "closed"
    statuses = [f["workflow"]["status"] for f in frames if f["type"] == "status"]
    assert statuses == ["PENDING", "CANCELLED"], frames
    assert frames[-1] == {"type": "closed", "status": "CANCELLED"}, frames


# --- GET /workflows/live ---------------------------------------------------------------------


def test_workflow_list_live_pushes_new_workflows_and_changes_per_tenant(
    tenant_server: ServerProcess,
) -> None:
    base = tenant_server.base_url
    acme = {"X-API-Key": TENANT_KEYS["acme"]}
    globex = {"X-API-Key": TENANT_KEYS["globex"]}
    mine, theirs = unique_id("shared-list"), unique_id("shared-list")
    seen: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=30.0) as client:
        path = f"/workflows/live?api_key={TENANT_KEYS['acme']}"
        with connect_sse(client, "GET", path, timeout=SSE_TIMEOUT) as source:
            assert source.response.status_code == 200, source.response.read()
            assert source.response.headers["cache-control"] == "no-cache"
            events = until(time.monotonic() + WAIT, source.iter_sse())
            for who, workflow_id in ((globex, theirs), (acme, mine)):
                started = client.post(
                    f"/start-workflow-messaging/{workflow_id}/1",
                    params={"step_seconds": 0, "approval_timeout": 600},
                    headers=who,
                )
                assert started.status_code == 200, started.text
            for event in events:  # a status seen once per poll: PENDING before it changes
                seen.append(event.json())
                if seen[-1]["workflow_id"] == mine:
                    break
            cancelled = client.post(f"/workflows/{mine}/cancel", headers=acme)
            assert cancelled.status_code == 200, cancelled.text
            for event in events:
                seen.append(event.json())
                if seen[-1]["workflow_id"] == mine and seen[-1]["status"] == "CANCELLED":
                    break
        client.post(f"/workflows/{theirs}/cancel", headers=globex)
    shown = [(w["workflow_id"], w["status"]) for w in seen]
    # globex's workflow started first: had it leaked, it would have come before acme's end.
    assert all(workflow_id == mine for workflow_id, _ in shown), shown
    assert shown[0] == (mine, "PENDING") and shown[-1] == (mine, "CANCELLED"), shown
    assert seen[0]["kind"] == "messaging", seen[0]


def test_workflow_list_live_applies_the_list_filters(http: httpx.Client) -> None:
    wanted, other = unique_id("shared-filter"), unique_id("shared-filter")
    seen: list[dict[str, Any]] = []
    with connect_sse(
        http, "GET", "/workflows/live?kind=events&status=SUCCESS", timeout=SSE_TIMEOUT
    ) as source:
        events = until(time.monotonic() + WAIT, source.iter_sse())
        http.post(f"/start-workflow-streaming/{other}/1", params={"step_seconds": 0})
        http.post(f"/start-workflow-events/{wanted}/1", params={"step_seconds": 0})
        for event in events:
            seen.append(event.json())
            if seen[-1]["workflow_id"] == wanted:
                break
    assert [(w["kind"], w["status"]) for w in seen] == [("events", "SUCCESS")] * len(seen), seen


# --- where a live stream starts --------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_stream(server: ServerProcess) -> str:
    """A streaming workflow of 3 steps, finished: 9 values, offsets 0 to 8, closed."""
    workflow_id = unique_id("shared-tail")
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        started = client.post(
            f"/start-workflow-streaming/{workflow_id}/3", params={"step_seconds": 0}
        )
        assert started.status_code == 200, started.text
        wait_until(
            lambda: client.get(f"/workflows/{workflow_id}").json()["status"] == "SUCCESS",
            timeout=WAIT,
            what="the streaming workflow's end",
        )
    return workflow_id


@pytest.mark.parametrize(
    ("query", "headers", "offsets"),
    [
        ("tail=2", {}, [7, 8]),
        ("tail=0", {}, []),
        ("tail=100", {}, list(range(9))),
        ("from=latest", {}, [8]),
        ("tail=2", {"Last-Event-ID": "3"}, [4, 5, 6, 7, 8]),  # a reconnect wins
        ("offset=6", {}, [6, 7, 8]),
    ],
)
def test_sse_stream_starts_where_asked(
    http: httpx.Client,
    finished_stream: str,
    query: str,
    headers: dict[str, str],
    offsets: list[int],
) -> None:
    seen = sse_until_end(http, f"/workflow-stream/{finished_stream}/live?{query}", headers=headers)
    assert [int(e.id) for e in seen[:-1]] == offsets, [(e.event, e.id) for e in seen]
    assert seen[-1].event == "closed" and seen[-1].json()["next_offset"] == 9, seen[-1].data


@pytest.mark.parametrize(
    ("query", "field"),
    [("tail=2&from=latest", "tail"), ("offset=1&tail=2", "offset"), ("tail=1001", "tail")],
)
def test_sse_stream_start_options_that_contradict_are_a_422(
    http: httpx.Client, finished_stream: str, query: str, field: str
) -> None:
    answer = http.get(f"/workflow-stream/{finished_stream}/live?{query}")
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["query", field], answer.text


@pytest.mark.parametrize(
    ("query", "offsets"),
    [("stream_tail=2", [7, 8]), ("stream_from=latest", [8]), ("stream_offset=5", [5, 6, 7, 8])],
)
def test_websocket_stream_starts_where_asked(
    server: ServerProcess, finished_stream: str, query: str, offsets: list[int]
) -> None:
    url = server.base_url.replace("http", "ws", 1) + f"/ws/workflows/{finished_stream}?{query}"
    frames: list[dict[str, Any]] = []
    with connect(url, open_timeout=30) as socket:
        while not frames or frames[-1]["type"] != "closed":
            frames.append(json.loads(socket.recv(timeout=WAIT)))
    assert [f["offset"] for f in frames if f["type"] == "stream"] == offsets, frames
    assert {"type": "stream_closed", "key": "progress_stream", "next_offset": 9} in frames


def test_websocket_contradicting_start_options_get_an_error_and_4422(
    server: ServerProcess, finished_stream: str
) -> None:
    query = "stream_tail=2&stream_from=latest"
    url = server.base_url.replace("http", "ws", 1) + f"/ws/workflows/{finished_stream}?{query}"
    with connect(url, open_timeout=30) as socket:
        frame = json.loads(socket.recv(timeout=WAIT))
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=WAIT)
        code = socket.close_code
    assert frame["type"] == "error", frame
    assert frame["detail"].startswith("Invalid parameter: query.stream_tail: Use either"), frame
    assert code == 4422, code
