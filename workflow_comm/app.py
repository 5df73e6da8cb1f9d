"""The FastAPI application: routers, error handlers, body limit and the DBOS lifespan."""

from fastapi import FastAPI

from workflow_comm import __version__
from workflow_comm.errors import install_error_handlers
from workflow_comm.limits import BodySizeLimit
from workflow_comm.routes import (
    dashboard,
    events,
    health,
    live,
    messaging,
    streaming,
    websocket,
    workflows,
)
from workflow_comm.runtime import lifespan
from workflow_comm.settings import get_settings


def create_app() -> FastAPI:
    app = FastAPI(
        title="DBOS Workflow Communication",
        version=__version__,
        description="Events, messaging and streaming between durable DBOS workflows and clients.",
        lifespan=lifespan,
    )
    # live first: its fixed paths (/live) must win over the {event_key} catch-all.
    for area in (live, websocket, events, messaging, streaming, workflows, health):
        app.include_router(area.router)
    dashboard.install(app)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=get_settings().max_message_bytes)
    return app
