"""How a live subscriber's items reach its connection: written by the feed while the
response waits (one write per loop round), queued otherwise, in order either way.

In-process: a feed, its subscribers and a connection that records its writes (and can be
made to stall as a slow client's does). The same paths run behind every SSE and WebSocket
test against the server.
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from workflow_comm.live.eager import start_eagerly
from workflow_comm.live.feed import FeedConfig, Interest, Subscriber, WorkflowFeed
from workflow_comm.live.items import EventsEnd, EventSet, Item, Overflow

HEARTBEAT = 30.0


def in_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """The test, run in an event loop of its own."""

    def run() -> None:
        asyncio.run(test())

    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return run


# -- start_eagerly ---------------------------------------------------------------------------


@in_a_loop
async def test_a_coroutine_that_does_not_wait_finishes_with_no_task() -> None:
    done: list[str] = []

    async def write() -> None:
        done.append("written")

    assert start_eagerly(write()) is None
    assert done == ["written"]


@in_a_loop
async def test_a_coroutine_that_waits_is_finished_by_a_task() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def write() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)  # a bare yield to the loop, too
        steps.append("after")

    task = start_eagerly(write())
    assert task is not None and steps == ["before"]
    gate.set_result("woken")
    await task
    assert steps == ["before", "woken", "after"]


@in_a_loop
async def test_an_error_before_waiting_is_raised_at_once_and_after_by_the_task() -> None:
    async def broken() -> None:
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        start_eagerly(broken())

    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def breaks_later() -> None:
        await gate
        raise OSError("gone later")

    task = start_eagerly(breaks_later())
    assert task is not None
    gate.set_result(None)
    with pytest.raises(OSError, match="gone later"):
        await task


@in_a_loop
async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def write() -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    task = start_eagerly(write())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True] and gate.cancelled()


# -- a feed writing to its subscribers -------------------------------------------------------


class Connection:
    """Records each write (a list of frames); `stall()` makes writes wait until `resume()`."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self._open: asyncio.Event = asyncio.Event()
        self._open.set()

    def stall(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    async def write(self, frames: list[Any]) -> None:
        await self._open.wait()
        self.writes.append(list(frames))

    @property
    def frames(self) -> list[str]:
        return [frame for write in self.writes for frame in write]


def render(item: Item) -> str | None:
    return f"{item.key}={item.value}" if isinstance(item, EventSet) else None


def new_feed(buffer: int = 100) -> WorkflowFeed:
    feed = WorkflowFeed(
        "wf", FeedConfig(buffer=buffer, replay_buffer=10), lambda _: None, asyncio.create_task
    )
    feed.events_read = True  # nothing to read: the test broadcasts
    return feed


async def follow(sub: Subscriber, taken: list[str]) -> None:
    """The response's own task: what it takes from the queue, it writes itself (here: notes
    in `taken`, with "overflow" if it is cut off)."""
    async for item in sub.items("wf", HEARTBEAT):
        if isinstance(item, EventSet):
            taken.append(f"{item.key}={item.value}")
        elif isinstance(item, Overflow):
            taken.append("overflow")


async def watching(feed: WorkflowFeed) -> tuple[Connection, list[str], asyncio.Task[None]]:
    """A subscriber to the feed's events with its connection and its response's task, once
    that task waits for more."""
    sub = feed.add(Interest(events=True))
    connection, taken = Connection(), list[str]()
    sub.attach(render, connection.write)
    task = asyncio.create_task(follow(sub, taken))
    await settle()
    return connection, taken, task


def change(n: int) -> EventSet:
    return EventSet("k", n, n)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@in_a_loop
async def test_waiting_subscribers_are_written_by_the_feed_one_write_per_round() -> None:
    feed = new_feed()
    subs: list[tuple[Subscriber, Connection, list[str]]] = [
        (feed.add(Interest(events=True)), Connection(), []) for _ in range(3)
    ]
    tasks = []
    for sub, connection, taken in subs:
        sub.attach(render, connection.write)
        tasks.append(asyncio.create_task(follow(sub, taken)))
    await settle()  # each response now waits for more
    for n in (1, 2, 3):
        feed.broadcast(change(n))  # one round: three changes
    await settle()
    feed.broadcast(change(4))
    await settle()
    for _, connection, taken in subs:
        assert connection.writes == [["k=1", "k=2", "k=3"], ["k=4"]]
        assert taken == []  # nothing went through the queue
    feed.broadcast(EventsEnd("SUCCESS"))
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


@in_a_loop
async def test_a_stalled_write_holds_back_later_items_which_follow_in_order() -> None:
    feed = new_feed()
    connection, taken, task = await watching(feed)
    connection.stall()
    feed.broadcast(change(1))  # written by the feed: its write waits
    await settle()
    feed.broadcast(change(2))  # queued behind it, for the response's own task
    feed.broadcast(change(3))
    await settle()
    assert connection.frames == [] and taken == []
    connection.resume()
    await settle()
    assert connection.frames == ["k=1"] and taken == ["k=2", "k=3"]
    feed.broadcast(change(4))  # waiting again: the feed writes it
    await settle()
    assert connection.frames == ["k=1", "k=4"] and taken == ["k=2", "k=3"]
    feed.broadcast(EventsEnd("SUCCESS"))
    await asyncio.wait_for(task, 5)


@in_a_loop
async def test_a_subscriber_stalled_too_long_is_cut_off() -> None:
    feed = new_feed(buffer=3)
    connection, taken, task = await watching(feed)
    connection.stall()
    for n in range(1, 10):
        feed.broadcast(change(n))
        await settle()
    connection.resume()
    await asyncio.wait_for(task, 5)  # ends with the overflow
    assert taken[-1] == "overflow", taken
    # What it got is the start of the changes, in order, each once; it resumes after that.
    got = connection.frames + taken[:-1]
    assert got == [f"k={n}" for n in range(1, len(got) + 1)] and len(got) < 9, got
