"""What watching and waiting cost, and what a request costs: the idle, waiters and requests
phases. Each takes its baseline in the same run (the same server without the watchers or
waiters; the cheapest route) and reports numbers; the targets are checked in bench.report.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from bench import scenarios
from bench.http import HTTPError, HTTPTransport
from bench.load import RETRIED_503, _parked, bounded, cancel, retried, start_parked
from bench.meter import HealthProbe, Meter, tree_cpu_seconds
from bench.scenarios import drain, new_id
from bench.stats import summarize, thin
from bench.timed_workflows import GO_TOPIC, tick_key
from workflow_comm.names import TOPIC_NOTIFICATION

# Messaging workflows that must stay parked in recv for the whole phase.
PARKED_APPROVAL_SEC = 3600.0
# dbos 3.4: a waiting recv polls the database this often, in case a notification was lost.
DBOS_RECV_POLL_SEC = 60.0


async def _by_source(http: HTTPTransport) -> Counter[str]:
    """The statements the server has sent, by sending thread or connection and shape."""
    found: dict[str, dict[str, int]] = await http.request("GET", "/bench/db-statements/by-source")
    return Counter(
        {f"{source}: {shape}": n for source, shapes in found.items() for shape, n in shapes.items()}
    )


async def _window(
    meter: Meter, http: HTTPTransport, window_sec: float, probe_sec: float
) -> dict[str, Any]:
    """A quiet window (no request but the readings), then /health probed from a process
    of its own for `probe_sec`; with the statements the server sent most in the window."""
    base_url = http.base_url
    shapes = await _by_source(http)
    start = await meter.reading()
    await asyncio.sleep(window_sec)
    end = await meter.reading()
    shapes = await _by_source(http) - shapes
    top = [[round(n / window_sec, 2), shape] for shape, n in shapes.most_common(6)]

    def rate(prefix: str) -> float:
        return round(sum(n for s, n in shapes.items() if s.startswith(prefix)) / window_sec, 2)

    # The live hub's own reads (its threads are live-*), and DBOS's executor threads: with
    # workflows waiting in recv, DBOS polls each one's mailbox every 60 s (its fallback for
    # a lost notification), whether anyone watches or not.
    by_whom = {
        "live_hub_statements_per_sec": rate("live-"),
        "dbos_executor_statements_per_sec": rate("dbos-executor"),
    }
    with HealthProbe(base_url) as probe:
        await probe.ready()
        began = time.time()
        await asyncio.sleep(probe_sec)
    return {
        **meter.rates(start, end),
        "health": probe.summary(began),
        "top_statements_per_sec": top,
        **by_whom,
    }


async def _cleanly(cleanup: Awaitable[int]) -> tuple[int | None, str | None]:
    """Run a clean-up after a measurement: (workflows left PENDING, None), or (None, what
    went wrong) without losing the measurement."""
    try:
        return await cleanup, None
    except (HTTPError, OSError, TimeoutError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


async def _last_go(
    http: HTTPTransport,
    workflows: list[str],
    go: Callable[[str, int], Callable[[], Awaitable[None]]],
    last: int,
    already: int,
) -> int:
    """The "go" that sets each workflow's last key and ends it, then until none is PENDING."""
    await bounded((retried(go(w, last), "last go") for w in workflows), 20)
    return await drain(http, already=already)


async def _release(http: HTTPTransport, ids: list[str], already: int) -> int:
    """A message to each parked messaging workflow (not an approval: it ends at once)."""

    def release(workflow_id: str) -> Callable[[], Awaitable[None]]:
        return lambda: http.send(
            workflow_id, {"approved": False}, TOPIC_NOTIFICATION, idempotency_key="release"
        )

    await bounded((retried(release(i), "release") for i in ids), 20)
    return await drain(http, already=already)


