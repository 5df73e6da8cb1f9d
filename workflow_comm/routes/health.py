"""Health: is the server up, and does its database answer (a probe apart from DBOS)."""

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from workflow_comm import __version__
from workflow_comm.models import DatabaseHealth, HealthPublic
from workflow_comm.settings import Settings, SettingsDep


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
async def probe_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The probe lives as long as the app (merged into its lifespan by include_router)."""
    probe = DatabaseProbe(app.state.settings)
    app.state.db_probe = probe
    app.state.started_at = time.monotonic()
    try:
        yield
    finally:
        probe.close()


router = APIRouter(tags=["health"], lifespan=probe_lifespan)

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def resident_memory_mb() -> float:
    # /proc is served from kernel memory: reading it never waits on a disk.
    with open("/proc/self/statm") as statm:
        return round(int(statm.read().split()[1]) * _PAGE_MB, 1)


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "The database does not answer"}},
)
async def health(request: Request, settings: SettingsDep) -> JSONResponse:
    """200 when the server and its database answer; 503 (same body) when the database does not."""
    probe: DatabaseProbe = request.app.state.db_probe
    latency = await probe.latency_ms()
    body = HealthPublic(
        status="ok" if latency is not None else "degraded",
        memory_mb=resident_memory_mb(),
        threads=threading.active_count(),
        uptime_seconds=round(time.monotonic() - request.app.state.started_at, 1),
        database=DatabaseHealth(
            backend="sqlite" if settings.is_sqlite else "postgres",
            reachable=latency is not None,
            latency_ms=None if latency is None else round(latency, 2),
        ),
        executor_id=settings.resolved_executor_id,
        application_version=settings.application_version,
        version=__version__,
    )
    return JSONResponse(body.model_dump(), status_code=200 if latency is not None else 503)
