"""Takeover: a surviving instance finishes the workflows of an instance that died for good.

DBOS recovers a process's PENDING workflows when a process with the same executor ID starts
again; nothing recovers them if it never does. Postgres can tell a live instance from a dead
one: every instance holds a session advisory lock derived from its executor ID, on a
connection of its own, for its whole life, and Postgres drops the lock the moment that
process's connection closes (exit, SIGKILL, OOM kill, lost host).

Every COMM_TAKEOVER_INTERVAL_SEC each instance lists the executors that own PENDING workflows
of this application version. An executor whose lock it can take has no live process. It is
taken over only when its lock is free on two scans in a row, an interval apart (the first
time the lock is released at once): a live instance whose lock connection merely dropped
re-takes its lock within a fraction of a second and is left alone. The taker keeps
the lock while it hands the workflows to DBOS's recovery and releases it afterwards, so
one survivor takes over a given executor, and an instance restarting under that executor
ID waits for the handover to finish before it launches DBOS.

Takeover time after a death: at most two intervals to decide, then up to DBOS's queue
polling interval (1 s) until a survivor runs the workflows. Postgres only; SQLite is one
process, so there is no one to take over.

The lock is held even with takeover off (COMM_TAKEOVER_ENABLED=false stops the scans only):
`POST /workflows/{id}/resume` asks it whether a PENDING workflow's executor is alive
(`hold_if_gone`), and a second process with a live executor ID is still refused.
"""

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
from psycopg.rows import TupleRow

from workflow_comm.dbos_internals import PENDING_EXECUTORS_SQL, recover_pending_workflows
from workflow_comm.settings import APP_NAME, Settings

logger = logging.getLogger("workflow_comm")
Connection = psycopg.AsyncConnection[TupleRow]

RETRY_LOCK_SEC = 0.2
CONNECT_TIMEOUT_SEC = 5
KEEPALIVE_IDLE_SEC, KEEPALIVE_INTERVAL_SEC, KEEPALIVE_COUNT = 10, 5, 3


