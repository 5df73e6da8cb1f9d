"""Health: is the server up, and does its database answer (a probe apart from DBOS)."""

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import psycopg
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from workflow_comm import __version__
from workflow_comm.dbos_internals import DirectReads, open_direct_reads
from workflow_comm.metrics import DB_PROBE_DURATION, DB_PROBE_FAILURES
from workflow_comm.models import HealthPublic
from workflow_comm.settings import Settings


class DatabaseProbe:
    """Answers "does the database answer?" in bounded time, apart from DBOS's retrying calls.

    A connection of its own (dbos_internals.DirectReads, one connection): under load a probe
    never queues behind DBOS's work or the routes' reads, so a busy server does not look like
    a dead database. Requests that arrive while a probe is under way share its answer: one
    `SELECT 1` in flight at most, however many ask.
    """

    def __init__(self, reads: DirectReads, timeout: float = 2.0) -> None:
        self._reads = reads
        self._timeout = timeout
        self._running: asyncio.Task[float | None] | None = None

    async def _probe(self) -> float | None:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                await self._reads.ping()
        except (TimeoutError, psycopg.Error, sqlite3.Error):
            DB_PROBE_FAILURES.inc()
            return None
        seconds = time.perf_counter() - start
        DB_PROBE_DURATION.observe(seconds)
        return seconds * 1000

    async def latency_ms(self) -> float | None:
        """Round-trip time of `SELECT 1`, or None if the database did not answer in time."""
        running = self._running
        if running is None or running.done():
            running = self._running = asyncio.ensure_future(self._probe())
        # Shielded: one caller going away does not cancel the others' answer.
        return await asyncio.shield(running)

    async def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
        await self._reads.close()


@asynccontextmanager
async def probe_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The probe lives as long as the app (merged into its lifespan by include_router)."""
    settings: Settings = app.state.settings
    reads = await open_direct_reads(settings.sqlalchemy_url, max_connections=1, timeout=2.0)
    probe = DatabaseProbe(reads)
    app.state.db_probe = probe
    app.state.started_at = time.monotonic()
    # What never changes in the answer, computed once.
    app.state.health_fixed = {
        "executor_id": settings.resolved_executor_id,
        "application_version": settings.application_version,
        "version": __version__,
    }
    try:
        yield
    finally:
        await probe.close()


router = APIRouter(tags=["health"], lifespan=probe_lifespan)

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


# The resident memory, read at most this often: opening /proc is a tenth of a probe's cost.
MEMORY_READ_INTERVAL_SEC = 0.5
_memory: tuple[float, float] = (-1.0, 0.0)  # (read at, megabytes)


def resident_memory_mb() -> float:
    global _memory
    now = time.monotonic()
    if now - _memory[0] >= MEMORY_READ_INTERVAL_SEC:
        # /proc is served from kernel memory: reading it never waits on a disk.
        with open("/proc/self/statm") as statm:
            _memory = (now, round(int(statm.read().split()[1]) * _PAGE_MB, 1))
    return _memory[1]


async def health_answer(state: State) -> tuple[int, bytes]:
    """The status code and JSON body of GET /health, for the app whose state this is."""
    latency = await state.db_probe.latency_ms()
    # HealthPublic's fields, in its order; encoded as JSONResponse encodes (the bytes
    # model_dump() + JSONResponse gave).
    body = {
        "status": "ok" if latency is not None else "degraded",
        "memory_mb": resident_memory_mb(),
        "threads": threading.active_count(),
        "uptime_seconds": round(time.monotonic() - state.started_at, 1),
        "database": {
            "backend": "sqlite" if state.settings.is_sqlite else "postgres",
            "reachable": latency is not None,
            "latency_ms": None if latency is None else round(latency, 2),
        },
        **state.health_fixed,
    }
    encoded = json.dumps(
        body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
    return (200 if latency is not None else 503), encoded


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "The database does not answer"}},
)
async def health(request: Request) -> Response:
    """200 when the server and its database answer; 503 (same body) when the database does not."""
    status, body = await health_answer(request.app.state)
    return Response(body, status_code=status, media_type="application/json")


class HealthShortcut:
    """Answer `GET /health` before FastAPI's routing, exception handling and request objects:
    the same status, headers and body as the route, for a fraction of the cost. A load
    balancer asks often. Innermost of the middleware, so CORS, the metrics (labelled with the
    route's template) and the body limit still see it; anything else passes on.
    """

    ROUTE = SimpleNamespace(path="/health")  # what the metrics read from scope["route"]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/health"
            or scope["method"] != "GET"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.ROUTE
        status, body = await health_answer(scope["app"].state)
        headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
