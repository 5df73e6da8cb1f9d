"""One watched workflow: a shared reader per kind of data, and the subscribers it feeds.

Every subscriber of a workflow shares these readers, so the database work per written value
does not grow with the number of subscribers. Each subscriber has a bounded queue; one that
falls too far behind is cut off with word of where to resume.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dbos import DBOS

from workflow_comm.live.database import EventHistory
from workflow_comm.live.items import (
    Control,
    EventsEnd,
    EventSet,
    Item,
    Overflow,
    Shutdown,
    StatusChange,
    StatusEnd,
    StreamEnd,
    StreamValue,
)
from workflow_comm.models import WorkflowPublic
from workflow_comm.names import TERMINAL_STATUSES
from workflow_comm.service import describe, read_page

logger = logging.getLogger("workflow_comm")
CATCH_UP_PAGE = 1000


@dataclass(frozen=True)
class Interest:
    """What a subscriber wants: any of status, events, and one stream from an offset."""

    status: bool = False
    events: bool = False
    events_after: int = 0  # send only event changes with a version above this
    stream_key: str | None = None
    stream_offset: int = 0


class Subscriber:
    def __init__(self, interest: Interest, maxsize: int) -> None:
        self.interest = interest
        self._queue: asyncio.Queue[Item | Control] = asyncio.Queue(maxsize=maxsize)
        self._initial: list[Item] = []
        self._catch_up: tuple[int, int] | None = None  # stream offsets [start, end) from the db
        self._control: Control | None = None
        self.feed: WorkflowFeed | None = None  # the feed that registered it

    def wants(self, item: Item) -> bool:
        interest = self.interest
        if isinstance(item, (StreamValue, StreamEnd)):
            return item.key == interest.stream_key
        if isinstance(item, EventSet):
            return interest.events and item.version > interest.events_after
        if isinstance(item, EventsEnd):
            return interest.events
        return interest.status

    def offer(self, item: Item) -> bool:
        """Queue `item`; False if the queue is full (the subscriber is then cut off)."""
        if self._control is not None:
            return True
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stop(Overflow())
            return False
        return True

    def stop(self, why: Control) -> None:
        if self._control is None:
            self._control = why
            # Wake a consumer waiting on an empty queue. A full queue needs no wake: its
            # consumer is not waiting, and checks for a stop before it takes the next item.
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(why)

    async def items(
        self, workflow_id: str, heartbeat: float
    ) -> AsyncIterator[Item | Control | None]:
        """Everything for this subscriber in order; None after `heartbeat` idle seconds.

        Ends after an Overflow or Shutdown (yielded last), or after the end item of each
        thing the subscriber wants.
        """
        stream_next = self.interest.stream_offset
        pending_ends = self._ends_expected()
        if self._catch_up is not None:
            start, end = self._catch_up
            async for value in _read_stream_range(
                workflow_id, self.interest.stream_key, start, end
            ):
                if self._control is not None:
                    break
                yield StreamValue(self.interest.stream_key or "", stream_next, value)
                stream_next += 1
        backlog = iter(self._initial)
        while pending_ends and self._control is None:
            item = next(backlog, None)
            if item is None:
                item = await self._next(heartbeat)
                if item is None:
                    if self._control is None:
                        yield None  # idle: time for a heartbeat
                    continue
            if isinstance(item, StreamValue):
                if item.offset < stream_next:
                    continue  # already sent from the replay buffer or the catch-up read
                stream_next = item.offset + 1
            if isinstance(item, (StreamEnd, EventsEnd, StatusEnd)):
                pending_ends.discard(type(item))
            yield item
        if self._control is not None:
            yield self._control

    def _ends_expected(self) -> set[type]:
        ends: set[type] = set()
        if self.interest.status:
            ends.add(StatusEnd)
        if self.interest.events:
            ends.add(EventsEnd)
        if self.interest.stream_key is not None:
            ends.add(StreamEnd)
        return ends

    async def _next(self, heartbeat: float) -> Item | None:
        """The next queued item; None after `heartbeat` idle seconds or when stopped."""
        try:
            async with asyncio.timeout(heartbeat):
                item = await self._queue.get()
        except TimeoutError:
            return None
        return None if isinstance(item, (Overflow, Shutdown)) else item


async def _read_stream_range(
    workflow_id: str, key: str | None, start: int, end: int
) -> AsyncIterator[Any]:
    """Stream values [start, end) from the database, a page at a time."""
    assert key is not None
    offset = start
    while offset < end:
        values, _, _ = await read_page(workflow_id, key, offset, min(CATCH_UP_PAGE, end - offset))
        if not values:
            return
        for value in values:
            yield value
        offset += len(values)


def _version(change: EventSet) -> int:
    return change.version


@dataclass
class StreamState:
    key: str
    next_offset: int
    buffer: deque[StreamValue]
    end: StreamEnd | None = None
    task: asyncio.Task[None] | None = None

    @property
    def buffer_start(self) -> int:
        return self.buffer[0].offset if self.buffer else self.next_offset


@dataclass
class FeedConfig:
    buffer: int
    replay_buffer: int
    status_poll: float
    events_poll: float


@dataclass
class WorkflowFeed:
    """The shared readers of one workflow, started as its subscribers need them."""

    workflow_id: str
    history: EventHistory
    config: FeedConfig
    on_empty: Callable[["WorkflowFeed"], None]
    subscribers: set[Subscriber] = field(default_factory=set)
    status: WorkflowPublic | None = None
    status_end: StatusEnd | None = None
    terminal: asyncio.Event = field(default_factory=asyncio.Event)
    latest_events: dict[str, EventSet] = field(default_factory=dict)
    events_read: bool = False
    events_end: EventsEnd | None = None
    streams: dict[str, StreamState] = field(default_factory=dict)
    wake_events: asyncio.Event = field(default_factory=asyncio.Event)
    wake_status: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    events_task: asyncio.Task[None] | None = None

    def add(self, interest: Interest) -> Subscriber:
        """Register a subscriber. Runs without awaiting, so what it is told it has (the
        initial items) and what it will be sent (its queue) meet with no gap."""
        sub = Subscriber(interest, self.config.buffer)
        if not self.tasks:
            self._spawn(self._watch_status())
        initial: list[Item] = []
        if interest.events:
            if self.events_task is None:
                self.events_task = self._spawn(self._watch_events())
            if self.events_read:
                current = [
                    c for c in self.latest_events.values() if c.version > interest.events_after
                ]
                current.sort(key=_version)
                initial.extend(current)
            if self.events_end:
                initial.append(self.events_end)
        if interest.status and self.status is not None:
            initial.append(StatusChange(self.status))
            if self.status_end:
                initial.append(self.status_end)
        if interest.stream_key is not None:
            initial.extend(self._join_stream(sub, interest.stream_key, interest.stream_offset))
        sub._initial = initial
        sub.feed = self
        self.subscribers.add(sub)
        return sub

    def _join_stream(self, sub: Subscriber, key: str, offset: int) -> list[Item]:
        state = self.streams.get(key)
        if state is None:
            state = StreamState(key, offset, deque(maxlen=self.config.replay_buffer))
            self.streams[key] = state
            state.task = self._spawn(self._watch_stream(state))
            return []
        if offset < state.buffer_start:
            sub._catch_up = (offset, state.buffer_start)
        initial: list[Item] = [v for v in state.buffer if v.offset >= offset]
        if state.end is not None:
            initial.append(state.end)
        return initial

    def remove(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers:
            for task in self.tasks:
                task.cancel()
            self.on_empty(self)

    def wake(self) -> None:
        self.wake_events.set()
        self.wake_status.set()

    def broadcast(self, item: Item) -> None:
        for sub in list(self.subscribers):
            if sub.wants(item) and not sub.offer(item):
                logger.info("live subscriber of %s fell behind; cut off", self.workflow_id)

    def stop_all(self, why: Control) -> None:
        for sub in self.subscribers:
            sub.stop(why)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._report_crash)
        self.tasks.append(task)
        return task

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("live reader of %s failed", self.workflow_id, exc_info=task.exception())
            self.stop_all(Shutdown("A live reader failed (is the database away?); reconnect."))
            # Leave the hub now: whoever subscribes next gets fresh readers, not dead ones.
            for other in self.tasks:
                other.cancel()
            self.on_empty(self)

    async def _watch_status(self) -> None:
        while True:
            found = await DBOS.get_workflow_status_async(self.workflow_id)
            if found is not None:
                # Under its stored ID: each subscriber's route shows it under its own.
                public = describe(found, found.workflow_id)
                if self.status is None or public.status != self.status.status:
                    self.status = public
                    self.broadcast(StatusChange(public))
                if public.status in TERMINAL_STATUSES:
                    self.status_end = StatusEnd(public)
                    self.broadcast(self.status_end)
                    self.terminal.set()
                    self.wake_events.set()
                    return
            self.wake_status.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.status_poll):
                    await self.wake_status.wait()
                # Many writes wake this at once; one status read per short interval is enough.
                await asyncio.sleep(min(0.05, self.config.status_poll))

    async def _watch_events(self) -> None:
        last = 0
        first = True
        while True:
            finished = self.terminal.is_set()
            self.wake_events.clear()
            changes = [
                EventSet(k, v, n)
                for k, v, n in await self.history.changes_after(self.workflow_id, last)
            ]
            if first:
                # A new watcher gets the current value of each key, not the whole past.
                for change in changes:
                    self.latest_events[change.key] = change
                for change in sorted(self.latest_events.values(), key=_version):
                    self.broadcast(change)
                self.events_read, first = True, False
            else:
                for change in changes:
                    self.latest_events[change.key] = change
                    self.broadcast(change)
            if changes:
                last = changes[-1].version
            if finished:
                status = self.status.status if self.status else "UNKNOWN"
                self.events_end = EventsEnd(status)
                self.broadcast(self.events_end)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.events_poll):
                    await self.wake_events.wait()

    async def _watch_stream(self, state: StreamState) -> None:
        reader = DBOS.read_stream_async(self.workflow_id, state.key, offset=state.next_offset)
        try:
            async for value in reader:
                item = StreamValue(state.key, state.next_offset, value)
                state.next_offset += 1
                state.buffer.append(item)
                self.broadcast(item)
        finally:
            await reader.aclose()
        found = await DBOS.get_workflow_status_async(self.workflow_id)
        state.end = StreamEnd(state.key, state.next_offset, found.status if found else "UNKNOWN")
        self.broadcast(state.end)
