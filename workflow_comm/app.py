"""The FastAPI application: routers, error handlers, body limit and the DBOS lifespan.

app = create_app()                       # settings from the environment
app = create_app(Settings(port=9000))    # or given
include_communication(your_app)          # the routes in an app that launches DBOS itself
"""

from fastapi import APIRouter, Depends, FastAPI
from fastapi.exceptions import WebSocketRequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from workflow_comm import __version__
from workflow_comm.auth import KeyRing, authorize, authorize_live, authorize_send
from workflow_comm.errors import (
    NO_DATABASE,
    OUT_OF_BOUNDS,
    UNAUTHORIZED,
    UNKNOWN_WORKFLOW,
    error_responses,
    install_error_handlers,
)
from workflow_comm.limits import BodySizeLimit, ClientWaits
from workflow_comm.logs import bind_workflow_id
from workflow_comm.routes import (
    apidocs,
    control,
    dashboard,
    events,
    health,
    live,
    mailbox,
    messaging,
    metrics,
    requests,
    streaming,
    timeline,
    tokens,
    webhooks,
    websocket,
)
from workflow_comm.runtime import communication_lifespan, lifespan
from workflow_comm.settings import Settings
from workflow_comm.tokens import TokenIssuer

# Every route about one workflow: its ID in the log lines, the caller's key checked, and
# the same error answers.
WORKFLOW_ERRORS = {401: UNAUTHORIZED, 404: UNKNOWN_WORKFLOW, 422: OUT_OF_BOUNDS, 503: NO_DATABASE}
# What a browser page may send: the API key, JSON, and the resume point of a live stream.
CORS_REQUEST_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The server's app, with `settings` (read from the environment if not given)."""
    settings = settings or Settings()
    app = FastAPI(
        title="DBOS Workflow Communication",
        version=__version__,
        description="Events, messaging and streaming between durable DBOS workflows and clients.",
        lifespan=lifespan,
        # Served by routes/apidocs.py from this server, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    _install(app, settings, demo_workflows=settings.demo_workflows)
    if settings.demo_workflows:
        for area in (events, messaging, streaming, requests):
            app.include_router(
                area.start_router,
                dependencies=[Depends(bind_workflow_id), Depends(authorize)],
                responses=error_responses(WORKFLOW_ERRORS),
            )
    apidocs.install(app)
    return app


def include_communication(app: FastAPI, settings: Settings | None = None) -> None:
    """Add the communication routes to `app`: every route of the server but the demo start
    routes (status, list, events, streams, live push, WebSocket, send, cancel, resume, health,
    metrics) and the dashboard at `/`, with their error answers and middleware.

    For an app that creates and launches DBOS itself, in its own lifespan: the routes' lifespan
    (runtime.communication_lifespan: the live hub and its LISTEN connection) runs inside it,
    once DBOS is launched, and stops before DBOS is destroyed. `settings` (read from the
    environment if not given) must name the database DBOS was launched on.
    """
    _install(app, settings or Settings(), demo_workflows=False)


def _install(app: FastAPI, settings: Settings, *, demo_workflows: bool) -> None:
    """The communication routes, dashboard, error answers and middleware (include_communication);
    `demo_workflows`: whether the app has the demo start routes, for the dashboard's form."""
    app.state.settings = settings
    app.state.demo_workflows = demo_workflows
    app.state.key_ring = KeyRing(settings.api_keys)
    app.state.tokens = TokenIssuer(settings)
    app.state.client_waits = ClientWaits(settings.max_waits_per_client)
    # First: the live hub starts once DBOS is launched, before the routers' own lifespans.
    app.include_router(APIRouter(lifespan=communication_lifespan))
    # live first: its fixed paths (/live) must win over the {event_key} catch-all. It takes
    # the key from ?api_key= too (EventSource cannot send headers), and may answer 503 when
    # the server is at its live-connection limit.
    app.include_router(
        live.router,
        dependencies=[Depends(bind_workflow_id), Depends(authorize_live)],
        responses=error_responses(
            {**WORKFLOW_ERRORS, 503: "Too many live connections, or no database"}, sse=True
        ),
    )
    app.include_router(
        live.list_router,
        dependencies=[Depends(authorize_live)],
        responses=error_responses(
            {401: UNAUTHORIZED, 422: OUT_OF_BOUNDS, 503: "Too many live connections"}, sse=True
        ),
    )
    app.include_router(
        timeline.live_router,
        dependencies=[Depends(bind_workflow_id), Depends(authorize_live)],
        responses=error_responses(WORKFLOW_ERRORS, sse=True),
    )
    app.include_router(websocket.router)  # authorizes in its handler, with close codes
    # A token with the send scope may POST to the messaging routes, and to no others.
    for area, authorization in (
        (events, authorize),
        (messaging, authorize_send),
        (streaming, authorize),
        (control, authorize),
        (mailbox, authorize),
        (timeline, authorize),
        (requests, authorize_send),
    ):
        app.include_router(
            area.router,
            dependencies=[Depends(bind_workflow_id), Depends(authorization)],
            responses=error_responses(WORKFLOW_ERRORS),
        )
    app.include_router(
        tokens.router,
        dependencies=[Depends(authorize)],
        responses=error_responses({401: UNAUTHORIZED, 422: OUT_OF_BOUNDS}),
    )
    # Its lifespan (store, delivery queue, dispatcher) runs after the live hub's: DBOS is up.
    app.include_router(
        webhooks.router,
        dependencies=[Depends(authorize)],
        responses=error_responses({401: UNAUTHORIZED, 422: OUT_OF_BOUNDS, 503: NO_DATABASE}),
    )
    app.include_router(health.router)
    dashboard.install(app)
    install_error_handlers(app)
    # Out-of-bounds WebSocket parameters: an `error` frame and close 4422, not a bare 403.
    app.add_exception_handler(WebSocketRequestValidationError, websocket.refuse_invalid_parameters)
    # Innermost: GET /health answered before routing, inside the body limit, CORS and metrics.
    app.add_middleware(health.HealthShortcut)
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