def executor_lock_key(executor_id: str) -> int:
    """The advisory lock key of an executor: 64 bits of a hash of app name and executor ID."""
    digest = hashlib.blake2b(f"{APP_NAME}/executor/{executor_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class ExecutorLockBusy(RuntimeError):
    """Another live process holds this executor ID's lock."""


class LivenessUnknown(RuntimeError):
    """Our own lock came back too recently to tell whether another executor is alive."""


class Takeover:
    """Holds this instance's executor lock and takes over the workflows of dead executors.

    With `settings.takeover_enabled` off it only holds the lock (no scans): others can still
    tell that this instance is alive.
    """

    def __init__(
        self,
        settings: Settings,
        on_database_back: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`on_database_back` runs (in the background) each time the lock connection, lost
        with the database, is back: the first sign here that the database is reachable."""
        self._url = settings.sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._executor_id = settings.resolved_executor_id
        self._version = settings.application_version
        self._interval = settings.takeover_interval_sec
        self._scanning = settings.takeover_enabled
        self._lock_wait = settings.takeover_lock_wait_sec
        self._lock_conn: Connection | None = None
        self._scan_conn: Connection | None = None
        # Since when our own lock has been held without a break (None: not held).
        self._held_since: float | None = None
        # Executors whose lock was free on the last scan, and since when.
        self._suspects: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._on_database_back = on_database_back
        self._background: set[asyncio.Task[None]] = set()

    async def acquire_own_lock(self) -> None:
        """Take this executor's lock before DBOS launches; fail if a live process keeps it.

        A survivor taking over this executor holds the lock for the length of the handover,
        so a restarting instance waits for it rather than recovering the same workflows.
        """
        deadline = time.monotonic() + self._lock_wait
        while not await self._try_own_lock():
            if time.monotonic() >= deadline:
                raise ExecutorLockBusy(
                    f"executor ID {self._executor_id!r} is held by another live process "
                    f"(waited {self._lock_wait:g}s); give each instance its own COMM_EXECUTOR_ID"
                )
            await asyncio.sleep(RETRY_LOCK_SEC)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep_own_lock(), name="takeover-own-lock")]
        if self._scanning:
            self._tasks.append(asyncio.create_task(self._scan_forever(), name="takeover-scan"))

    @contextlib.asynccontextmanager
    async def hold_if_gone(self, executor_id: str) -> AsyncIterator[bool]:
        """True, holding `executor_id`'s lock until the block ends, if no live process holds
        it; False if one does (this instance, for its own executor ID).

        While the block runs, no survivor takes that executor over and no process restarting
        under its ID launches DBOS: both wait for the lock. The lock is taken on a connection
        of its own, closed at the end, which releases it. Raises LivenessUnknown right after
        our own lock came back (a database restart drops every lock): live peers may not
        have retaken theirs yet.
        """
        if executor_id == self._executor_id:
            yield False
            return
        if self._held_since is None or time.monotonic() - self._held_since < self._interval:
            raise LivenessUnknown(
                f"this server's executor lock came back less than {self._interval:g}s ago"
            )
        conn = await self._connect("liveness-check")
        try:
            yield await _try_lock(conn, executor_lock_key(executor_id))
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def stop(self) -> None:
        """Stop scanning and release our lock (call after DBOS has stopped our workflows)."""
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in (self._scan_conn, self._lock_conn):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()

    async def _connect(self, purpose: str) -> Connection:
        return await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SEC,
            application_name=f"workflow-comm {purpose} {self._executor_id}"[:63],
            # Over TCP, both ends probe the idle connection: if this host vanishes, Postgres
            # drops its session, and so its lock, within about 25 s instead of hours.
            keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE_SEC,
            keepalives_interval=KEEPALIVE_INTERVAL_SEC,
            keepalives_count=KEEPALIVE_COUNT,
            options=(
                f"-c tcp_keepalives_idle={KEEPALIVE_IDLE_SEC}"
                f" -c tcp_keepalives_interval={KEEPALIVE_INTERVAL_SEC}"
                f" -c tcp_keepalives_count={KEEPALIVE_COUNT}"
            ),
        )

    async def _try_own_lock(self) -> bool:
        """Connect if needed and try to take our lock once; True if we now hold it."""
        try:
            if self._lock_conn is None or self._lock_conn.closed:
                self._lock_conn = await self._connect("executor-lock")
            if await _try_lock(self._lock_conn, executor_lock_key(self._executor_id)):
                self._held_since = time.monotonic()
                return True
            return False
        except psycopg.Error as exc:
            if self._lock_conn is not None:  # once per outage, not at every retry
                logger.warning("executor lock: no database (%s); retrying", type(exc).__name__)
                await self._lock_conn.close()
            self._lock_conn = None
            return False

    async def _keep_own_lock(self) -> None:
        """Wait on the lock connection; when it breaks, take the lock again at once."""
        while True:
            assert self._lock_conn is not None
            with contextlib.suppress(psycopg.Error):
                # Returns or raises only when the connection is gone (nobody LISTENs on it).
                async for _ in self._lock_conn.notifies():
                    pass
            self._held_since = None
            logger.warning("executor lock connection lost; taking the lock again")
            waited = time.monotonic()
            while not await self._try_own_lock():
                if self._lock_conn is not None and time.monotonic() - waited > self._interval:
                    # Someone has our lock: a survivor judged us dead and is handing our
                    # workflows to the queue, or another process runs with our executor ID.
                    logger.error("executor lock %s is held by another process", self._executor_id)
                    waited = time.monotonic()
                await asyncio.sleep(RETRY_LOCK_SEC)
            logger.warning("executor lock held again")
            if self._on_database_back is not None:
                task = asyncio.ensure_future(self._on_database_back())
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _scan_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.scan()
            except Exception as exc:  # the scan must outlive any failure; it retries next time
                logger.warning("takeover scan: %s; retrying next interval", type(exc).__name__)
                if self._scan_conn is not None:
                    await self._scan_conn.close()
                self._scan_conn = None

    async def scan(self) -> list[str]:
        """One round: take over every executor found dead twice in a row; returns their IDs."""
        now = time.monotonic()
        # Right after our own lock came back (a database restart drops every lock), live
        # peers may not have theirs back yet: wait an interval before judging anyone.
        if self._held_since is None or now - self._held_since < self._interval:
            return []
        if self._scan_conn is None or self._scan_conn.closed:
            self._scan_conn = await self._connect("takeover-scan")
        conn = self._scan_conn
        query = {"version": self._version, "self": self._executor_id, "app": APP_NAME}
        cursor = await conn.execute(PENDING_EXECUTORS_SQL, query)
        executors = [row[0] for row in await cursor.fetchall() if row[0]]
        self._suspects = {e: t for e, t in self._suspects.items() if e in executors}
        taken: list[str] = []
        for executor in executors:
            key = executor_lock_key(executor)
            if not await _try_lock(conn, key):
                self._suspects.pop(executor, None)  # alive
                continue
            try:
                first_free = self._suspects.setdefault(executor, now)
                # Scans start at least an interval apart, so this is the second one in a row.
                if now - first_free >= self._interval * 0.9:
                    await self._take_over(executor)
                    self._suspects.pop(executor, None)
                    taken.append(executor)
                else:
                    logger.warning(
                        "executor %s holds no lock; taking over its workflows if it still "
                        "holds none at the next scan",
                        executor,
                    )
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return taken

    async def _take_over(self, executor: str) -> None:
        started = time.monotonic()
        # DBOS's own recovery, for that executor only (see dbos_internals); blocking.
        handles = await asyncio.to_thread(recover_pending_workflows, executor)
        logger.warning(
            "took over %d pending workflows of dead executor %s in %.0f ms",
            len(handles),
            executor,
            (time.monotonic() - started) * 1000,
        )


async def _try_lock(conn: Connection, key: int) -> bool:
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    row = await cursor.fetchone()
    return bool(row and row[0])
