"""DBOS lifecycle: its configuration, launch and shutdown with takeover; the live hub's."""

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, DBOSPortableJSONSerializer
from fastapi import FastAPI

from workflow_comm.dbos_internals import (
    dbos_launched,
    dbos_system_database_url,
    recheck_waiters,
    wait_out_refused_connections,
)
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
    """The server's lifespan: create and launch DBOS with the app; shut it down with the app.

    DBOS.launch() is called on the event loop's thread on purpose: DBOS then runs
    recovered async workflows on this loop. It runs before the server takes requests. The
    communication routes' own lifespan (communication_lifespan) runs inside this one.
    """
    settings: Settings = app.state.settings
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
    logger.info(
        "serving with executor %s, version %s",
        settings.resolved_executor_id,
        settings.application_version,
    )
    try:
        yield
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)
        if takeover is not None:
            await takeover.stop()  # last: our lock says "alive" while our workflows may run


@asynccontextmanager
async def communication_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The communication routes' lifespan: the live hub (its readers and, on Postgres, its
    LISTEN connection) starts with the app and stops with it.

    It runs inside the app's own lifespan, which must have launched DBOS, on the database
    `settings` names: the server's (lifespan above), or that of an app the routes are
    mounted in (app.include_communication).
    """
    settings: Settings = app.state.settings
    check_dbos_matches(settings)
    set_db_timeout(settings.db_timeout_sec)
    hub = LiveHub(settings)
    hub.start()
    app.state.live_hub = hub
    try:
        yield
    finally:
        await hub.stop()


def check_dbos_matches(settings: Settings) -> None:
    """Fail fast, and say why, unless DBOS is launched on the database `settings` names."""
    if not dbos_launched():
        raise RuntimeError(
            "DBOS is not launched: create DBOS and call DBOS.launch() in your app's lifespan, "
            "before the communication routes start (see examples/own_app.py)"
        )
    launched_on = dbos_system_database_url()
    if launched_on is not None and _database(launched_on) != _database(
        settings.system_database_url
    ):
        raise RuntimeError(
            "DBOS was launched on another database than the communication routes read "
            "(Settings.system_database_url, DBOS_SYSTEM_DATABASE_URL): give DBOS the "
            "settings' system_database_url"
        )


def _database(url: str) -> tuple[str | None, ...]:
    """What tells one database from another in a URL (not its driver)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return ("sqlite", os.path.abspath(parsed.database or ""))
    host = parsed.host or str(parsed.query.get("host", ""))  # a socket folder, in the query
    return ("postgresql", host, str(parsed.port or 5432), parsed.database)
