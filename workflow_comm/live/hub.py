"""The registry of watched workflows, and the one set of readers that serves them all.

Whatever the number of clients and workflows, the database sees:
- one status query per COMM_LIVE_STATUS_POLL_SEC covering every watched workflow that has not
  finished (a status change sends no notification, and may be made by another instance);
  only for the workflows whose status changed, one more query reads their full status;
- event changes read for every workflow woken at once in one query: woken by Postgres
  notifications (one LISTEN connection per process), or on SQLite by a poll every
  COMM_LIVE_EVENTS_POLL_SEC over every watched workflow (with one query of the stream heads);
- a stream read only when something was written to it (or its workflow ended);
- for `GET /workflows/live` watchers, one query per interval for the rows changed since;
- for live timelines, one query per interval of their heads, and the new rows of those whose
  head moved, all in one query per kind of record (timeline.py);
- on Postgres, every NOTIFY_FALLBACK_SEC, the events and stream heads of every watched
  workflow in one query each, in case a notification was lost.
A set_event or stream write made by this process's own workflows wakes its feed as soon as it
commits (on both backends), ahead of the notification or the SQLite poll, which remain for the
writes of other processes.
Nothing else is read while nothing changes. A feed nobody watches any more is kept a while
(WARM_FEEDS, reading nothing): the next waiter on that workflow reads only the event changes
made since, not the workflow's whole history again (a service's request/reply waits).
Subscribers (SSE, WebSocket) and
waiting `GET /workflow-events/{id}/{key}` requests are all served from the feeds' shared state.
"""

import asyncio
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from dbos import DBOS, WorkflowStatus

from workflow_comm.dbos_internals import (
    LIVE_EVENTS_CHANNEL,
    LIVE_STREAMS_CHANNEL,
    on_local_writes,
)
from workflow_comm.live.database import LiveDatabase, PostgresWakeups
from workflow_comm.live.feed import FeedConfig, Interest, KeyOutcome, Subscriber, WorkflowFeed
from workflow_comm.live.items import Shutdown
from workflow_comm.live.listing import WorkflowListing
from workflow_comm.live.timeline import TimelineWatches
from workflow_comm.service import describe
from workflow_comm.settings import Settings

logger = logging.getLogger("workflow_comm")
RETRY_AFTER_FAILURE_SEC = 1.0
# Postgres: how often everything watched is read even without a notification.
NOTIFY_FALLBACK_SEC = 5.0
# Feeds kept after their last watcher left, most recently used first out of the way last.
WARM_FEEDS = 256


class LiveCapacityExceeded(Exception):
    """Every live connection slot is taken."""


