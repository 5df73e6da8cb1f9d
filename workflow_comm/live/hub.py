"""The registry of watched workflows: subscribe, the connection cap, wakeups and shutdown."""

import asyncio

from workflow_comm.live.database import EventHistory, PostgresWakeups
from workflow_comm.live.feed import FeedConfig, Interest, Subscriber, WorkflowFeed
from workflow_comm.live.finished import FinishWatch
from workflow_comm.live.items import Shutdown
from workflow_comm.settings import Settings


class LiveCapacityExceeded(Exception):
    """Every live connection slot is taken."""


class LiveHub:
    def __init__(self, settings: Settings) -> None:
        self.max_connections = settings.max_live_connections
        self.heartbeat = settings.sse_heartbeat_sec
        self.connections = 0
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._feeds: dict[str, WorkflowFeed] = {}
        self._history = EventHistory(settings)
        self._config = FeedConfig(
            buffer=settings.live_buffer,
            replay_buffer=settings.live_replay_buffer,
            status_poll=settings.live_status_poll_sec,
            # With LISTEN/NOTIFY every change wakes its reader; polling is only a fallback.
            events_poll=settings.live_events_poll_sec if settings.is_sqlite else 1.0,
        )
        self._wakeups = (
            None if settings.is_sqlite else PostgresWakeups(settings.system_database_url, self.wake)
        )
        # Waiting event reads learn here that their workflow finished (routes/events.py).
        self.finishes = FinishWatch(settings.live_status_poll_sec)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._wakeups:
            self._wakeups.start()

    async def stop(self) -> None:
        self.shutdown()
        if self._wakeups:
            await self._wakeups.stop()
        await self.finishes.stop()
        self._history.close()

    def shutdown(self) -> None:
        """Tell every subscriber the server is going away; refuse new ones."""
        self.closing = True
        for feed in list(self._feeds.values()):
            feed.stop_all(Shutdown())

    def shutdown_threadsafe(self) -> None:
        """shutdown() from a signal handler or another thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.shutdown)

    def wake(self, workflow_id: str) -> None:
        feed = self._feeds.get(workflow_id)
        if feed is not None:
            feed.wake()

    def acquire(self) -> None:
        """Take a connection slot, or raise LiveCapacityExceeded."""
        if self.closing or self.connections >= self.max_connections:
            raise LiveCapacityExceeded
        self.connections += 1

    def release(self) -> None:
        self.connections -= 1

    def subscribe(self, workflow_id: str, interest: Interest) -> Subscriber:
        feed = self._feeds.get(workflow_id)
        if feed is None:
            feed = WorkflowFeed(workflow_id, self._history, self._config, self._forget)
            self._feeds[workflow_id] = feed
        return feed.add(interest)

    def unsubscribe(self, sub: Subscriber) -> None:
        # The subscriber's own feed: after a reader failure the hub may hold a newer one.
        if sub.feed is not None:
            sub.feed.remove(sub)

    def _forget(self, feed: WorkflowFeed) -> None:
        if self._feeds.get(feed.workflow_id) is feed:
            del self._feeds[feed.workflow_id]

    @property
    def watched_workflows(self) -> int:
        return len(self._feeds)
