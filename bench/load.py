"""Scenarios only the HTTP side has: polling, fan-out, and many clients at once.

A `Monitor` thread samples GET /health latency (on its own keep-alive connection, as a load
balancer would), the server's RSS and threads (psutil) and its database connections
(pg_stat_activity) while a scenario runs.
"""

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import httpx
import psutil  # type: ignore[import-untyped]
import psycopg

from bench.http import HTTPError, HTTPTransport
from bench.meter import tree_cpu_seconds
from bench.scenarios import PARK_SEC, WAIT_TIMEOUT_SEC, collect_stream, drain, new_id
from bench.stats import summarize, thin
from bench.timed_workflows import GO_TOPIC, TICK_STREAM
from workflow_comm.names import EVENT_MESSAGE, EVENT_STATUS, STATUS_WAITING, TOPIC_NOTIFICATION

# Every 503 a retried call got, by what was retried: reported with the phase's figures.
RETRIED_503: Counter[str] = Counter()


async def retried(call: Callable[[], Awaitable[Any]], what: str, attempts: int = 6) -> None:
    """`call`, again after a 503 (the server's database timeout under load): a message the
    measurement needs, or clean-up after it, must not fail the phase; the 503s are counted
    in RETRIED_503."""
    for attempt in range(attempts):
        try:
            await call()
            return
        except HTTPError as exc:
            if exc.status != 503 or attempt == attempts - 1:
                raise
            RETRIED_503[what] += 1
            await asyncio.sleep(0.5 * 2**attempt)


async def bounded(calls: Iterable[Awaitable[Any]], concurrency: int) -> list[Any]:
    """Await `calls` with at most `concurrency` in flight; results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Awaitable[Any]) -> Any:
        async with gate:
            return await call

    return await asyncio.gather(*(one(call) for call in calls))


async def cancel(tasks: list["asyncio.Task[Any]"]) -> None:
    """Cancel what is still running (after a failure) and wait for it to finish."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Monitor:
    """Samples /health, server RSS/threads and database connections every `interval` s."""

    def __init__(
        self, base_url: str, server_pid: int, database_url: str | None, interval: float = 0.05
    ) -> None:
        self.base_url = base_url
        self.process = psutil.Process(server_pid)
        self.database_url = database_url
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        db = (
            psycopg.connect(self.database_url, autocommit=True)
            if self.database_url
            else contextlib.nullcontext(None)
        )
        with httpx.Client(base_url=self.base_url, timeout=30.0) as http, db as conn:
            while not self._stop.is_set():
                sample: dict[str, Any] = {"t": time.time()}
                started = time.perf_counter()
                try:
                    sample["status"] = http.get("/health").status_code
                except httpx.HTTPError:
                    sample["status"] = 0
                sample["health_ms"] = (time.perf_counter() - started) * 1000
                # A route that touches no database: the event loop's own responsiveness.
                started = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    sample["statements"] = http.get("/bench/db-statements").json()["statements"]
                    sample["no_db_ms"] = (time.perf_counter() - started) * 1000
                sample["rss_mb"] = self.process.memory_info().rss / 2**20
                sample["threads"] = self.process.num_threads()
                if conn is not None:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    ).fetchone()
                    sample["db_connections"] = row[0] if row else None
                self.samples.append(sample)
                self._stop.wait(self.interval)

    def window(self, start: float, end: float) -> list[dict[str, Any]]:
        return [s for s in self.samples if start <= s["t"] <= end]


def monitor_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def peak(name: str) -> Any:
        values = [s[name] for s in samples if s.get(name) is not None]
        return round(max(values), 1) if values else None

    counted = [s for s in samples if "statements" in s]
    statements_per_sec = (
        round(
            (counted[-1]["statements"] - counted[0]["statements"])
            / (counted[-1]["t"] - counted[0]["t"]),
            1,
        )
        if len(counted) > 1
        else None
    )
    return {
        "statements_per_sec": statements_per_sec,
        "health": summarize([s["health_ms"] for s in samples]),
        "no_db_route": summarize([s["no_db_ms"] for s in samples if "no_db_ms" in s]),
        "health_errors": sum(1 for s in samples if s["status"] != 200),
        "peak_rss_mb": peak("rss_mb"),
        "peak_threads": peak("threads"),
        "peak_db_connections": peak("db_connections"),
    }


async def poll_stream(
    transport: HTTPTransport, workflows: int, n_values: int, interval_sec: float, every: float
) -> list[float]:
    """The original client's way: GET /workflow-stream every `every` seconds (ms per value)."""
    latencies: list[float] = []
    for _ in range(workflows):
        workflow_id = new_id("bench-poll")
        await transport.start_stream_ticks(workflow_id, n_values, interval_sec)
        await transport.send(workflow_id, {"go": True}, GO_TOPIC)
        offset, next_poll = 0, time.monotonic()
        while True:
            page = await transport.request(
                "GET",
                f"/workflow-stream/{workflow_id}",
                params={"key": TICK_STREAM, "offset": str(offset)},
            )
            now = time.time()
            latencies.extend((now - v["written_at"]) * 1000 for v in page["stream_values"])
            offset = page["next_offset"]
            if page["closed"]:
                break
            next_poll += every
            await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
    return latencies