async def idle(
    http: HTTPTransport,
    meter: Meter,
    n_workflows: int,
    window_sec: float,
    probe_sec: float,
    settle_sec: float,
    after_dbos_polls: bool = True,
) -> dict[str, Any]:
    """N messaging workflows parked in recv, nothing changing: the server's CPU, database
    transactions and SQL statements per second, and /health latency, first with no watcher
    (the baseline), then with one SSE watcher per workflow (half `/workflows/{id}/live`,
    half `/workflow-events/{id}/live`).

    Each window starts `settle_sec` after the last change: Postgres publishes a backend's
    transaction counts when it goes idle, at most once a second, and those of a backend
    that then stays idle only 10 s later, so the start-up's transactions would otherwise
    be counted in the window.

    With `after_dbos_polls`, the baseline waits until DBOS's own polling of the waiting recvs
    has begun (each polls its mailbox DBOS_RECV_POLL_SEC after it started, then again at that
    interval, watched or not): both windows then hold it, and their difference is watching."""
    already = await http.pending_count()
    RETRIED_503.clear()
    ids = [new_id("bench-idle") for _ in range(n_workflows)]
    first_started = time.monotonic()
    await bounded((retried(start_parked(http, i, PARKED_APPROVAL_SEC), "start") for i in ids), 25)
    await bounded((_parked(http, i) for i in ids), 25)
    await asyncio.sleep(settle_sec)
    if after_dbos_polls:
        await asyncio.sleep(max(0.0, DBOS_RECV_POLL_SEC + 5 - (time.monotonic() - first_started)))
    baseline = await _window(meter, http, window_sec, probe_sec)

    pushed: Counter[str] = Counter()
    greeted: set[int] = set()
    all_greeted = asyncio.Event()
    failures: list[str] = []

    async def watcher(seq: int, path: str) -> None:
        try:
            async with http.live(path) as events:
                async for event in events:
                    pushed[event.event] += 1
                    if seq not in greeted:  # its first event: the current status or events
                        greeted.add(seq)
                        if len(greeted) + len(failures) == n_workflows:
                            all_greeted.set()
        except Exception as exc:  # counted, and the others go on
            failures.append(f"{type(exc).__name__}: {exc}")
            if len(greeted) + len(failures) == n_workflows:
                all_greeted.set()

    paths = [
        f"/workflows/{i}/live" if seq % 2 == 0 else f"/workflow-events/{i}/live"
        for seq, i in enumerate(ids)
    ]
    began = time.monotonic()
    watchers = [asyncio.create_task(watcher(seq, path)) for seq, path in enumerate(paths)]
    try:
        await asyncio.wait_for(all_greeted.wait(), 180)
        connect_sec = time.monotonic() - began
        # A few of the live readers' poll intervals, so that start-up work is over.
        await asyncio.sleep(settle_sec)
        before = sum(pushed.values())
        watched = await _window(meter, http, window_sec, probe_sec)
        watched["events_pushed_in_window"] = sum(pushed.values()) - before
        connected = sum(1 for task in watchers if not task.done())
    finally:
        await cancel(watchers)
    stuck, cleanup = await _cleanly(_release(http, ids, already))
    return {
        "workflows": n_workflows,
        "watchers": len(paths),
        "status_watchers": len(paths[::2]),
        "events_watchers": len(paths[1::2]),
        "connected_through_window": connected,
        "connect_sec": round(connect_sec, 2),
        "watcher_failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "baseline": baseline,
        "watched": watched,
        "stuck_pending": stuck,
        "cleanup_error": cleanup,
        "retried_503": dict(RETRIED_503),
    }


async def _single_waiter_wake(http: HTTPTransport, samples: int) -> dict[str, Any]:
    latencies = await scenarios.event_wake(http, samples)
    return summarize(latencies)


