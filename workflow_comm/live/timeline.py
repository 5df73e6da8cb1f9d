"""Live timelines: shared state per watched workflow, and one batched reader for them all.

A timeline changes with things DBOS sends no notification for (a step finishing, a recv
taking a message, a status change), so every COMM_LIVE_STATUS_POLL_SEC one statement reads
the head of every watched timeline (its status row, its highest operation ID and its number
of messages); a Postgres notification or a commit of this process's own about a watched
workflow runs that read at once. Only the workflows whose head moved are read further, all
together: one statement per kind of record (operations, events, stream writes, messages),
each reading only the rows after where that workflow's timeline was read up to. So whatever
the number of watched timelines and of their subscribers, an idle server sends one statement
per interval for them, and a change costs its new rows, not the workflow's whole history.
Each entry's SSE frame is encoded once, for every subscriber. Once the workflow has finished,
its last rows are read, then its subscribers get `closed`.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from dbos import DBOS

from workflow_comm import names
from workflow_comm.dbos_internals import StoredMessage, TimelineRows
from workflow_comm.live.database import LiveDatabase, TimelineChanges, TimelineCursor
from workflow_comm.live.frames import compact_json, cut_off_sse, sse_frame
from workflow_comm.live.items import Shutdown
from workflow_comm.models import WorkflowPublic
from workflow_comm.models_mailbox import TimelineEntry
from workflow_comm.names import TERMINAL_STATUSES
from workflow_comm.service import describe
from workflow_comm.timeline import build_timeline

logger = logging.getLogger("workflow_comm")
# Entries the live stream leaves out: the current status moves (it is in `closed` instead).
NOT_LIVE = frozenset({"status"})
# The most rows of each kind one batched read takes, for all the timelines it reads.
READ_ROWS = 5000
RETRY_AFTER_FAILURE_SEC = 1.0
# How far below the highest operation ID read a missing one is read for again (see cursor).
OPERATION_HOLES = 8


@dataclass(eq=False)
class TimelineWatch:
    """What every subscriber of one workflow's live timeline shares."""

    stored_id: str
    status: WorkflowPublic  # as last known: the end entry's result or error
    entries: list[TimelineEntry] = field(default_factory=list)
    frames: dict[str, bytes] = field(default_factory=dict)  # entry id -> its SSE frame
    ended: str | None = None  # the final status, once its last rows are read
    stopped: bool = False  # the server stopped serving it (shutting down)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    read: asyncio.Event = field(default_factory=asyncio.Event)  # the first read is done
    subscribers: int = 0
    # What has been read, and the head it was read at (None: read it all again).
    head: tuple[Any, ...] | None = None
    status_row: tuple[Any, ...] | None = None
    operations: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # by function_id
    events: list[tuple[Any, ...]] = field(default_factory=list)
    streams: list[tuple[Any, ...]] = field(default_factory=list)
    messages: dict[str, StoredMessage] = field(default_factory=dict)  # by message ID

    def frame(self, entry: TimelineEntry) -> bytes:
        """The entry's SSE frame, encoded once; its id is the entry's id."""
        found = self.frames.get(entry.id)
        if found is None:
            data = compact_json(entry.model_dump(mode="json"))
            found = self.frames[entry.id] = sse_frame(data, event_id=entry.id)
        return found

    @property
    def cursor(self) -> TimelineCursor:
        return TimelineCursor(
            operation=_operations_after(self.operations),
            event=_last_id(self.events),
            stream=_last_id(self.streams),
            sent_at=max((m.sent_at for m in self.messages.values()), default=-1),
        )

    def add(self, changes: TimelineChanges) -> None:
        """Rows read after the cursor; at most TIMELINE_READ_MAX of each kind are kept."""
        for row in changes.operations:  # a row read again (see cursor) replaces itself
            if row[0] in self.operations or len(self.operations) < names.TIMELINE_READ_MAX:
                self.operations[int(row[0])] = row
        for kept, new in (
            (self.events, changes.events),
            (self.streams, changes.streams),
        ):
            kept.extend(new[: max(0, names.TIMELINE_READ_MAX - len(kept))])
        for message in changes.messages:  # a message read again may have been consumed since
            if message.message_id in self.messages or len(self.messages) < names.TIMELINE_READ_MAX:
                self.messages[message.message_id] = message

    def rebuild(self) -> None:
        rows = TimelineRows(
            status=self.status_row,
            operations=[self.operations[fid] for fid in sorted(self.operations)],
            events=self.events,
            streams=self.streams,
            messages=list(self.messages.values()),
        )
        built = build_timeline(rows, self.status, names.TIMELINE_VALUE_MAX_CHARS)
        entries = [e for e in built if e.type not in NOT_LIVE]
        if [e.id for e in entries] != [e.id for e in self.entries]:
            self.entries = entries
            self.changed.set()


