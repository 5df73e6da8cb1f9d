"""DBOS lifecycle: its configuration, launch and shutdown, and a cheap database probe."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, DBOSPortableJSONSerializer
from dbos._dbos import _get_dbos_instance
from fastapi import FastAPI

from workflow_comm.live.hub import LiveHub
from workflow_comm.logs import configure_logging
from workflow_comm.settings import APP_NAME, Settings, get_settings
from workflow_comm.takeover import Takeover

logger = logging.getLogger("workflow_comm")
# Seconds after the database is back at which waiting recv/get_event calls are re-checked: at
# once, and while DBOS's notification listener reconnects (it retries once a second).
RECHECK_AFTER_OUTAGE_SEC = (0.0, 2.0, 5.0, 10.0)


def dbos_config(settings: Settings) -> DBOSConfig:
    config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": settings.system_database_url,
        "application_version": settings.application_version,
        "executor_id": settings.resolved_executor_id,
        # DBOS's pool is unbounded by default: 500 waiters grew a process to 556 threads.
        "max_executor_threads": settings.max_executor_threads,
        "sys_db_pool_size": settings.sys_db_pool_size,
        # JSON in the database, not pickle: readable by SQL and the other SDKs, and a row
        # in the database can never make a reader execute code.
        "serializer": DBOSPortableJSONSerializer(),
        "log_level": settings.log_level,
    }
    if settings.is_sqlite:
        config["notification_listener_polling_interval_sec"] = settings.sqlite_polling_interval_sec
    else:
        config["notification_coalesce_sec"] = settings.notification_coalesce_sec
    return config


def wait_out_refused_connections() -> None:
    """Make a workflow wait for the database when it refuses connections, not die.

    DBOS retries a workflow's database calls until the database is back, but dbos 3.4.0 spots
    a failed connection attempt by psycopg's words "connection failed". An attempt refused at
    once (the socket file is gone or the local port closed while Postgres restarts) reads
    "connection is bad", escapes, and kills the workflow's coroutine, leaving the workflow
    PENDING until the process restarts. Marked as a lost connection, DBOS waits it out.
    Outside workflows (requests) the error still surfaces at once, as a 503.
    """
    if not sa.event.contains(sa.engine.Engine, "handle_error", _refused_in_workflow):
        sa.event.listen(sa.engine.Engine, "handle_error", _refused_in_workflow)


def _refused_in_workflow(context: sa.engine.ExceptionContext) -> None:
    if (
        context.connection is None  # failed while connecting
        and isinstance(context.original_exception, psycopg.OperationalError)
        and DBOS.workflow_id is not None
    ):
        context.is_disconnect = True


async def recheck_waiters_after_outage() -> None:
    """Find the messages and events that waiting workflows and requests missed in an outage.

    DBOS wakes a waiting recv or get_event through LISTEN/NOTIFY and looks at the database on
    its own only every 60 s. dbos 3.4.0 drops the NOTIFYs it could not send while the database
    was away, and its listener misses those sent before it reconnects: a workflow could sit a
    minute on an approval that had arrived. Called when the database is back, this runs DBOS's
    own checks on every waiter (they wake one only if its message or event is there).
    """
    waited = 0.0
    for at in RECHECK_AFTER_OUTAGE_SEC:
        await asyncio.sleep(at - waited)
        waited = at
        await asyncio.to_thread(_recheck_waiters)


def _recheck_waiters() -> None:
    # Private API of dbos 3.4.0 (pinned): the waiter registries its polling listener walks.
    sys_db = _get_dbos_instance()._sys_db
    for _, (workflow_id, topic, _), signal in sys_db.notifications_map.snapshot():
        sys_db.recv_check(workflow_id, topic, cast(Any, signal))  # sets each waiter's event
    for _, (workflow_id, key, _), signal in sys_db.workflow_events_map.snapshot():
        sys_db.get_event_check(workflow_id, key, cast(Any, signal))


class DatabaseProbe:
    """Answers "does the database answer?" in bounded time, apart from DBOS's retrying calls."""

    def __init__(self, settings: Settings) -> None:
        connect_args = {} if settings.is_sqlite else {"connect_timeout": 2}
        self._engine = sa.create_engine(
            settings.sqlalchemy_url,
            pool_size=1,
            max_overflow=1,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
        # Threads of its own: on the default executor (DBOS's pool) a probe would queue behind
        # DBOS's work under load, and a busy server would look like a dead database.
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="health-probe")

    def _ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    async def latency_ms(self, timeout: float = 2.0) -> float | None:
        """Round-trip time of `SELECT 1`, or None if the database did not answer in time."""
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().run_in_executor(self._threads, self._ping)
        except (TimeoutError, sa.exc.SQLAlchemyError):
            return None
        return (time.perf_counter() - start) * 1000

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._engine.dispose()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create and launch DBOS with the app; shut it down with the app.

    DBOS.launch() is called on the event loop's thread on purpose: DBOS then runs
    recovered async workflows on this loop. It runs before the server takes requests.
    """
    settings = get_settings()
    configure_logging(settings)
    # On Postgres always: the executor lock tells others this instance is alive (resume asks
    # it); COMM_TAKEOVER_ENABLED=false only stops the scans for dead executors.
    takeover = (
        None
        if settings.is_sqlite
        else Takeover(settings, on_database_back=recheck_waiters_after_outage)
    )
    if takeover is not None:
        # Before launch: DBOS recovers our own pending workflows as it launches, which must
        # not overlap a survivor still handing them over.
        await takeover.acquire_own_lock()
    wait_out_refused_connections()
    DBOS(config=dbos_config(settings))
    DBOS.launch()
    app.state.takeover = takeover
    if takeover is not None:
        takeover.start()
    app.state.settings = settings
    app.state.started_at = time.monotonic()
    app.state.db_probe = DatabaseProbe(settings)
    app.state.live_hub = LiveHub(settings)
    app.state.live_hub.start()
    logger.info(
        "serving with executor %s, version %s",
        settings.resolved_executor_id,
        settings.application_version,
    )
    try:
        yield
    finally:
        await app.state.live_hub.stop()
        app.state.db_probe.close()
        DBOS.destroy(workflow_completion_timeout_sec=0)
        if takeover is not None:
            await takeover.stop()  # last: our lock says "alive" while our workflows may run
