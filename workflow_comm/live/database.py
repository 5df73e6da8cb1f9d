"""The live hub's database reads, each batched over every watched workflow, and Postgres wakeups.

Every read here is one statement for any number of workflows (the SQL is in dbos_internals.py),
run on a few threads of the hub's own (never DBOS's or the default executor, which many
workflows and requests share), so the event loop never waits on the database and a busy
server never holds the hub's reads back. DBOS keeps every
set_event in `workflow_events_history` (its public API shows only the latest value); reading it
lets a watcher see each change, not just where a key ended up.
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa

from workflow_comm.dbos_internals import (
    NOTIFY_CHANNELS,
    PORTABLE_JSON,
    StoredMessage,
    decode_value,
    is_stream_close_marker,
    live_batch,
    live_changed_workflows_query,
    live_event_changes_query,
    live_statuses_query,
    live_stream_heads_query,
    live_stream_last_query,
    live_timeline_queries,
    notified_workflow,
    stored_message,
)
from workflow_comm.settings import Settings

logger = logging.getLogger("workflow_comm")
# The hub runs at most a few reads at once (statuses, events, stream pages): its own threads.
READ_THREADS = 4


@dataclass(frozen=True, slots=True)
class StoredEvent:
    key: str
    value: Any  # decoded JSON; None when `decoded` is False
    version: int
    decoded: bool  # False: not stored as JSON, so not read here (DBOS's own read can)


@dataclass(frozen=True, slots=True)
class TimelineCursor:
    """Where a workflow's timeline was read up to: the highest function_id read of its
    operations, events and stream writes, and the latest time a message was sent."""

    operation: int = -1
    event: int = -1
    stream: int = -1
    sent_at: int = -1


@dataclass(slots=True)
class TimelineChanges:
    """Rows read after a TimelineCursor (as TimelineRows holds them); `cut`: a statement hit
    its row limit, so there may be more."""

    operations: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    streams: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[StoredMessage] = field(default_factory=list)
    cut: bool = False


class LiveDatabase:
    """The batched reads of the live hub, on a small connection pool of its own."""

    def __init__(self, settings: Settings) -> None:
        self.is_sqlite = settings.is_sqlite
        sqlite = self.is_sqlite
        self._statuses = live_statuses_query(sqlite)
        self._events = live_event_changes_query(sqlite)
        self._heads = live_stream_heads_query(sqlite)
        self._last = live_stream_last_query(sqlite)
        self._changed = live_changed_workflows_query(sqlite)
        self._timeline = live_timeline_queries(sqlite)
        # No pre-ping (it would double the transactions of every poll): a connection lost
        # with a database restart fails one read, is dropped, and the next read reconnects.
        self._engine = sa.create_engine(
            settings.sqlalchemy_url, pool_size=READ_THREADS, max_overflow=0
        )
        self._threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="live-read")

    def _rows(self, query: sa.TextClause, params: dict[str, Any]) -> list[Any]:
        with self._engine.connect() as conn:
            return list(conn.execute(query, params))

    async def _read(self, query: sa.TextClause, params: dict[str, Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._rows, query, params)

    async def changed_statuses(self, known: dict[str, str]) -> dict[str, str]:
        """The status of each workflow whose status is no longer its own in `known` ("" for
        none known), in one statement; a workflow that does not exist is left out."""
        ids = list(known)
        params = live_batch(self.is_sqlite, ids, known=[known[i] for i in ids])
        rows = await self._read(self._statuses, params)
        return {str(workflow_id): str(status) for workflow_id, status in rows}

    async def event_changes(self, after: dict[str, int]) -> dict[str, list[StoredEvent]]:
        """Each workflow's set_events with a version above its own in `after`, oldest first,
        in one statement."""
        ids = list(after)
        params = live_batch(self.is_sqlite, ids, afters=[after[i] for i in ids])
        found: dict[str, list[StoredEvent]] = {}
        for workflow_id, key, value, serialization, version in await self._read(
            self._events, params
        ):
            decoded = serialization == PORTABLE_JSON
            event = StoredEvent(key, decode_value(value, serialization), version, decoded)
            found.setdefault(workflow_id, []).append(event)
        return found

    async def stream_heads(self, workflow_ids: list[str]) -> dict[tuple[str, str], int]:
        """(workflow, key) -> the highest offset with a row, for every stream of the workflows."""
        rows = await self._read(self._heads, live_batch(self.is_sqlite, workflow_ids))
        return {(workflow_id, key): top for workflow_id, key, top in rows}

    async def stream_length(self, workflow_id: str, key: str) -> int:
        """How many values the stream holds now (its close marker not counted)."""
        rows = await self._read(self._last, {"workflow_id": workflow_id, "key": key})
        if not rows:
            return 0
        offset, value, serialization = rows[0]
        return int(offset) if is_stream_close_marker(value, serialization) else int(offset) + 1

    async def changed_workflows(self, since: int, limit: int) -> list[tuple[str, int]]:
        """(workflow ID, updated_at) of workflows created or changed after `since` (epoch ms)."""
        rows = await self._read(self._changed, {"since": since, "limit": limit})
        return [(workflow_id, int(updated)) for workflow_id, updated in rows]

    async def timeline_heads(self, workflow_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """Each workflow's timeline head (TIMELINE_STATUS columns, the highest operation ID,
        the number of messages): it moves with every new timeline entry. One statement."""
        rows = await self._read(self._timeline.heads, live_batch(self.is_sqlite, workflow_ids))
        return {str(row[0]): tuple(row[1:]) for row in rows}

    async def timeline_changes(
        self, after: dict[str, TimelineCursor], *, max_rows: int, chars: int
    ) -> dict[str, TimelineChanges]:
        """What each workflow's timeline gained after its cursor, one statement per kind of
        record for them all (at most `max_rows` of each kind in all: `cut` says one was)."""
        ids = list(after)
        cursors = [after[i] for i in ids]
        found = {i: TimelineChanges() for i in ids}
        queries = self._timeline
        params = live_batch(
            self.is_sqlite,
            ids,
            ops=[c.operation for c in cursors],
            evs=[c.event for c in cursors],
            sts=[c.stream for c in cursors],
            sent=[c.sent_at for c in cursors],
        ) | {"max": max_rows, "chars": chars + 1}
        for query, kind in (
            (queries.operations, "operations"),
            (queries.events, "events"),
            (queries.streams, "streams"),
        ):
            rows = await self._read(query, params)
            for row in rows:
                getattr(found[str(row[0])], kind).append(tuple(row[1:]))
            self._note_cut(found, len(rows) >= max_rows)
        rows = await self._read(queries.messages, params)
        for row in rows:
            workflow_id = str(row[0])
            found[workflow_id].messages.append(stored_message(workflow_id, tuple(row[1:])))
        self._note_cut(found, len(rows) >= max_rows)
        return found

    @staticmethod
    def _note_cut(found: dict[str, "TimelineChanges"], cut: bool) -> None:
        if cut:
            for changes in found.values():
                changes.cut = True

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._engine.dispose()


class PostgresWakeups:
    """LISTENs on DBOS's channels: `wake(channel, workflow_id)` for each notification, and
    `connected()` each time the connection is (re)established, as notifications sent while it
    was away are lost.

    One connection per server process, whatever the number of subscribers.
    """

    def __init__(
        self, url: str, wake: Callable[[str, str], None], connected: Callable[[], None]
    ) -> None:
        self._url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._wake = wake
        self._connected = connected
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-wakeups")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=5
                )
                async with conn:
                    for channel in NOTIFY_CHANNELS:
                        await conn.execute(f"LISTEN {channel}")
                    delay = 0.5
                    self._connected()
                    async for notify in conn.notifies():
                        self._wake(notify.channel, notified_workflow(notify.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect after a pause
                logger.warning("live wakeups: %s; reconnecting in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
