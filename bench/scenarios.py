"""Latency and throughput scenarios written once against a `Transport`.

The driver runs them over HTTP (bench.http) and the in-process baseline runs the very same
code on DBOS calls (bench.inprocess), so the two numbers differ only by the transport.
Times that cross processes use time.time(): driver, server and baseline run on one machine
and read the same clock.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from bench.timed_workflows import GO_TOPIC, TICK_STREAM, tick_key
from workflow_comm.names import EVENT_MESSAGE, EVENT_STATUS, STATUS_WAITING, TOPIC_NOTIFICATION

# How long a reader is given to be parked in its wait before the write it waits for.
PARK_SEC = 0.02
WAIT_TIMEOUT_SEC = 30.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Transport(Protocol):
    """What a scenario needs from "the server": HTTP routes, or DBOS calls in-process."""

    async def start_messaging(self, workflow_id: str) -> None: ...
    async def start_events(self, workflow_id: str) -> None: ...
    async def start_event_ticks(self, workflow_id: str, n_ticks: int) -> None: ...
    async def start_stream_ticks(
        self, workflow_id: str, n_values: int, interval_sec: float
    ) -> None: ...
    async def get_event(self, workflow_id: str, key: str, timeout: float) -> Any | None: ...
    async def send(self, workflow_id: str, payload: dict[str, Any], topic: str) -> None: ...
    def subscribe(
        self, workflow_id: str, key: str
    ) -> AbstractAsyncContextManager[AsyncIterator[Any]]: ...
    async def pending_count(self) -> int: ...


async def wait_for_event(
    transport: Transport, workflow_id: str, key: str, expected: Any, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await transport.get_event(workflow_id, key, 1.0)
        if value == expected:
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{workflow_id}: event {key!r} never became {expected!r}")


async def message_delivery(transport: Transport, samples: int) -> tuple[list[float], list[float]]:
    """Send -> the workflow's `message` event seen by a client already waiting for it (ms),
    and how long the send call itself took (ms).

    Each sample: a fresh messaging workflow parked in recv; a reader parked in a waiting
    get of `message`; the clock runs from just before the send until that read returns.
    """
    latencies, sends = [], []
    for seq in range(samples):
        workflow_id = new_id("bench-msg")
        await transport.start_messaging(workflow_id)
        await wait_for_event(transport, workflow_id, EVENT_STATUS, STATUS_WAITING, 10.0)
        reader = asyncio.create_task(
            transport.get_event(workflow_id, EVENT_MESSAGE, WAIT_TIMEOUT_SEC)
        )
        await asyncio.sleep(PARK_SEC)
        sent_at = time.time()
        # Not an approval: the workflow records the message and ends at once.
        await transport.send(workflow_id, {"approved": False, "seq": seq}, TOPIC_NOTIFICATION)
        sends.append((time.time() - sent_at) * 1000)
        value = await reader
        received_at = time.time()
        if value is None:
            raise RuntimeError(f"{workflow_id}: message not seen within {WAIT_TIMEOUT_SEC}s")
        latencies.append((received_at - sent_at) * 1000)
    return latencies, sends


async def event_wake(transport: Transport, samples: int, per_workflow: int = 50) -> list[float]:
    """set_event in the workflow -> a parked waiting get returns (ms), stamped by the workflow."""
    latencies: list[float] = []
    while len(latencies) < samples:
        n_ticks = min(per_workflow, samples - len(latencies))
        workflow_id = new_id("bench-evt")
        await transport.start_event_ticks(workflow_id, n_ticks)
        for seq in range(n_ticks):
            reader = asyncio.create_task(
                transport.get_event(workflow_id, tick_key(seq), WAIT_TIMEOUT_SEC)
            )
            await asyncio.sleep(PARK_SEC)
            await transport.send(workflow_id, {"seq": seq}, GO_TOPIC)
            value = await reader
            received_at = time.time()
            if not isinstance(value, dict):
                raise RuntimeError(f"{workflow_id}: tick {seq} not seen: {value!r}")
            latencies.append((received_at - value["set_at"]) * 1000)
    return latencies


async def collect_stream(values: AsyncIterator[Any], sink: list[float]) -> None:
    async for value in values:
        sink.append((time.time() - value["written_at"]) * 1000)


async def stream_push(
    transport: Transport, workflows: int, n_values: int, interval_sec: float
) -> list[float]:
    """write_stream in the workflow -> a live subscriber holds the value (ms)."""
    latencies: list[float] = []
    for _ in range(workflows):
        workflow_id = new_id("bench-stream")
        await transport.start_stream_ticks(workflow_id, n_values, interval_sec)
        async with transport.subscribe(workflow_id, TICK_STREAM) as values:
            reader = asyncio.create_task(collect_stream(values, latencies))
            await asyncio.sleep(PARK_SEC * 2)
            await transport.send(workflow_id, {"go": True}, GO_TOPIC)
            await asyncio.wait_for(reader, WAIT_TIMEOUT_SEC + n_values * interval_sec)
    return latencies


async def drain(
    transport: Transport, timeout: float = 180.0, stall: float = 15.0, already: int = 0
) -> int:
    """Wait until no workflow is PENDING (but the `already` stuck before), so one measurement
    does not bleed into the next.

    Returns how many more than `already` are still PENDING when their count has not fallen
    for `stall` seconds (workflows that will never finish on their own) or at `timeout`.
    """
    deadline = time.monotonic() + timeout
    lowest, lowest_at = await transport.pending_count(), time.monotonic()
    while lowest > already:
        now = time.monotonic()
        if now > deadline or now - lowest_at > stall:
            return lowest - already
        await asyncio.sleep(0.2)
        pending = await transport.pending_count()
        if pending < lowest:
            lowest, lowest_at = pending, time.monotonic()
    return 0


async def start_throughput(
    transport: Transport, concurrency: int, duration_sec: float
) -> dict[str, Any]:
    """`concurrency` clients starting events workflows (1 step, 0 s) back to back."""
    ok = errors = 0
    first_error: str | None = None
    already = await transport.pending_count()  # PENDING before: not this level's to drain
    deadline = time.monotonic() + duration_sec

    async def client() -> None:
        nonlocal ok, errors, first_error
        while time.monotonic() < deadline:
            try:
                await transport.start_events(new_id("bench-tp"))
                ok += 1
            except Exception as exc:  # every failure is counted, none ends the run
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    stuck = await drain(transport, already=already)
    return {
        # Workflows still PENDING long after the clients stopped: started but never run.
        "stuck_pending": stuck,
        "concurrency": concurrency,
        "duration_sec": round(elapsed, 3),
        "started": ok,
        "errors": errors,
        "first_error": first_error,
        "per_sec": round(ok / elapsed, 1),
    }