async def statements_sent(transport: HTTPTransport) -> dict[str, int]:
    """The bench server's SQL statement counters: all, and SELECTs on the streams table."""
    counts: dict[str, int] = await transport.request("GET", "/bench/db-statements")
    return counts


async def statement_shapes(transport: HTTPTransport) -> Counter[str]:
    shapes: dict[str, int] = await transport.request("GET", "/bench/db-statements/by-shape")
    return Counter(shapes)


# Subscribers opening their connection at once: more would overflow the server's accept
# backlog (a connection refused or reset is a failure of the benchmark, not of the server).
CONNECTING_AT_ONCE = 200


async def fanout(
    transport: HTTPTransport,
    server_pid: int,
    subscribers: int,
    n_values: int,
    interval_sec: float,
    via: str = "sse",
) -> dict[str, Any]:
    """One stream, `subscribers` live readers over SSE (`GET /workflow-stream/{id}/live`) or
    WebSocket (`WS /ws/workflows/{id}`): delivery latency, SQL statements per value, and the
    CPU time server and driver spent per delivered value."""
    workflow_id = new_id("bench-fan")
    await transport.start_stream_ticks(workflow_id, n_values, interval_sec)
    connected = 0
    all_connected = asyncio.Event()
    failures: list[str] = []

    subscribe = transport.subscribe_ws if via == "ws" else transport.subscribe
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    # The server's CPU once every value has reached every subscriber: what it spent after
    # that is the end of each response (the `closed` frame, the connection's teardown).
    all_delivered: dict[str, float] = {}
    expected = subscribers * n_values

    class Sink(list[float]):
        def append(self, latency: float) -> None:
            super().append(latency)
            nonlocal expected
            expected -= 1
            if expected == 0:
                all_delivered["server_cpu"] = tree_cpu_seconds(server_pid)

    async def subscriber(sink: list[float]) -> None:
        nonlocal connected
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with gate:
                    values = await stack.enter_async_context(subscribe(workflow_id, TICK_STREAM))
                connected += 1
                if connected == subscribers:
                    all_connected.set()
                await collect_stream(values, sink)
        except (HTTPError, OSError, RuntimeError, aiohttp.ClientError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            if connected + len(failures) == subscribers:
                all_connected.set()

    latencies: list[list[float]] = [Sink() for _ in range(subscribers)]
    tasks = [asyncio.create_task(subscriber(sink)) for sink in latencies]
    try:
        await asyncio.wait_for(all_connected.wait(), 120)
        await asyncio.sleep(PARK_SEC * 10)
        before, started = await statements_sent(transport), time.monotonic()
        server_cpu, driver_cpu = tree_cpu_seconds(server_pid), time.process_time()
        await transport.send(workflow_id, {"go": True}, GO_TOPIC)
        timeout = 4 * WAIT_TIMEOUT_SEC + n_values * interval_sec * 4
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        after, ended = await statements_sent(transport), time.monotonic()
        server_cpu_end = tree_cpu_seconds(server_pid)
        driver_cpu = time.process_time() - driver_cpu
    finally:
        await cancel(tasks)
    flat = [lat for sink in latencies for lat in sink]
    # A value missed: no moment when all were delivered; count the whole window.
    delivered_cpu = all_delivered.get("server_cpu", server_cpu_end)
    complete = sum(1 for sink in latencies if len(sink) == n_values)
    return {
        "transport": via,
        "subscribers": subscribers,
        "values": n_values,
        "latency": summarize(flat),
        "samples": thin(flat),
        "complete_subscribers": complete,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "server_cpu_sec": round(server_cpu_end - server_cpu, 3),
        "driver_cpu_sec": round(driver_cpu, 3),
        # Until every value was delivered (the writer's own DBOS calls included), per value
        # received; then the end of the responses, per subscriber.
        "server_cpu_us_per_delivery": round(
            (delivered_cpu - server_cpu) * 1e6 / max(1, len(flat)), 1
        ),
        "server_cpu_us_per_end": round(
            (server_cpu_end - delivered_cpu) * 1e6 / max(1, subscribers), 1
        ),
        "window_sec": round(ended - started, 3),
        # Every statement of the server in the window (the writer's own, the shared reader's,
        # status reads, DBOS's background work), and the stream reads alone.
        "statements_per_value": round((after["statements"] - before["statements"]) / n_values, 2),
        "stream_reads_per_value": round(
            (after["stream_reads"] - before["stream_reads"]) / n_values, 2
        ),
    }


async def concurrency(
    transport: HTTPTransport,
    monitor: Monitor,
    n_workflows: int,
    n_waiters: int,
    n_subscribers: int,
) -> dict[str, Any]:
    """Many workflows parked in recv, clients parked on their `message` event, then a burst
    of messages: /health latency, time to deliver to every watcher, RSS, threads, DB conns.

    The first `n_waiters` workflows are watched by a waiting GET each, the next
    `n_subscribers` by an events SSE subscriber each.
    """
    ids = [new_id("bench-conc") for _ in range(n_workflows)]
    RETRIED_503.clear()
    already = await transport.pending_count()  # left over by an earlier scenario
    marks: dict[str, float] = {"begin": time.time()}
    await bounded((retried(start_parked(transport, i), "start") for i in ids), 25)
    marks["started"] = time.time()
    await bounded((_parked(transport, i) for i in ids), 25)
    marks["parked"] = time.time()

    received: dict[str, float] = {}
    connected = 0
    ready = asyncio.Event()
    if n_subscribers == 0:
        ready.set()

    outcomes: Counter[str] = Counter()
    missed: dict[str, list[str]] = {}

    async def waiter(workflow_id: str) -> None:
        value = await transport.get_event(workflow_id, EVENT_MESSAGE, 110.0)
        if value is not None:
            received[workflow_id] = time.time()
        outcomes["waiting GET: " + ("value" if value is not None else "404")] += 1

    async def subscriber(workflow_id: str) -> None:
        nonlocal connected
        async with transport.live(f"/workflow-events/{workflow_id}/live") as events:
            connected += 1
            if connected == n_subscribers:
                ready.set()
            seen = []
            async for event in events:
                key = event.json().get("key") if event.event == "message" else None
                if key == EVENT_MESSAGE:
                    received[workflow_id] = time.time()
                    outcomes["SSE: message event"] += 1
                    return
                seen.append(f"{event.event}:{key or event.data}")
            outcomes["SSE: closed without the message event"] += 1  # e.g. recv timed out
            missed.setdefault(workflow_id, seen)

    sent_at: dict[str, float] = {}

    async def send(workflow_id: str) -> None:
        sent_at[workflow_id] = time.time()  # a 503 and its retry count in the latency

        async def once() -> None:
            await transport.send(
                workflow_id, {"approved": False}, TOPIC_NOTIFICATION, idempotency_key="conc"
            )

        await retried(once, "send")

    watchers = [asyncio.create_task(waiter(i)) for i in ids[:n_waiters]]
    watchers += [
        asyncio.create_task(subscriber(i)) for i in ids[n_waiters : n_waiters + n_subscribers]
    ]
    try:
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(1.0)  # let the waiting GETs reach their wait
        marks["watching"] = time.time()
        shapes_before = await statement_shapes(transport)
        await bounded((send(i) for i in ids), 50)
        marks["sent"] = time.time()
        results = await asyncio.wait_for(
            asyncio.gather(*watchers, return_exceptions=True), WAIT_TIMEOUT_SEC * 4
        )
        marks["delivered"] = time.time()
        shapes = await statement_shapes(transport)
        shapes.subtract(shapes_before)
    finally:
        await cancel(watchers)
    stuck = await drain(transport, already=already)
    marks["finished"] = time.time()
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    latencies = [(received[i] - sent_at[i]) * 1000 for i in received]
    loaded = monitor.window(marks["started"], marks["delivered"])
    return {
        "workflows": n_workflows,
        "waiting_gets": n_waiters,
        "sse_subscribers": n_subscribers,
        "delivered_to_watchers": len(received),
        "watcher_outcomes": dict(outcomes),
        "missed_examples": dict(list(missed.items())[:3]),
        "stuck_pending": stuck,
        "watcher_errors": len(errors),
        # Starts and sends answered 503 (a request waited longer than COMM_DB_TIMEOUT_SEC),
        # retried.
        "retried_503": dict(RETRIED_503),
        "first_watcher_error": errors[0] if errors else None,
        "start_sec": round(marks["started"] - marks["begin"], 2),
        "send_all_sec": round(marks["sent"] - marks["watching"], 2),
        "deliver_all_sec": round(marks["delivered"] - marks["watching"], 2),
        "all_finished_sec": round(marks["finished"] - marks["watching"], 2),
        "delivery": summarize(latencies),
        "delivery_samples": thin(latencies),
        "under_load": monitor_summary(loaded),
        # What the server asked its database while the messages went out and arrived.
        "top_statements": [[n, shape] for shape, n in shapes.most_common(8)],
        "health_samples": [
            [round(s["t"] - marks["begin"], 3), round(s["health_ms"], 2)]
            for s in monitor.window(marks["begin"], marks["finished"])
        ],
        "marks": {k: round(v - marks["begin"], 3) for k, v in marks.items()},
    }


def start_parked(
    transport: HTTPTransport, workflow_id: str, approval_timeout: float = 600.0
) -> Callable[[], Awaitable[None]]:
    """A start of a messaging workflow that parks in recv, to retry: starting a demo workflow
    again with its ID answers for the one already started."""
    return lambda: transport.start_messaging(workflow_id, approval_timeout)


async def _parked(transport: HTTPTransport, workflow_id: str) -> None:
    """Until the messaging workflow says it waits for approval (it is in recv, or about to be)."""
    deadline = time.monotonic() + 60
    while await transport.get_event(workflow_id, EVENT_STATUS, 5.0) != STATUS_WAITING:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workflow_id} never reached {STATUS_WAITING}")
        await asyncio.sleep(0.05)
