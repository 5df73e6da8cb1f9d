"""Live timelines: one shared reader per watched workflow, however many clients watch it.

A timeline changes with things DBOS sends no notification for (a step finishing, a message
arriving), so each watched workflow's timeline is read again every REFRESH_SEC, by one task
shared by all of that workflow's subscribers, and at once when the hub sees its status change
(the task is itself a status subscriber of the hub). Each entry's SSE frame is encoded once,
for every subscriber. Once the workflow has finished, one last read, then `closed`.
"""

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from workflow_comm.live.feed import Interest
from workflow_comm.live.frames import compact_json, cut_off_sse, sse_frame
from workflow_comm.live.hub import LiveHub
from workflow_comm.live.items import Overflow, Shutdown, StatusChange, StatusEnd
from workflow_comm.models import WorkflowPublic
from workflow_comm.models_mailbox import TimelineEntry

logger = logging.getLogger("workflow_comm")
REFRESH_SEC = 0.5
# Entries the live stream leaves out: the current status moves (it is in `closed` instead).
NOT_LIVE = frozenset({"status"})

# Reads the workflow's whole timeline (stored ID, its status) -> entries, in order.
ReadTimeline = Callable[[str, WorkflowPublic], Coroutine[Any, Any, list[TimelineEntry]]]


@dataclass(eq=False)
class TimelineWatch:
    """What every subscriber of one workflow's live timeline shares."""

    stored_id: str
    entries: list[TimelineEntry] = field(default_factory=list)
    frames: dict[str, bytes] = field(default_factory=dict)  # entry id -> its SSE frame
    ended: str | None = None  # the final status, once the last read is done
    stopped: bool = False  # the server stopped serving it (shutting down)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    read: asyncio.Event = field(default_factory=asyncio.Event)  # the first read is done
    subscribers: int = 0
    task: asyncio.Task[None] | None = None

    def frame(self, entry: TimelineEntry) -> bytes:
        """The entry's SSE frame, encoded once; its id is the entry's id."""
        found = self.frames.get(entry.id)
        if found is None:
            data = compact_json(entry.model_dump(mode="json", exclude_none=True))
            found = self.frames[entry.id] = sse_frame(data, event_id=entry.id)
        return found


class TimelineWatches:
    """The live timelines being watched, each read by one task."""

    def __init__(self, hub: LiveHub, read: ReadTimeline) -> None:
        self.hub = hub
        self.read = read
        self._watches: dict[str, TimelineWatch] = {}

    def join(self, stored_id: str, status: WorkflowPublic) -> TimelineWatch:
        watch = self._watches.get(stored_id)
        if watch is None:
            watch = self._watches[stored_id] = TimelineWatch(stored_id)
            # A fresh context: the task outlives the request that made it, and must not carry
            # its caller (tenant) or its log fields.
            watch.task = asyncio.get_running_loop().create_task(
                self._run(watch, status), context=contextvars.Context()
            )
        watch.subscribers += 1
        return watch

    def leave(self, watch: TimelineWatch) -> None:
        watch.subscribers -= 1
        if watch.subscribers == 0 and self._watches.get(watch.stored_id) is watch:
            del self._watches[watch.stored_id]
            if watch.task is not None:
                watch.task.cancel()

    async def _run(self, watch: TimelineWatch, status: WorkflowPublic) -> None:
        """Read the timeline now, on every status change, and every REFRESH_SEC, until the end."""
        sub = self.hub.subscribe(watch.stored_id, Interest(status=True))
        try:
            await self._refresh(watch, status)
            watch.read.set()
            async for item in sub.items(watch.stored_id, REFRESH_SEC):
                if isinstance(item, (Overflow, Shutdown)):
                    watch.stopped = True
                    break
                if isinstance(item, (StatusChange, StatusEnd)):
                    status = item.workflow
                await self._refresh(watch, status)
                if isinstance(item, StatusEnd):
                    watch.ended = status.status
                    break
        finally:
            self.hub.unsubscribe(sub)
            watch.read.set()
            watch.changed.set()

    async def _refresh(self, watch: TimelineWatch, status: WorkflowPublic) -> None:
        try:
            entries = await self.read(watch.stored_id, status)
        except Exception as exc:  # noqa: BLE001 - the database is away: the next tick retries
            logger.warning("live timeline read of %s failed: %s", watch.stored_id, exc)
            return
        entries = [e for e in entries if e.type not in NOT_LIVE]
        if [e.id for e in entries] != [e.id for e in watch.entries]:
            watch.entries = entries
            watch.changed.set()


async def timeline_frames(
    watch: TimelineWatch, workflow_id: str, after: str | None, heartbeat: float
) -> AsyncIterator[bytes | None]:
    """A subscriber's frames: every entry (after the one with id `after`, when resuming), then
    each new one, then `closed`; None when idle for `heartbeat` seconds (time for a ping)."""
    await watch.read.wait()
    sent: set[str] = set()
    last = after
    if after is not None:
        ids = [entry.id for entry in watch.entries]
        if after in ids:  # resuming: what came up to it was received
            sent.update(ids[: ids.index(after) + 1])
    while True:
        watch.changed.clear()
        for entry in list(watch.entries):
            if entry.id not in sent:
                sent.add(entry.id)
                last = entry.id
                yield watch.frame(entry)
        if watch.ended is not None:
            yield sse_frame(
                compact_json({"workflow_id": workflow_id, "status": watch.ended}), event="closed"
            )
            return
        if watch.stopped or (watch.task is not None and watch.task.done()):
            yield cut_off_sse(Shutdown(), {"last_event_id": last})
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(heartbeat):
                await watch.changed.wait()
                continue
        yield None
