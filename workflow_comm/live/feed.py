"""One watched workflow: its shared state (status, events, streams) and who is watching it.

A feed reads nothing on its own schedule. The hub (hub.py) tells it what changed: the status
from its batched poll, event changes from its batched reads (woken by Postgres notifications,
or polled on SQLite), and when to read a stream further. Every subscriber and every waiting
request on the workflow shares this state, so the database work per change does not grow with
the number of watchers. Each subscriber has a bounded queue; one that falls too far behind is
cut off with word of where to resume.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from dbos import DBOS

from workflow_comm.live.database import StoredEvent
from workflow_comm.live.eager import start_eagerly
from workflow_comm.live.items import (
    FLUSH,
    Control,
    EventsEnd,
    EventSet,
    Flush,
    Item,
    Overflow,
    Shutdown,
    StatusChange,
    StatusEnd,
    StreamEnd,
    StreamValue,
)
from workflow_comm.metrics import LIVE_OVERFLOWS
from workflow_comm.models import WorkflowPublic
from workflow_comm.names import TERMINAL_STATUSES
from workflow_comm.service import read_page

logger = logging.getLogger("workflow_comm")
CATCH_UP_PAGE = 1000
STREAM_RETRY_SEC = 1.0  # after a failed stream read


@dataclass(frozen=True)
class Interest:
    """What a subscriber wants: any of status, events, and one stream from an offset."""

    status: bool = False
    events: bool = False
    events_after: int = 0  # send only event changes with a version above this
    stream_key: str | None = None
    stream_offset: int = 0


# A live response's hooks for its feed (Subscriber.attach): how it shows an item (its frame,
# or None for one it does not show), and how it writes the frames of one loop round to its
# connection (an SSE response in one write; a WebSocket one message each).
Render = Callable[[Item], Any]
WriteFrames = Callable[[list[Any]], Awaitable[None]]
# Items a waiting subscriber is written straight away (see Subscriber); the end items and the
# controls go through its queue, to the task that ends its response.
WRITTEN_STRAIGHT_AWAY = (StreamValue, EventSet, StatusChange)


class Subscriber:
    """One live response's place in a feed: what it wants, and the items on their way to it.

    An item reaches the response one of two ways. While the response's task waits for more,
    with nothing queued, and the response has attached its hooks, the feed renders the item
    itself and writes its frame to the connection: no queue and no wake of the response's
    task, which is what keeps a fan-out to thousands of subscribers cheap. The frames of one
    loop round (a page of stream values, an events read) go out in one write, as the
    response's own writes gather them (fewer, larger TCP segments). Otherwise the item is
    queued, and the response's task takes it from items(). A write that has to wait for a
    slow client holds back every later item until it is done (they queue behind it), so
    order is kept, and a client that reads too slowly still fills its queue and is cut off.
    """

    def __init__(self, interest: Interest, maxsize: int) -> None:
        self.interest = interest
        self._queue: asyncio.Queue[Item | Control] = asyncio.Queue(maxsize=maxsize)
        self._initial: list[Item] = []
        self._catch_up: tuple[int, int] | None = None  # stream offsets [start, end) from the db
        self._control: Control | None = None
        self._stream_next = interest.stream_offset  # the next stream offset to send
        self._hooks: tuple[Render, WriteFrames] | None = None
        self._waiting = False  # the response's task waits in _next() with nothing queued
        self._frames: list[Any] = []  # rendered this loop round, written at its end
        self._writing: asyncio.Task[None] | None = None  # a write that had to wait
        self._unwritten = 0  # the items in that write: they count against the queue's bound
        self._written_at = 0.0  # loop time of the last such write (heartbeats count from it)
        self.feed: WorkflowFeed | None = None  # the feed that registered it

    def attach(self, render: Render, write: WriteFrames) -> None:
        """Let the feed write items to the response while its task waits (see the class)."""
        self._hooks = (render, write)

    def detach(self) -> None:
        """The response is over: nothing more is written to it."""
        self._hooks = None
        self._frames.clear()

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
        """Hand on `item`; False if the queue is full (the subscriber is then cut off)."""
        if self._control is not None:
            return True
        if self._straight_away(item):
            self._render(item)
            return True
        try:
            if self._queue.qsize() + self._unwritten >= self._queue.maxsize:
                raise asyncio.QueueFull  # as many are on their way as the queue holds
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stop(Overflow())
            LIVE_OVERFLOWS.inc()
            return False
        return True

    def _straight_away(self, item: Item) -> bool:
        return (
            self._waiting
            and self._hooks is not None
            and self._writing is None
            and self._queue.empty()
            and isinstance(item, WRITTEN_STRAIGHT_AWAY)
        )

    def _render(self, item: Item) -> None:
        """Render `item` into this round's frames; the first one schedules their write."""
        assert self._hooks is not None
        if isinstance(item, StreamValue):
            if item.offset < self._stream_next:
                return  # already sent from the replay buffer or the catch-up read
            self._stream_next = item.offset + 1
        frame = self._hooks[0](item)
        if frame is None:
            return
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._write_frames)
        self._frames.append(frame)

    def _write_frames(self) -> None:
        """Write the frames rendered so far, at once if the connection takes them; else
        leave the write to a task that the response's task waits for."""
        if not self._frames or self._hooks is None:
            return
        frames, self._frames = self._frames, []
        self._written_at = asyncio.get_running_loop().time()
        try:
            writing = start_eagerly(self._hooks[1](frames))
        except Exception as exc:  # noqa: BLE001 - the connection is broken: end the response
            logger.info("live write failed: %r", exc)
            self.stop(Shutdown())
            return
        if writing is not None:
            self._writing, self._unwritten = writing, len(frames)
            writing.add_done_callback(self._written)

    def _written(self, writing: asyncio.Task[None]) -> None:
        self._writing, self._unwritten = None, 0
        if not writing.cancelled() and writing.exception() is not None:
            logger.info("live write failed: %r", writing.exception())
            self.stop(Shutdown())

    def stop(self, why: Control) -> None:
        if self._control is None:
            self._control = why
            # Wake a consumer waiting on an empty queue. A full queue needs no wake: its
            # consumer is not waiting, and checks for a stop before it takes the next item.
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(why)

    async def items(
        self, workflow_id: str, heartbeat: float, *, flushes: bool = False
    ) -> AsyncIterator[Item | Control | Flush | None]:
        """Everything for this subscriber in order; None after `heartbeat` idle seconds.

        Ends after an Overflow or Shutdown (yielded last), or after the end item of each
        thing the subscriber wants. `workflow_id` is the caller's ID (catch-up reads use it).
        With `flushes`, FLUSH comes whenever nothing more is ready (before each wait), so a
        caller can write the items ready together in one write: fewer, larger writes, and
        TCP segments a reader's kernel holds without overhead (one tiny segment per frame,
        unread, can make it drop some, and the server then retransmits with backoff).
        """
        pending_ends = self._ends_expected()
        if self._catch_up is not None:
            start, end = self._catch_up
            async for page in _read_stream_range(workflow_id, self.interest.stream_key, start, end):
                if self._control is not None:
                    break
                for value in page:
                    yield StreamValue(self.interest.stream_key or "", self._stream_next, value)
                    self._stream_next += 1
                if flushes:
                    yield FLUSH  # before the next page's read
        backlog = iter(self._initial)
        while pending_ends and self._control is None:
            item = next(backlog, None)
            if item is None:
                if flushes and self._queue.empty():
                    yield FLUSH
                item = await self._next(heartbeat)
                if item is None:
                    if self._control is None:
                        yield None  # idle: time for a heartbeat
                    continue
            if isinstance(item, StreamValue):
                if item.offset < self._stream_next:
                    continue  # already sent from the replay buffer or the catch-up read
                self._stream_next = item.offset + 1
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
        """The next queued item; None after `heartbeat` seconds with nothing sent, or when
        stopped. While it waits, the feed may write items itself (see the class)."""
        loop = asyncio.get_running_loop()
        await self._write_done()  # a write that had to wait goes before anything queued
        deadline = loop.time() + heartbeat
        while True:
            self._waiting = self._queue.empty()
            try:
                async with asyncio.timeout_at(deadline):
                    item = await self._queue.get()
                break
            except TimeoutError:
                if not self._frames and self._written_at + heartbeat <= loop.time():
                    return None
                deadline = max(loop.time(), self._written_at) + heartbeat  # written: not idle
            finally:
                self._waiting = False
        # What the feed rendered while this waited goes first.
        self._write_frames()
        await self._write_done()
        return None if isinstance(item, (Overflow, Shutdown)) else item

    async def _write_done(self) -> None:
        """Until a write that had to wait is done (its failure ends the subscriber: _written)."""
        if self._writing is not None:
            await asyncio.wait({self._writing})


