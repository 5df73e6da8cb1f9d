"""Operations: Prometheus metrics at /metrics (what they count: workflow_comm/metrics.py)."""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.routing import Match
from starlette.types import Scope

from workflow_comm.auth import Caller, authorize
from workflow_comm.errors import UNAUTHORIZED, error_responses
from workflow_comm.metrics import (
    LIVE_CONNECTIONS,
    WAITING_REQUESTS,
    WATCHED_WORKFLOWS,
    HttpMetrics,
)
from workflow_comm.settings import Settings


async def metrics_access(caller: Annotated[Caller, Depends(authorize)]) -> None:
    """Any key may scrape, but not a tenant's: the numbers cover every tenant."""
    if caller.tenant is not None:
        raise HTTPException(403, "Metrics cover every tenant: scrape with a key without one.")


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses({401: UNAUTHORIZED, 403: "A tenant's key: metrics span all tenants"}),
    },
)
async def metrics() -> Response:
    """Prometheus metrics: requests, latencies, live connections, workflows, messages."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def route_matching(app: FastAPI) -> Callable[[Scope], str | None]:
    """The template of the app's route a request path matches, as its router would pick it
    (a full match first, else one for another method): for answers given before routing."""

    def match(scope: Scope) -> str | None:
        partial = None
        for route in iter_route_contexts(app.routes):
            found, _ = route.matches(scope)
            if found is Match.FULL:
                return route.path
            if found is Match.PARTIAL and partial is None:
                partial = route.path
        return partial

    return match


def install(app: FastAPI) -> None:
    """Serve /metrics and count every request. Call last: the counting must be outermost."""
    settings: Settings = app.state.settings
    if not settings.metrics_enabled:
        return
    dependencies = [] if settings.metrics_public else [Depends(metrics_access)]
    app.include_router(router, dependencies=dependencies)
    app.add_middleware(HttpMetrics, match_route=route_matching(app))

    def hub_figure(name: str) -> float:
        hub = getattr(app.state, "live_hub", None)
        return float(getattr(hub, name)) if hub is not None else 0.0

    LIVE_CONNECTIONS.set_function(lambda: hub_figure("connections"))
    WATCHED_WORKFLOWS.set_function(lambda: hub_figure("watched_workflows"))
    WAITING_REQUESTS.set_function(lambda: app.state.client_waits.total)
