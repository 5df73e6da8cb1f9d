"""The FastAPI application: routers, error handlers, body limit and the DBOS lifespan."""

from fastapi import FastAPI
from fastapi.exceptions import WebSocketRequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from workflow_comm import __version__
from workflow_comm.errors import install_error_handlers
from workflow_comm.limits import BodySizeLimit, ClientWaits
from workflow_comm.routes import (
    apidocs,
    dashboard,
    events,
    health,
    live,
    messaging,
    metrics,
    streaming,
    websocket,
    workflows,
)
from workflow_comm.runtime import lifespan
from workflow_comm.settings import get_settings

# What a browser page may send: the API key, JSON, and the resume point of a live stream.
CORS_REQUEST_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
]


def create_app() -> FastAPI:
    app = FastAPI(
        title="DBOS Workflow Communication",
        version=__version__,
        description="Events, messaging and streaming between durable DBOS workflows and clients.",
        lifespan=lifespan,
        # Served by routes/apidocs.py from this server, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    # live first: its fixed paths (/live) must win over the {event_key} catch-all.
    for area in (live, websocket, events, messaging, streaming, workflows, health):
        app.include_router(area.router)
    dashboard.install(app)
    apidocs.install(app)
    install_error_handlers(app)
    # Out-of-bounds WebSocket parameters: an `error` frame and close 4422, not a bare 403.
    app.add_exception_handler(WebSocketRequestValidationError, websocket.refuse_invalid_parameters)
    settings = get_settings()
    live.use_heartbeat(settings.sse_heartbeat_sec)
    app.state.client_waits = ClientWaits(settings.max_waits_per_client)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_message_bytes)
    if settings.cors_origins:
        # Outside the body limit and auth, so a browser can read their 413 and 401 answers.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=["Retry-After"],
            max_age=settings.cors_max_age_sec,
        )
    metrics.install(app)  # last added, so outermost: it counts every answer
    return app
