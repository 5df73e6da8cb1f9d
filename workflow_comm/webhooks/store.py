"""Where webhooks live: two small tables of this project's own, in DBOS's system database.

- `comm_webhooks`: one row per registered webhook (its tenant, URL, events, filter, time).
- `comm_webhook_cursors`: per event type, the time up to which the dispatcher has started a
  delivery for every event it found (the point its next scan starts from, less a lookback).

In the same database as DBOS's tables, so a webhook is exactly as durable as the workflows
it reports on, every instance of the server sees the same registrations, and no other
service is needed. Created at startup if missing (idempotent: CREATE ... IF NOT EXISTS), on
Postgres in a schema of their own (`comm`), never in DBOS's `dbos` schema; on SQLite as
plain tables of the same file. Reads of DBOS's own tables go through the same connections,
with the statements dbos_internals.py holds.
"""

import asyncio
import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg_pool import AsyncConnectionPool

from workflow_comm.dbos_internals import webhook_sql

POSTGRES_SCHEMA = "comm"
# Connections the webhook store keeps to Postgres: the dispatcher and the routes.
POOL_SIZE = 3


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    tenant: str | None  # None: registered with an operator key (or on an open server)
    url: str
    events: tuple[str, ...]
    workflow_id_prefix: str | None
    kind: str | None
    created_at: int  # epoch ms: events recorded before this are not sent to it


def _tables(is_sqlite: bool) -> list[str]:
    schema = "" if is_sqlite else f"{POSTGRES_SCHEMA}."
    statements = [
        f"CREATE TABLE IF NOT EXISTS {schema}comm_webhooks ("
        " id TEXT PRIMARY KEY, tenant TEXT, url TEXT NOT NULL, events TEXT NOT NULL,"
        " workflow_id_prefix TEXT, kind TEXT, created_at BIGINT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {schema}comm_webhook_cursors ("
        " event TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    ]
    if not is_sqlite:
        statements.insert(0, f"CREATE SCHEMA IF NOT EXISTS {POSTGRES_SCHEMA}")
    return statements


class WebhookStore(ABC):
    """The registrations, the dispatcher's cursors, and reads of DBOS's tables for both."""

    def __init__(self, is_sqlite: bool) -> None:
        self.is_sqlite = is_sqlite
        self._t = "" if is_sqlite else f"{POSTGRES_SCHEMA}."

    def sql(self, text: str) -> str:
        return webhook_sql(self.is_sqlite, text)

    @abstractmethod
    async def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit) and return its rows, if any."""

    @abstractmethod
    async def close(self) -> None: ...

    async def create_tables(self) -> None:
        for statement in _tables(self.is_sqlite):
            try:
                await self.rows(statement, {})
            except psycopg.errors.UniqueViolation:
                # Two instances creating the same table at once: one wins, both go on.
                pass

    async def add(self, webhook: Webhook) -> None:
        await self.rows(
            self.sql(
                f"INSERT INTO {self._t}comm_webhooks (id, tenant, url, events,"
                " workflow_id_prefix, kind, created_at)"
                " VALUES (:id, :tenant, :url, :events, :prefix, :kind, :created_at)"
            ),
            {
                "id": webhook.id,
                "tenant": webhook.tenant,
                "url": webhook.url,
                "events": json.dumps(list(webhook.events)),
                "prefix": webhook.workflow_id_prefix,
                "kind": webhook.kind,
                "created_at": webhook.created_at,
            },
        )

    async def remove(self, webhook_id: str) -> None:
        await self.rows(
            self.sql(f"DELETE FROM {self._t}comm_webhooks WHERE id = :id"), {"id": webhook_id}
        )

    async def all(self) -> list[Webhook]:
        rows = await self.rows(
            f"SELECT id, tenant, url, events, workflow_id_prefix, kind, created_at"
            f" FROM {self._t}comm_webhooks ORDER BY created_at, id",
            {},
        )
        return [
            Webhook(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], int(r[6])) for r in rows
        ]

    async def cursors(self) -> dict[str, int]:
        rows = await self.rows(f"SELECT event, position FROM {self._t}comm_webhook_cursors", {})
        return {event: int(position) for event, position in rows}

    async def save_cursor(self, event: str, position: int) -> None:
        await self.rows(
            self.sql(
                f"INSERT INTO {self._t}comm_webhook_cursors (event, position)"
                " VALUES (:event, :position) ON CONFLICT (event)"
                " DO UPDATE SET position = excluded.position"
            ),
            {"event": event, "position": position},
        )


class PostgresStore(WebhookStore):
    def __init__(self, url: str) -> None:
        super().__init__(is_sqlite=False)
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=10,
            open=False,
            kwargs={"autocommit": True},
            name="webhooks",
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []

    async def close(self) -> None:
        await self._pool.close()


class SqliteStore(WebhookStore):
    """The stdlib sqlite3 on one thread of its own (its connection is used there only)."""

    def __init__(self, path: str) -> None:
        super().__init__(is_sqlite=True)
        self._path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="webhooks")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []

    def _run(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            self._connections.append(conn)
        return conn.execute(sql, params).fetchall()

    async def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, sql, params)

    async def close(self) -> None:
        await asyncio.to_thread(self._thread.shutdown, wait=True, cancel_futures=True)
        for conn in self._connections:
            conn.close()


async def open_store(url: str) -> WebhookStore:
    """The store on the system database at `url` (a SQLAlchemy URL), its tables created."""
    store: WebhookStore
    if url.startswith("sqlite:"):
        store = SqliteStore(sa.engine.make_url(url).database or "")
    else:
        postgres = PostgresStore(url)
        await postgres.open()
        store = postgres
    await store.create_tables()
    return store
