"""The web dashboard: one page at `/`, its scripts and styles under `/static`; and the
browser client it is built on, `/client/workflow-comm.js` with its types beside it.

Plain HTML, CSS and JavaScript modules, no build step and nothing from the internet. The
names and bounds the page needs come from `names`, written into the page as JSON, so the page
never repeats a literal the server owns.
"""

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from workflow_comm import names

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
CLIENT_DIR = Path(__file__).resolve().parent.parent / "js_client"
CLIENT_TYPES = "/client/workflow-comm.d.ts"
CONFIG_PLACEHOLDER = "{{ dashboard_config }}"

# Everything from this server only: no inline script, no third-party origin, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def page_config(demo_workflows: bool = True) -> dict[str, Any]:
    """What the page needs to know: event keys, topic, stream key, statuses, the workflow ID
    rule and bounds, and whether the demo workflows can be started here (without them the
    page follows any workflow: its events and any of its streams). The page's scripts take
    them from here, never their own copies."""
    return {
        "demoWorkflows": demo_workflows,
        "events": {
            "status": names.EVENT_STATUS,
            "progress": names.EVENT_PROGRESS,
            "result": names.EVENT_RESULT,
            "message": names.EVENT_MESSAGE,
        },
        "topic": names.TOPIC_NOTIFICATION,
        "streamKey": names.STREAM_PROGRESS,
        "statuses": {
            "waiting": names.STATUS_WAITING,
            "completed": names.STATUS_COMPLETED,
            "rejected": names.STATUS_REJECTED,
            "timedOut": names.STATUS_TIMED_OUT,
        },
        "bounds": {
            "workflowIdMaxLength": names.WORKFLOW_ID_MAX_LEN,
            "nSteps": [names.N_STEPS_MIN, names.N_STEPS_MAX],
            "stepSeconds": [0, names.STEP_SECONDS_MAX],
            "approvalTimeoutMax": names.APPROVAL_TIMEOUT_MAX,
            "idleTimeoutMax": names.SERVICE_IDLE_TIMEOUT_MAX,
            "topicMaxLength": names.TOPIC_MAX_LEN,
        },
        "defaults": {
            "stepSeconds": names.STEP_SECONDS_DEFAULT,
            "approvalTimeout": names.APPROVAL_TIMEOUT_DEFAULT,
            "idleTimeout": names.SERVICE_IDLE_TIMEOUT_DEFAULT,
        },
        "workflowIdPattern": names.WORKFLOW_ID_PATTERN,
        "workflowIdRule": names.WORKFLOW_ID_RULE,
        "terminalStatuses": sorted(names.TERMINAL_STATUSES),
    }


@cache
def render_index(demo_workflows: bool = True) -> str:
    """index.html with the config filled in; read once, at install, never on the event loop."""
    # Escaping "<" keeps the JSON from ever closing its <script> element.
    config = json.dumps(page_config(demo_workflows)).replace("<", "\\u003c")
    return (STATIC_DIR / "index.html").read_text().replace(CONFIG_PLACEHOLDER, config)


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    """The dashboard page: with the start form if the app has the demo start routes."""
    demo_workflows: bool = request.app.state.demo_workflows
    return HTMLResponse(render_index(demo_workflows), headers=SECURITY_HEADERS)


class RevalidatedStaticFiles(StaticFiles):
    """Static files the browser re-checks by ETag on each load: never a stale script."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


class ClientFiles(RevalidatedStaticFiles):
    """The browser client: its module, and its TypeScript declarations as text."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if str(full_path).endswith(".d.ts"):
            # Python's guess for .ts is a Qt translation file.
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            # Where tools that import by URL (Deno, for one) find the module's types.
            response.headers["X-TypeScript-Types"] = CLIENT_TYPES
        return response


def install(app: FastAPI) -> None:
    """Serve the dashboard at `/`, its files under `/static` and the browser client under
    `/client` (app.state.demo_workflows set)."""
    render_index(app.state.demo_workflows)
    app.include_router(router)
    app.mount("/static", RevalidatedStaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/client", ClientFiles(directory=CLIENT_DIR), name="client")