async def _waiter_case(
    http: HTTPTransport, n_waiters: int, n_workflows: int, keys_set: int, timeout: float
) -> dict[str, Any]:
    """`n_waiters` waiting GETs over `n_workflows` bench_event_ticks workflows (waiter i on
    workflow i mod W). Even waiters wait for one of the `keys_set` keys each workflow sets
    (tick-0...), odd ones for a key that is set only after their timeout (tick-<keys_set>).
    The keys are set by "go" messages once every waiter has had time to arrive."""
    already = await http.pending_count()
    RETRIED_503.clear()
    workflows = [new_id("bench-wait") for _ in range(n_workflows)]
    # One more tick than set in the measurement: the workflow stays PENDING (its keys
    # settable) until the never-set waiters have timed out, and ends at the last "go".
    await bounded((http.start_event_ticks(w, keys_set + 1) for w in workflows), 25)
    plan = [
        (workflows[i % n_workflows], tick_key((i // 2) % keys_set if i % 2 == 0 else keys_set))
        for i in range(n_waiters)
    ]
    released: list[float] = []  # ms from the key's set_event to the answer
    late: list[float] = []  # ms from the end of the timeout to the answer (never-set keys)
    problems: Counter[str] = Counter()

    async def waiter(workflow_id: str, key: str, expect_value: bool) -> None:
        sent = time.time()
        try:
            value = await http.get_event(workflow_id, key, timeout)
        except HTTPError as exc:
            problems[f"HTTP {exc.status}"] += 1
            return
        answered = time.time()
        if expect_value and isinstance(value, dict):
            released.append((answered - value["set_at"]) * 1000)
        elif not expect_value and value is None:
            late.append((answered - sent - timeout) * 1000)
        else:
            problems["set key timed out" if expect_value else "never-set key had a value"] += 1

    def go(workflow_id: str, round_: int) -> Callable[[], Awaitable[None]]:
        # One key per round: a retry after a 503 (the send may have gone through) is not
        # a second "go", which would set a key meant never to be set.
        return lambda: http.send(
            workflow_id, {"go": True}, GO_TOPIC, idempotency_key=f"go-{round_}"
        )

    marks = {"arrive": time.time()}
    tasks = [asyncio.create_task(waiter(w, key, seq % 2 == 0)) for seq, (w, key) in enumerate(plan)]
    try:
        arrived = await _arrived(http, n_waiters, limit=timeout / 3)
        marks["go"] = time.time()
        for round_ in range(keys_set):
            await bounded((retried(go(w, round_), "go") for w in workflows), 50)
        set_waiters = [t for seq, t in enumerate(tasks) if seq % 2 == 0]
        await asyncio.wait_for(asyncio.gather(*set_waiters), timeout + 30)
        marks["released"] = time.time()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout + 30)
        marks["timed_out"] = time.time()
    finally:
        await cancel(tasks)
    stuck, cleanup = await _cleanly(_last_go(http, workflows, go, keys_set, already))
    return {
        "waiters": n_waiters,
        "workflows": n_workflows,
        "keys_set_per_workflow": keys_set,
        "timeout_sec": timeout,
        "released": summarize(released),
        "released_samples": thin(released),
        "released_over_50ms": sum(1 for ms in released if ms > 50),
        "timeout_lateness": summarize(late),
        "timeout_lateness_min_ms": round(min(late), 1) if late else None,
        "timeouts_over_1s_late": sum(1 for ms in late if ms > 1000),
        "problems": dict(problems),
        # Waits the server counted (its comm_waiting_requests gauge) when the keys were set.
        "waiting_at_go": arrived,
        "marks": marks,
        "stuck_pending": stuck,
        "cleanup_error": cleanup,
        "retried_503": dict(RETRIED_503),
    }


async def waiting_requests(http: HTTPTransport) -> float | None:
    """The server's comm_waiting_requests gauge (GET /metrics), None if it has none."""
    async with http.session.get(http.base_url + "/metrics") as response:
        if response.status != 200:
            return None
        for line in (await response.text()).splitlines():
            if line.startswith("comm_waiting_requests "):
                return float(line.split()[1])
    return None


async def _arrived(http: HTTPTransport, n_waiters: int, limit: float) -> float | None:
    """Until the server counts `n_waiters` waiting requests (at most `limit` s), or, if it
    does not publish that figure, a while long enough for them to arrive; returns its count."""
    deadline = time.monotonic() + limit
    count = await waiting_requests(http)
    if count is None:
        await asyncio.sleep(min(limit, 1.0 + n_waiters / 500))
        return None
    while count < n_waiters and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        count = await waiting_requests(http) or 0.0
    await asyncio.sleep(0.1)  # the last ones from counted to parked in their wait
    return count


async def waiters(
    http: HTTPTransport, n_waiters: int, n_workflows: int, timeout: float, probe_sec: float
) -> dict[str, Any]:
    """Many clients in a waiting GET on event keys: (a) all on one workflow, (b) one each on
    many workflows. /health latency while they arrive, wait, are released and time out;
    how soon after its key was set each was answered, and how soon after its timeout.
    Baseline: /health with no waiter, and one waiter at a time (the event wake)."""
    with HealthProbe(http.base_url) as probe:
        await probe.ready()
        began = time.time()
        await asyncio.sleep(probe_sec)
        ended = time.time()
        single = await _single_waiter_wake(http, 20 if n_waiters >= 100 else 3)
        cases = {
            "one_workflow": await _waiter_case(http, n_waiters, 1, 10, timeout),
            "spread": await _waiter_case(http, n_workflows, n_workflows, 1, timeout),
        }
    for case in cases.values():
        m = case.pop("marks")
        case["health"] = {
            "arrive_and_wait": probe.summary(m["arrive"], m["go"]),
            "release": probe.summary(m["go"], m["released"]),
            "time_out": probe.summary(m["released"], m["timed_out"]),
            "arrive_wait_release": probe.summary(m["arrive"], m["released"]),
            "whole": probe.summary(m["arrive"], m["timed_out"]),
        }
        case["phase_sec"] = {
            "arrive_and_wait": round(m["go"] - m["arrive"], 2),
            "release": round(m["released"] - m["go"], 2),
            "until_timed_out": round(m["timed_out"] - m["released"], 2),
        }
    idle_health = probe.summary(began, ended)  # the probe's samples come as it stops
    return {"baseline": {"health": idle_health, "single_waiter_wake": single}, **cases}


async def _workflow_done(http: HTTPTransport, workflow_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (await http.request("GET", f"/workflows/{workflow_id}"))["status"] != "SUCCESS":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workflow_id} did not finish")
        await asyncio.sleep(0.1)


async def _load(
    http: HTTPTransport,
    server_pid: int,
    call: Callable[[], Awaitable[Any]],
    clients: int,
    seconds: float,
    after: Callable[[], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """`clients` loops of `call` for `seconds`: answers per second, latency, and the server's
    CPU per answer (with `after`, e.g. running the workflows started, in the CPU window)."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await call()
            except HTTPError as exc:
                errors[f"HTTP {exc.status}"] += 1
                continue
            except Exception as exc:  # counted; the run goes on
                errors[type(exc).__name__] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    cpu, began = tree_cpu_seconds(server_pid), time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.monotonic() - began
    if after is not None:
        await after()
    cpu = tree_cpu_seconds(server_pid) - cpu
    return {
        "answered": len(latencies),
        "per_sec": round(len(latencies) / elapsed, 1),
        "latency": summarize(latencies),
        "cpu_ms_per_request": round(cpu * 1000 / max(1, len(latencies)), 3),
        "errors": dict(errors),
    }


async def requests(
    http: HTTPTransport, server_pid: int, clients: int, seconds: float
) -> list[dict[str, Any]]:
    """Requests per second and server CPU per answered request, for the routes clients call
    most, each by `clients` concurrent clients for `seconds`."""
    events_id, stream_id, parked_id = new_id("bench-req"), new_id("bench-req"), new_id("bench-req")
    already = await http.pending_count()
    await http.start_events(events_id)
    await http.request(
        "POST", f"/start-workflow-streaming/{stream_id}/5", params={"step_seconds": "0"}
    )
    await http.start_messaging(parked_id, PARKED_APPROVAL_SEC)
    await _workflow_done(http, events_id)
    await _workflow_done(http, stream_id)
    await _parked(http, parked_id)
    page = await http.request("GET", f"/workflow-stream/{stream_id}")
    if not page["closed"] or len(page["stream_values"]) != 13:
        raise RuntimeError(f"expected a closed 13-entry stream: {page}")

    def get(path: str) -> Callable[[], Awaitable[Any]]:
        return lambda: http.request("GET", path)

    async def send() -> None:
        # A topic the workflow never receives: the message is stored and nothing else runs.
        await http.send(parked_id, {"n": 1}, "bench_load")

    async def start() -> None:
        await http.start_events(new_id("bench-req-start"))

    async def drained() -> None:
        await drain(http, already=already + 1)  # the parked one stays

    kinds: list[
        tuple[str, str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]] | None]
    ] = [
        ("health", "GET /health", get("/health"), None),
        ("status", "GET /workflows/{id}", get(f"/workflows/{events_id}"), None),
        ("events", "GET /workflow-events/{id}/all", get(f"/workflow-events/{events_id}/all"), None),
        (
            "stream_page",
            "GET /workflow-stream/{id} (closed, 13 entries)",
            get(f"/workflow-stream/{stream_id}"),
            None,
        ),
        ("openapi", "GET /openapi.json", get("/openapi.json"), None),
        ("send", "POST /send-message/{id}", send, None),
        (
            "start",
            "POST /start-workflow-events/{id}/1?step_seconds=0 (CPU until run)",
            start,
            drained,
        ),
    ]
    rows = []
    for name, label, call, after in kinds:
        row = await _load(http, server_pid, call, clients, seconds, after)
        rows.append({"name": name, "request": label, "clients": clients, **row})
    await _release(http, [parked_id], already)
    return rows