class LiveHub:
    def __init__(self, settings: Settings) -> None:
        self.max_connections = settings.max_live_connections
        self.heartbeat = settings.sse_heartbeat_sec
        self.connections = 0
        self.closing = False
        self.db = LiveDatabase(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._feeds: dict[str, WorkflowFeed] = {}
        self._warm: OrderedDict[str, WorkflowFeed] = OrderedDict()
        # The status (as DBOS returns it) of each watched workflow, kept as current as its
        # feed's by the batched status poll: a waiting GET on a watched workflow starts from
        # it instead of reading the status again (status_of).
        self._statuses: dict[str, WorkflowStatus] = {}
        self._config = FeedConfig(
            buffer=settings.live_buffer, replay_buffer=settings.live_replay_buffer
        )
        self._status_poll = settings.live_status_poll_sec
        # SQLite sends no notifications: its events and stream heads are polled (batched).
        self._data_poll = settings.live_events_poll_sec if settings.is_sqlite else None
        self._wakeups = (
            None
            if settings.is_sqlite
            else PostgresWakeups(settings.system_database_url, self._notified, self.wake_all)
        )
        self._events_pending: set[WorkflowFeed] = set()
        self._events_due = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failing: set[str] = set()
        self._stop_local_writes: Callable[[], None] | None = None
        # GET /workflows/live: new workflows and status changes, polled with the statuses.
        self.listing = WorkflowListing(self.db, settings.live_buffer)
        # GET /workflows/{id}/timeline/live: read together, woken like the feeds.
        self.timelines = TimelineWatches(self.db, settings.live_status_poll_sec)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks.append(self._spawn(self._poll_statuses()))
        self._tasks.append(self._spawn(self._read_events()))
        self._tasks.append(self._spawn(self.timelines.run()))
        if self._data_poll is not None:
            self._tasks.append(self._spawn(self._poll_data(self._data_poll)))
        if self._wakeups:
            self._wakeups.start()
        self._stop_local_writes = on_local_writes(self._written_here)

    async def stop(self) -> None:
        self.shutdown()
        if self._stop_local_writes is not None:
            self._stop_local_writes()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._wakeups:
            await self._wakeups.stop()
        for feed in self._feeds.values():
            feed.close()
        self.db.close()

    def shutdown(self) -> None:
        """Tell every subscriber the server is going away; refuse new ones."""
        self.closing = True
        for feed in list(self._feeds.values()):
            feed.stop_all(Shutdown())
        self.listing.stop_all(Shutdown())
        self.timelines.stop_all()

    def shutdown_threadsafe(self) -> None:
        """shutdown() from a signal handler or another thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.shutdown)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # A fresh context: the hub's tasks outlive the request that caused them, and must not
        # carry its caller (tenant) or its log fields.
        return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())

    # -- connections -----------------------------------------------------------------------

    def acquire(self) -> None:
        """Take a connection slot, or raise LiveCapacityExceeded."""
        if self.closing or self.connections >= self.max_connections:
            raise LiveCapacityExceeded
        self.connections += 1

    def release(self) -> None:
        self.connections -= 1

    # -- feeds -----------------------------------------------------------------------------

    def _feed(self, workflow_id: str, known: WorkflowStatus | None) -> WorkflowFeed:
        """The feed of a stored workflow ID, made if none; `known` seeds a new feed's status."""
        feed = self._feeds.get(workflow_id)
        if feed is not None:
            return feed
        if known is not None:
            self._statuses[workflow_id] = known
        status = None if known is None else describe(known, known.workflow_id)
        feed = self._warm.pop(workflow_id, None)
        if feed is not None:
            feed.rewarm(status)
        else:
            feed = WorkflowFeed(workflow_id, self._config, self._want_events, self._spawn)
            if status is not None:
                feed.set_status(status)
        self._feeds[workflow_id] = feed
        return feed

    def _release(self, feed: WorkflowFeed) -> None:
        if feed.idle and self._feeds.get(feed.workflow_id) is feed:
            del self._feeds[feed.workflow_id]
            self._statuses.pop(feed.workflow_id, None)
            self._events_pending.discard(feed)
            feed.close()
            # Kept, unread, for the next watcher: it then reads only what changed since. A
            # finished workflow's is not (a resumed one would have moved on).
            if feed.events_read and not feed.terminal:
                self._warm[feed.workflow_id] = feed
                while len(self._warm) > WARM_FEEDS:
                    self._warm.popitem(last=False)

    def subscribe(
        self, workflow_id: str, interest: Interest, known: WorkflowStatus | None = None
    ) -> Subscriber:
        """A subscriber of the stored `workflow_id`; `known`: its status, just read."""
        return self._feed(workflow_id, known).add(interest)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.feed is not None:
            sub.feed.remove(sub)
            self._release(sub.feed)

    def status_of(self, workflow_id: str) -> WorkflowStatus | None:
        """The status of the stored `workflow_id` if it is watched now and was not finished
        at the last status poll (at most COMM_LIVE_STATUS_POLL_SEC ago); else None (read it:
        a finished workflow's status is kept by the service, and one may be resumed)."""
        feed = self._feeds.get(workflow_id)
        if feed is None or feed.terminal:
            return None
        return self._statuses.get(workflow_id)

    async def wait_for_event(
        self, workflow_id: str, key: str, timeout: float, known: WorkflowStatus | None = None
    ) -> KeyOutcome:
        """The key's value once set; or, once the workflow has finished without setting it,
        its final status; or, after `timeout` seconds, neither. At once if already known."""
        feed = self._feed(workflow_id, known)
        try:
            outcome = feed.known_outcome(key)
            if outcome is not None:
                return outcome
            waiter = feed.add_waiter(key)
            try:
                async with asyncio.timeout(timeout):
                    return await waiter
            except TimeoutError:
                return feed.known_outcome(key) or KeyOutcome(None)
            finally:
                feed.remove_waiter(key, waiter)
        finally:
            self._release(feed)

    @property
    def reads_failing(self) -> bool:
        """The last status or events read failed: the database is away."""
        return bool(self._failing & {"status", "events"})

    @property
    def watched_workflows(self) -> int:
        return len(self._feeds)

    # -- wakeups ---------------------------------------------------------------------------

    def _notified(self, channel: str, workflow_id: str) -> None:
        self.timelines.wake(workflow_id)
        feed = self._feeds.get(workflow_id)
        if feed is None:
            return
        if channel == LIVE_EVENTS_CHANNEL:
            if feed.wants_events:
                self._want_events(feed)
        elif channel == LIVE_STREAMS_CHANNEL:
            feed.wake_streams()

    def _written_here(self, channel: str, workflow_id: str) -> None:
        """On DBOS's writing thread, just after its commit: wake the feed on the loop."""
        watched = workflow_id in self._feeds or self.timelines.watching(workflow_id)
        if not watched or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._notified, channel, workflow_id)
        except RuntimeError:  # the loop has closed: the server is stopping
            pass

    def wake_all(self) -> None:
        """Read everything watched once more: notifications may have been missed."""
        self.timelines.wake_all()
        for feed in list(self._feeds.values()):
            if feed.wants_events:
                self._want_events(feed)
            feed.wake_streams()

    def _want_events(self, feed: WorkflowFeed) -> None:
        self._events_pending.add(feed)
        self._events_due.set()

    # -- the readers -------------------------------------------------------------------------

    def _failed(self, what: str, exc: Exception) -> None:
        if what not in self._failing:
            logger.warning("live %s read failed (%s); retrying", what, type(exc).__name__)
        self._failing.add(what)

    async def _read_events(self) -> None:
        """Every feed woken since the last read, read in one query."""
        while True:
            await self._events_due.wait()
            self._events_due.clear()
            batch = [
                f
                for f in self._events_pending
                if f.wants_events and self._feeds.get(f.workflow_id) is f
            ]
            self._events_pending.clear()
            if not batch:
                continue
            # Seen finished before the read began: the read has everything it wrote.
            final = {f.workflow_id: f.terminal for f in batch}
            try:
                found = await self.db.event_changes(
                    {f.workflow_id: f.events_version for f in batch}
                )
            except Exception as exc:  # noqa: BLE001 - the database is away: again shortly
                self._failed("events", exc)
                self._events_pending.update(batch)
                await asyncio.sleep(RETRY_AFTER_FAILURE_SEC)
                self._events_due.set()
                continue
            self._failing.discard("events")
            for feed in batch:
                feed.apply_events(found.get(feed.workflow_id, []), final[feed.workflow_id])

    async def _poll_statuses(self) -> None:
        """The status of every watched, unfinished workflow, in one query per interval; and
        for list watchers, the workflows changed since the last one, in one query."""
        checked = time.monotonic()
        while True:
            await asyncio.sleep(self._status_poll)
            watched = {
                f.workflow_id: f.status.status if f.status else ""
                for f in self._feeds.values()
                if not f.terminal
            }
            if watched:
                await self._guarded("status", self._read_statuses(watched))
            if self.listing.watchers:
                await self._guarded("workflow list", self.listing.poll())
            if self._data_poll is None and time.monotonic() - checked >= NOTIFY_FALLBACK_SEC:
                # A notification DBOS failed to send would leave a change unseen: now and then,
                # everything watched is read anyway (one query each for events and streams).
                checked = time.monotonic()
                await self._guarded("stream heads", self._read_everything())

    async def _guarded(self, what: str, read: Coroutine[Any, Any, None]) -> None:
        try:
            await read
        except Exception as exc:  # noqa: BLE001 - the database is away: next interval
            self._failed(what, exc)
        else:
            self._failing.discard(what)

    async def _read_statuses(self, known: dict[str, str]) -> None:
        """`known`: each watched workflow's status as its feed knows it. Only the rows of
        those that changed come back (none while nothing changes)."""
        statuses = await self.db.changed_statuses(known)
        changed = []
        for workflow_id, status in statuses.items():
            feed = self._feeds.get(workflow_id)
            if feed is not None and (feed.status is None or feed.status.status != status):
                changed.append(workflow_id)
        if not changed:
            return
        # Only for what changed: the full status, with its result or error.
        for found in await DBOS.list_workflows_async(workflow_ids=changed, load_input=False):
            feed = self._feeds.get(found.workflow_id)
            if feed is not None:
                self._statuses[found.workflow_id] = found
                feed.set_status(describe(found, found.workflow_id))

    async def _poll_data(self, interval: float) -> None:
        """SQLite: every watched workflow's events (one query) and stream heads (one)."""
        while True:
            await asyncio.sleep(interval)
            await self._guarded("stream heads", self._read_everything())

    async def _read_everything(self) -> None:
        """Read the events of every watched workflow (one query, by the events reader) and
        its streams where something new was written (one query for all their heads)."""
        streaming: list[WorkflowFeed] = []
        for feed in self._feeds.values():
            if feed.wants_events:
                self._want_events(feed)
            if feed.open_streams:
                streaming.append(feed)
        if not streaming:
            return
        heads = await self.db.stream_heads([f.workflow_id for f in streaming])
        for feed in streaming:
            for state in feed.open_streams:
                top = heads.get((feed.workflow_id, state.key))
                if top is not None and top >= state.next_offset:
                    feed.read_stream(state)
