"""Reads the live readers need beyond DBOS's public API, and Postgres wakeups.

DBOS keeps every set_event in `workflow_events_history` (its public API shows only the latest
value); reading it lets a watcher see each change, not just where a key ended up. The table's
layout and DBOS's channels are in dbos_internals.py.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

from workflow_comm.dbos_internals import (
    NOTIFY_CHANNELS,
    decode_value,
    events_history_query,
    notified_workflow,
)
from workflow_comm.settings import Settings

logger = logging.getLogger("workflow_comm")


class EventHistory:
    """Reads a workflow's event changes after a given version, oldest first."""

    def __init__(self, settings: Settings) -> None:
        self._query = events_history_query(settings.is_sqlite)
        self._engine = sa.create_engine(
            settings.sqlalchemy_url,
            pool_size=2,
            max_overflow=8,
            pool_pre_ping=True,
        )

    def _read(self, workflow_id: str, after: int) -> list[tuple[str, Any, int]]:
        with self._engine.connect() as conn:
            rows = conn.execute(self._query, {"workflow_id": workflow_id, "after": after})
            return [(key, decode_value(value, fmt), version) for key, value, fmt, version in rows]

    async def changes_after(self, workflow_id: str, after: int) -> list[tuple[str, Any, int]]:
        """(key, value, version) of every set_event with version > `after`."""
        return await asyncio.to_thread(self._read, workflow_id, after)

    def close(self) -> None:
        self._engine.dispose()


class PostgresWakeups:
    """LISTENs on DBOS's channels and calls `wake(workflow_id)` for each notification.

    One connection per server process, whatever the number of subscribers.
    """

    def __init__(self, url: str, wake: Callable[[str], None]) -> None:
        self._url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._wake = wake
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
                    async for notify in conn.notifies():
                        self._wake(notified_workflow(notify.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect after a pause
                logger.warning("live wakeups: %s; reconnecting in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
