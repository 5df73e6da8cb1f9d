"""Health: is the server up, and does its database answer."""

import os
import threading
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from workflow_comm import __version__
from workflow_comm.models import DatabaseHealth, HealthPublic
from workflow_comm.runtime import DatabaseProbe
from workflow_comm.settings import Settings

router = APIRouter(tags=["health"])

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
async def health(request: Request) -> JSONResponse:
    """200 when the server and its database answer; 503 (same body) when the database does not."""
    settings: Settings = request.app.state.settings
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