def _operations_after(operations: dict[int, tuple[Any, ...]]) -> int:
    """Where the next read of operations starts: after the highest function_id read, or
    before a recent one missing. DBOS records a recv (or get_event) with a timeout when it
    returns, but the durable sleep it reserved the next ID for as it begins: while it waits,
    its ID is missing just below the highest. IDs start at 1."""
    top = max(operations, default=0)
    for fid in range(max(1, top - OPERATION_HOLES), top):
        if fid not in operations:
            return fid - 1
    return top


def _last_id(rows: list[tuple[Any, ...]]) -> int:
    """The function_id (first column) of the last row read, oldest first; -1 if none."""
    return int(rows[-1][0]) if rows else -1


class TimelineWatches:
    """The live timelines being watched, read together by one task (started by the hub)."""

    def __init__(self, db: LiveDatabase, interval: float) -> None:
        self._db = db
        self._interval = interval
        self._watches: dict[str, TimelineWatch] = {}
        self._due = asyncio.Event()
        self._failing = False

    def watching(self, stored_id: str) -> bool:
        return stored_id in self._watches

    def join(self, stored_id: str, status: WorkflowPublic) -> TimelineWatch:
        watch = self._watches.get(stored_id)
        if watch is None:
            watch = self._watches[stored_id] = TimelineWatch(stored_id, status)
            self._due.set()  # its first read: now, not at the next interval
        watch.subscribers += 1
        return watch

    def leave(self, watch: TimelineWatch) -> None:
        watch.subscribers -= 1
        if watch.subscribers == 0 and self._watches.get(watch.stored_id) is watch:
            del self._watches[watch.stored_id]

    def wake(self, stored_id: str) -> None:
        """Something was written for the workflow (a notification, a commit here): read now."""
        if stored_id in self._watches:
            self._due.set()

    def wake_all(self) -> None:
        if self._watches:
            self._due.set()

    def stop_all(self) -> None:
        """The server is going away: every subscriber gets `shutdown`."""
        for watch in self._watches.values():
            watch.stopped = True
            watch.changed.set()

    async def run(self) -> None:
        """Every interval, or at once when woken: read the heads, then what moved."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._due.wait()
            self._due.clear()
            if not self._watches:
                continue
            try:
                await self._read()
            except Exception as exc:  # noqa: BLE001 - the database is away: again shortly
                if not self._failing:
                    logger.warning("live timeline read failed (%s); retrying", type(exc).__name__)
                self._failing = True
                for watch in self._watches.values():
                    watch.read.set()  # its subscribers get heartbeats meanwhile, not silence
                await asyncio.sleep(RETRY_AFTER_FAILURE_SEC)
            else:
                self._failing = False

    async def _read(self) -> None:
        watched = [w for w in self._watches.values() if w.ended is None]
        heads = await self._db.timeline_heads([w.stored_id for w in watched])
        moved = [w for w in watched if heads.get(w.stored_id) != w.head]
        if not moved:
            return
        # The heads were read first: the rows read now hold everything they counted.
        changes = await self._db.timeline_changes(
            {w.stored_id: w.cursor for w in moved},
            max_rows=READ_ROWS,
            chars=names.TIMELINE_VALUE_MAX_CHARS,
        )
        ended = [
            w for w in moved if w.stored_id in heads and heads[w.stored_id][2] in TERMINAL_STATUSES
        ]
        if ended:
            # Only once per workflow: its result or error, for the end entry.
            found = await DBOS.list_workflows_async(
                workflow_ids=[w.stored_id for w in ended], load_input=False
            )
            for status in found:
                watch = self._watches.get(status.workflow_id)
                if watch is not None:
                    watch.status = describe(status, status.workflow_id)
        for watch in moved:
            read = changes[watch.stored_id]
            head = heads.get(watch.stored_id)
            watch.add(read)
            watch.status_row = None if head is None else head[:7]
            # Cut at the row limit: not up to the head yet, so read on at the next round.
            watch.head = None if read.cut else head
            watch.rebuild()
            if watch in ended and not read.cut:
                watch.ended = watch.status_row[2] if watch.status_row else None
                watch.changed.set()
            watch.read.set()
        if any(w.head is None for w in moved):
            self._due.set()


async def timeline_frames(
    watch: TimelineWatch,
    workflow_id: str,
    after: str | None,
    heartbeat: float,
) -> AsyncIterator[bytes | None]:
    """A subscriber's frames: every entry (after the one with id `after`, when resuming), then
    each new one, then `closed`; None when idle for `heartbeat` seconds (time for a ping)."""
    while not watch.read.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(heartbeat):
                await watch.read.wait()
                break
        yield None
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
        if watch.stopped:
            yield cut_off_sse(Shutdown(), {"last_event_id": last})
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(heartbeat):
                await watch.changed.wait()
                continue
        yield None
