"""Where SSE fan-out spends its CPU: FastAPI's EventSourceResponse vs plain bytes.

    .venv/bin/python -m bench.sse_overhead            # 1,000 subscribers x 20 values

No DBOS and no database: an in-memory broadcaster pushes the same values to N subscribers
through five SSE endpoints, and the server's CPU time per delivered event is measured.
  fastapi       FastAPI EventSourceResponse + ServerSentEvent, each subscriber waiting with
                two tasks and asyncio.wait per item (the shape of workflow_comm.live.feed)
  fastapi-lean  the same response class, one `queue.get()` per item
  raw-tasks     StreamingResponse of bytes encoded once per value, two-task wait per item
  raw           StreamingResponse of bytes encoded once per value, one `queue.get()`
  feed          the server's own path: a live feed (workflow_comm.live.feed) broadcasting
                each value as an event change to its subscribers, each answered by the
                events route's response (routes/live.py): the feed writes each frame to
                every waiting subscriber's connection itself; what it differs from `raw`
                by is the server's own share of a delivery (the server's middleware and
                DBOS are not in it)
"""

import argparse
import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
import psutil  # type: ignore[import-untyped]
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from bench.http import new_session, sse_events
from tests.support import UvicornServer
from workflow_comm.live.feed import FeedConfig, Interest, Subscriber, WorkflowFeed
from workflow_comm.live.items import EventsEnd, EventSet
from workflow_comm.routes.live import EventStream, event_render, live_response

logger = logging.getLogger("bench")
HEARTBEAT = 15.0
END = "end"
app = FastAPI()
queues: list[asyncio.Queue[Any]] = []
_feeds: list[WorkflowFeed] = []


def _feed() -> WorkflowFeed:
    """The one feed of `feed` mode: its event state read (nothing to read here)."""
    if not _feeds:
        loop = asyncio.get_running_loop()
        feed = WorkflowFeed(
            "sse-overhead",
            FeedConfig(buffer=1000, replay_buffer=100),
            lambda _: None,
            loop.create_task,
        )
        feed.events_read = True
        _feeds.append(feed)
    return _feeds[0]


async def two_task_wait(queue: asyncio.Queue[Any], stop: asyncio.Event) -> Any:
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {getter, stopper}, timeout=HEARTBEAT, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (getter, stopper):
            if not task.done():
                task.cancel()
    return getter.result() if getter in done else None


async def one_get(queue: asyncio.Queue[Any], stop: asyncio.Event) -> Any:
    try:
        async with asyncio.timeout(HEARTBEAT):
            return await queue.get()
    except TimeoutError:
        return None


def _objects(wait: Any) -> Any:
    async def endpoint() -> AsyncIterator[ServerSentEvent]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queues.append(queue)
        try:
            while True:
                item = await wait(queue, asyncio.Event())
                if item is None:
                    yield ServerSentEvent(comment="ping")
                elif item == END:
                    yield ServerSentEvent(event="closed", raw_data="{}")
                    return
                else:
                    data = json.dumps(item, separators=(",", ":"))
                    yield ServerSentEvent(raw_data=data, id=str(item["seq"]))
        finally:
            queues.remove(queue)

    return endpoint


def _bytes(wait: Any) -> Any:
    async def endpoint() -> StreamingResponse:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queues.append(queue)

        async def frames() -> AsyncIterator[bytes]:
            try:
                while True:
                    item = await wait(queue, asyncio.Event())
                    if item is None:
                        yield b": ping\n\n"
                    elif item == END:
                        yield b"event: closed\ndata: {}\n\n"
                        return
                    else:
                        yield item[1]
            finally:
                queues.remove(queue)

        return StreamingResponse(frames(), media_type="text/event-stream")

    return endpoint


async def feed_subscription() -> AsyncIterator[Subscriber]:
    feed = _feed()
    sub = feed.add(Interest(events=True))
    try:
        yield sub
    finally:
        feed.remove(sub)


@app.get("/feed")
async def feed_subscriber(sub: Annotated[Subscriber, Depends(feed_subscription)]) -> EventStream:
    return live_response(sub, "sse-overhead", HEARTBEAT, event_render(sub, "sse-overhead"))


app.get("/fastapi", response_class=EventSourceResponse)(_objects(two_task_wait))
app.get("/fastapi-lean", response_class=EventSourceResponse)(_objects(one_get))
app.get("/raw-tasks")(_bytes(two_task_wait))
app.get("/raw")(_bytes(one_get))


@app.post("/broadcast/{encoded}/{n_values}")
async def broadcast(encoded: bool, n_values: int, interval: float = 0.05) -> dict[str, int]:
    async def run() -> None:
        if _feeds:  # feed mode: each value an event change, encoded once by the feed's item
            for seq in range(n_values):
                _feeds[0].broadcast(
                    EventSet("tick", {"seq": seq, "written_at": time.time()}, seq + 1)
                )
                await asyncio.sleep(interval)
            _feeds[0].broadcast(EventsEnd("SUCCESS"))
            _feeds.clear()
            return
        for seq in range(n_values):
            value = {"seq": seq, "written_at": time.time()}
            item: Any = value
            if encoded:  # one encoding per value, shared by every subscriber
                data = json.dumps(value, separators=(",", ":"))
                item = (value, f"id: {seq}\ndata: {data}\n\n".encode())
            for queue in list(queues):
                queue.put_nowait(item)
            await asyncio.sleep(interval)
        for queue in list(queues):
            queue.put_nowait(END)

    asyncio.get_running_loop().create_task(run())
    return {"subscribers": len(_feeds[0].subscribers) if _feeds else len(queues)}


async def measure(base_url: str, server: psutil.Process, mode: str, n: int, values: int) -> str:
    latencies: list[float] = []
    connected = asyncio.Event()
    count = 0
    async with new_session() as session:

        async def subscriber() -> None:
            nonlocal count
            async with session.get(f"{base_url}/{mode}") as response:
                count += 1
                if count == n:
                    connected.set()
                async for event in sse_events(response):
                    if event.event == "closed":
                        return
                    data = event.json()
                    stamp = data["value"]["written_at"] if "version" in data else data["written_at"]
                    latencies.append((time.time() - stamp) * 1000)

        tasks = [asyncio.create_task(subscriber()) for _ in range(n)]
        await asyncio.wait_for(connected.wait(), 60)
        await asyncio.sleep(0.3)
        cpu = sum(server.cpu_times()[:2])
        encoded = "true" if mode.startswith("raw") else "false"
        await session.post(f"{base_url}/broadcast/{encoded}/{values}")
        await asyncio.gather(*tasks)
        cpu = sum(server.cpu_times()[:2]) - cpu
    p50, p99 = np.percentile(latencies, [50, 99])
    return (
        f"{mode:13s} {n:5d} subscribers: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
        f"server CPU {cpu * 1e6 / len(latencies):6.1f} us per delivery"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--values", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # No DBOS and no /health here: ready once it serves its schema.
    app, options = "bench.sse_overhead:app", ("--log-level", "warning")
    with UvicornServer(app, None, *options, ready_path="/openapi.json") as server:
        logger.info("server log: %s", server.log_path)
        for mode in ("fastapi", "fastapi-lean", "raw-tasks", "raw", "feed"):
            line = asyncio.run(
                measure(
                    server.base_url,
                    psutil.Process(server.pid),
                    mode,
                    args.subscribers,
                    args.values,
                )
            )
            logger.info(line)


if __name__ == "__main__":
    main()