async def _read_stream_range(
    workflow_id: str, key: str | None, start: int, end: int
) -> AsyncIterator[list[Any]]:
    """Stream values [start, end) from the database, a page at a time."""
    assert key is not None
    offset = start
    while offset < end:
        values, _, _ = await read_page(workflow_id, key, offset, min(CATCH_UP_PAGE, end - offset))
        if not values:
            return
        yield values
        offset += len(values)


async def read_stream_now(
    stored_id: str, key: str, offset: int, limit: int
) -> tuple[list[Any], bool]:
    """Values written from `offset` (at most `limit`), and whether the stream has ended
    (closed, or its workflow finished and nothing more is written).

    Called from the hub's tasks, which run outside any request (no caller, no tenant): the
    service's stored_id() then leaves the stored ID as it is.
    """
    values, _, ended = await read_page(stored_id, key, offset, limit)
    return values, ended


def _version(change: EventSet) -> int:
    return change.version


@dataclass
class StreamState:
    key: str
    next_offset: int
    buffer: deque[StreamValue]
    end: StreamEnd | None = None
    task: asyncio.Task[None] | None = None
    again: bool = False  # woken while a read was running: read once more

    @property
    def buffer_start(self) -> int:
        return self.buffer[0].offset if self.buffer else self.next_offset


