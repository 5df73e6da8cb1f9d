"""DBOS lifecycle: its configuration, launch and shutdown, with the live hub and takeover."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dbos import DBOS, DBOSConfig, DBOSPortableJSONSerializer
from fastapi import FastAPI

from workflow_comm.dbos_internals import recheck_waiters, wait_out_refused_connections
from workflow_comm.errors import set_db_timeout
from workflow_comm.live.hub import LiveHub
from workflow_comm.logs import configure_logging
from workflow_comm.settings import APP_NAME, Settings
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
        await asyncio.to_thread(recheck_waiters)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create and launch DBOS with the app; shut it down with the app.

    DBOS.launch() is called on the event loop's thread on purpose: DBOS then runs
    recovered async workflows on this loop. It runs before the server takes requests.
    """
    settings: Settings = app.state.settings
    configure_logging(settings)
    set_db_timeout(settings.db_timeout_sec)
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
        DBOS.destroy(workflow_completion_timeout_sec=0)
        if takeover is not None:
            await takeover.stop()  # last: our lock says "alive" while our workflows may run