@dataclass
class FeedConfig:
    buffer: int
    replay_buffer: int


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    """How a wait for one event key ended: its value, or the workflow's final status."""

    event: EventSet | None  # None: the key is not set
    final_status: str | None = None  # the workflow finished without setting it


@dataclass(eq=False)  # a feed is itself: hashed by identity
class WorkflowFeed:
    """What the watchers of one workflow share. Runs on the event loop only."""

    workflow_id: str  # the stored ID
    config: FeedConfig
    # The hub's hooks: read this feed's events soon; run a task outside any request.
    want_events_read: Callable[["WorkflowFeed"], None]
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
    subscribers: set[Subscriber] = field(default_factory=set)
    waiters: dict[str, set[asyncio.Future[KeyOutcome]]] = field(default_factory=dict)
    status: WorkflowPublic | None = None
    status_end: StatusEnd | None = None
    latest_events: dict[str, EventSet] = field(default_factory=dict)
    events_read: bool = False  # the first read is done: latest_events is the current state
    events_version: int = 0  # the highest version read
    events_end: EventsEnd | None = None
    streams: dict[str, StreamState] = field(default_factory=dict)

    # -- who watches -----------------------------------------------------------------------

    @property
    def terminal(self) -> bool:
        return self.status_end is not None

    @property
    def wants_events(self) -> bool:
        """Someone needs the event changes, and more may come."""
        if self.events_end is not None:
            return False
        return bool(self.waiters) or any(s.interest.events for s in self.subscribers)

    @property
    def open_streams(self) -> list[StreamState]:
        return [s for s in self.streams.values() if s.end is None]

    @property
    def idle(self) -> bool:
        return not self.subscribers and not self.waiters

    def add(self, interest: Interest) -> Subscriber:
        """Register a subscriber. Runs without awaiting, so what it is told it has (the
        initial items) and what it will be sent (its queue) meet with no gap."""
        sub = Subscriber(interest, self.config.buffer)
        initial: list[Item] = []
        if interest.events:
            if not self.events_read:
                self.want_events_read(self)
            else:
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

    def remove(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def _join_stream(self, sub: Subscriber, key: str, offset: int) -> list[Item]:
        state = self.streams.get(key)
        if state is None:
            state = StreamState(key, offset, deque(maxlen=self.config.replay_buffer))
            self.streams[key] = state
            self.read_stream(state)
            return []
        if offset < state.buffer_start:
            sub._catch_up = (offset, state.buffer_start)
        initial: list[Item] = [v for v in state.buffer if v.offset >= offset]
        if state.end is not None:
            initial.append(state.end)
        return initial

    def rewarm(self, status: WorkflowPublic | None) -> None:
        """Watched again after a time unwatched (and unread): what it read is kept but may be
        behind. The next events read takes only the changes since events_version, and until
        it is done nothing is answered from the kept values. Streams are read afresh; the
        status is `status` (just read), or the next status poll's."""
        self.events_read = False
        self.streams.clear()
        self.status = None
        if status is not None:
            self.set_status(status)

    def add_waiter(self, key: str) -> asyncio.Future[KeyOutcome]:
        """A future that gets the key's value once it is set, or the final status once the
        workflow has finished without setting it."""
        waiter: asyncio.Future[KeyOutcome] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, set()).add(waiter)
        if not self.events_read:
            self.want_events_read(self)
        return waiter

    def remove_waiter(self, key: str, waiter: asyncio.Future[KeyOutcome]) -> None:
        waiting = self.waiters.get(key)
        if waiting is not None:
            waiting.discard(waiter)
            if not waiting:
                del self.waiters[key]

    def known_outcome(self, key: str) -> KeyOutcome | None:
        """The key's outcome if this feed knows it without reading: set, or never will be."""
        if not self.events_read:
            return None
        found = self.latest_events.get(key)
        if found is not None:
            return KeyOutcome(found)
        if self.events_end is not None:
            return KeyOutcome(None, self.events_end.status)
        return None

    # -- what changed (told by the hub) ----------------------------------------------------

    def set_status(self, public: WorkflowPublic) -> None:
        """The workflow's status as just read (under its stored ID)."""
        if self.terminal:
            return
        if self.status is None or public.status != self.status.status:
            self.status = public
            self.broadcast(StatusChange(public))
        if public.status in TERMINAL_STATUSES:
            self.status_end = StatusEnd(public)
            self.broadcast(self.status_end)
            # One more read of what it wrote before the end, then the end of each.
            if self.wants_events or not self.events_read:
                self.want_events_read(self)
            self.wake_streams()

    def apply_events(self, stored: list[StoredEvent], final: bool) -> None:
        """Event changes read after events_version; `final`: the read began after the
        workflow was seen finished, so nothing more can come."""
        changes = [EventSet(e.key, e.value, e.version, e.decoded) for e in stored]
        if not self.events_read:
            # A new watcher gets the current value of each key, not the whole past.
            for change in changes:
                self.latest_events[change.key] = change
            for change in sorted(self.latest_events.values(), key=_version):
                self.broadcast(change)
            self.events_read = True
        else:
            for change in changes:
                self.latest_events[change.key] = change
                self.broadcast(change)
        if changes:
            self.events_version = changes[-1].version
        for key in [k for k in self.waiters if k in self.latest_events]:
            self._answer(key, KeyOutcome(self.latest_events[key]))
        if final and self.events_end is None:
            status = self.status.status if self.status else "UNKNOWN"
            self.events_end = EventsEnd(status)
            self.broadcast(self.events_end)
            for key in list(self.waiters):
                self._answer(key, KeyOutcome(None, status))

    def _answer(self, key: str, outcome: KeyOutcome) -> None:
        for waiter in self.waiters.pop(key, set()):
            if not waiter.done():
                waiter.set_result(outcome)

    def wake_streams(self) -> None:
        """Something was written to a stream (or the workflow ended): read each one on."""
        for state in self.open_streams:
            self.read_stream(state)

    def read_stream(self, state: StreamState) -> None:
        if state.task is not None:
            state.again = True
        else:
            state.task = self.spawn(self._read_stream(state))

    @property
    def _stream_page(self) -> int:
        # At most half a subscriber's queue per read: a page is handed on at once, and a
        # subscriber that keeps up empties its queue while the next page is read.
        return max(1, min(CATCH_UP_PAGE, self.config.buffer // 2))

    async def _read_stream(self, state: StreamState) -> None:
        """Read the stream from next_offset to what is written now, and again while woken."""
        try:
            while state.end is None and self.subscribers:
                state.again = False
                try:
                    values, ended = await read_stream_now(
                        self.workflow_id, state.key, state.next_offset, self._stream_page
                    )
                except Exception as exc:  # noqa: BLE001 - the database is away: try again
                    logger.warning("live stream read of %s failed: %s", self.workflow_id, exc)
                    await asyncio.sleep(STREAM_RETRY_SEC)
                    continue
                for value in values:
                    item = StreamValue(state.key, state.next_offset, value)
                    state.next_offset += 1
                    state.buffer.append(item)
                    self.broadcast(item)
                # A page may come without waiting on anything (a finished stream is kept
                # whole): let the subscribers take it before the next one.
                await asyncio.sleep(0)
                if ended:
                    state.end = StreamEnd(state.key, state.next_offset, await self._status_now())
                    self.broadcast(state.end)
                elif len(values) < self._stream_page and not state.again:
                    return  # up to date: the next notification or poll wakes it
        finally:
            state.task = None

    async def _status_now(self) -> str:
        """The workflow's status as of now (a stream may end before the status poll sees it)."""
        try:
            found = await DBOS.get_workflow_status_async(self.workflow_id)
        except Exception:  # noqa: BLE001 - the database is away: the last status known
            found = None
        if found is not None:
            return found.status
        return self.status.status if self.status else "UNKNOWN"

    # -- fan-out ---------------------------------------------------------------------------

    def broadcast(self, item: Item) -> None:
        for sub in list(self.subscribers):
            if sub.wants(item) and not sub.offer(item):
                logger.info("live subscriber of %s fell behind; cut off", self.workflow_id)

    def stop_all(self, why: Control) -> None:
        for sub in self.subscribers:
            sub.stop(why)

    def close(self) -> None:
        for state in self.streams.values():
            if state.task is not None:
                state.task.cancel()
