"""Your own DBOS application, with the communication routes and the dashboard mounted in it.

What it demonstrates: a FastAPI app of its own that creates and launches DBOS in its own
lifespan and defines its own workflow, `draft_reply`. The workflow streams an LLM-style reply
token by token to the stream `tokens`, publishes `stage` and `progress` events, then waits for
a person's approval on the topic `approval`. The app has its own start route
(`POST /drafts/{id}`); `include_communication` adds every read, wait, watch and control route
of the server (not its demo start routes) and the dashboard at `/`, whose live hub starts and
stops with this app. No LLM is called: the reply is made up from the prompt, a token a step.

For a browser, `POST /drafts/{id}/token` mints a token that reads that draft and sends it
messages, and nothing else (COMM_TOKEN_SECRET must be set); the React page of
examples/react/, once built (`npm ci && npm run build` there), is served at /app/ and follows a
draft with such a token, never an API key.

Run it (an SQLite file in the current folder, or the database DBOS_SYSTEM_DATABASE_URL names):

    python examples/own_app.py --host 127.0.0.1 --port 8001

Try it (or open http://127.0.0.1:8001/ and choose the workflow in the list):

    curl -X POST "http://127.0.0.1:8001/drafts/d-1?prompt=Tell+me+about+durable+streams"
    curl -N "http://127.0.0.1:8001/workflow-stream/d-1/live?key=tokens"
    curl "http://127.0.0.1:8001/workflow-events/d-1/all"
    curl -X POST "http://127.0.0.1:8001/send-message/d-1?topic=approval" \\
      -H "Content-Type: application/json" -d '{"approved": true}'
    curl "http://127.0.0.1:8001/workflows/d-1"

With tokens, and the React page at http://127.0.0.1:8001/app/ (after building it):

    COMM_TOKEN_SECRET="$(openssl rand -hex 32)" python examples/own_app.py
    curl -X POST "http://127.0.0.1:8001/drafts/d-1/token"
"""

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from dbos import DBOS, DBOSConfig, DBOSPortableJSONSerializer, SetWorkflowID
from fastapi import Depends, FastAPI, Query
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from workflow_comm.app import include_communication
from workflow_comm.models import TokenPublic
from workflow_comm.params import WorkflowId
from workflow_comm.routes.tokens import token_issuer
from workflow_comm.settings import Settings
from workflow_comm.tokens import TokenGrant, TokenIssuer

APP_NAME = "drafting-assistant"
# This app's own database file by default, not the server's.
DEFAULT_DATABASE_URL = "sqlite:///drafting_assistant.sqlite"

# The names the workflow, the start route and any client share.
STREAM_TOKENS = "tokens"
EVENT_STAGE = "stage"  # drafting, waiting_for_approval, approved, rejected, timed_out
EVENT_PROGRESS = "progress"  # 0..100 while drafting
EVENT_DRAFT = "draft"  # the whole reply, once drafted
TOPIC_APPROVAL = "approval"
STAGE_DRAFTING = "drafting"
STAGE_WAITING = "waiting_for_approval"
# A page's token lasts this long; the React page asks for a fresh one before it runs out.
PAGE_TOKEN_SECONDS = 600
# The React page (examples/react), served at /app/ once `npm run build` made it.
REACT_DIST = Path(__file__).resolve().parent / "react" / "dist"


def reply_tokens(prompt: str) -> list[str]:
    """The reply a model would write, as its tokens: words with their spacing."""
    text = (
        f"Thanks for asking about {prompt.strip().rstrip('?.!') or 'this'}. Each token you "
        "read was written by a durable workflow: kill the process and it resumes where it "
        "stopped, without writing a token twice."
    )
    words = text.split(" ")
    return [words[0], *(f" {word}" for word in words[1:])]


@DBOS.step()
async def think(seconds: float) -> None:
    """The model's time for one token. A step: after a crash, finished ones are not rerun."""
    await asyncio.sleep(seconds)


@DBOS.workflow()
async def draft_reply(prompt: str, token_seconds: float, approval_timeout: float) -> dict[str, Any]:
    """Stream a reply token by token, then wait for a person to approve or reject it."""
    # Every write below is in the workflow body, so DBOS checkpoints it: exactly once.
    await DBOS.set_event_async(EVENT_STAGE, STAGE_DRAFTING)
    await DBOS.set_event_async(EVENT_PROGRESS, 0)
    tokens = reply_tokens(prompt)
    for done, token in enumerate(tokens, 1):
        await think(token_seconds)
        await DBOS.write_stream_async(STREAM_TOKENS, token)
        await DBOS.set_event_async(EVENT_PROGRESS, done * 100 // len(tokens))
    await DBOS.close_stream_async(STREAM_TOKENS)
    draft = "".join(tokens)
    await DBOS.set_event_async(EVENT_DRAFT, draft)
    await DBOS.set_event_async(EVENT_STAGE, STAGE_WAITING)
    # A durable deadline: recovered after it passed, the workflow times out at once.
    decision = await DBOS.recv_async(TOPIC_APPROVAL, timeout_seconds=approval_timeout)
    if decision is None:
        outcome = "timed_out"
    elif isinstance(decision, dict) and decision.get("approved") is True:
        outcome = "approved"
    else:
        outcome = "rejected"
    await DBOS.set_event_async(EVENT_STAGE, outcome)
    return {"outcome": outcome, "draft": draft, "decision": decision}


class DraftStarted(BaseModel):
    workflow_id: str
    follow: str
    tokens: str
    approve: str


def create_app(settings: Settings) -> FastAPI:
    """This application: its DBOS, its start route, and the communication routes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config: DBOSConfig = {
            "name": APP_NAME,
            # The database the communication routes read too.
            "system_database_url": settings.system_database_url,
            # Pinned, and one ID per process: a restart then recovers its pending workflows.
            "application_version": "1",
            "executor_id": settings.resolved_executor_id,
            "max_executor_threads": settings.max_executor_threads,
            # JSON, not pickle: values the routes and the dashboard read as they are.
            "serializer": DBOSPortableJSONSerializer(),
            # SQLite has no LISTEN/NOTIFY: poll often, so tokens arrive as they are written.
            "notification_listener_polling_interval_sec": settings.sqlite_polling_interval_sec,
        }
        DBOS(config=config)
        DBOS.launch()  # on the loop's thread: recovered async workflows run on this loop
        try:
            yield  # the communication routes' lifespan (the live hub) runs in here
        finally:
            DBOS.destroy(workflow_completion_timeout_sec=0)

    app = FastAPI(title="Drafting assistant", lifespan=lifespan)

    @app.post("/drafts/{draft_id}")
    async def start_draft(
        draft_id: WorkflowId,
        prompt: Annotated[str, Query(min_length=1, max_length=500)] = "durable workflows",
        token_seconds: Annotated[float, Query(ge=0, le=5)] = 0.05,
        approval_timeout: Annotated[float, Query(gt=0, le=86_400)] = 600,
    ) -> DraftStarted:
        """Start drafting a reply under `draft_id` (the same ID again: the same workflow)."""
        with SetWorkflowID(draft_id):
            await DBOS.start_workflow_async(draft_reply, prompt, token_seconds, approval_timeout)
        return DraftStarted(
            workflow_id=draft_id,
            follow=f"/#{draft_id}",
            tokens=f"/workflow-stream/{draft_id}/live?key={STREAM_TOKENS}",
            approve=f"/send-message/{draft_id}?topic={TOPIC_APPROVAL}",
        )

    @app.post("/drafts/{draft_id}/token")
    async def draft_token(
        draft_id: WorkflowId, issuer: Annotated[TokenIssuer, Depends(token_issuer)]
    ) -> TokenPublic:
        """A token for a page showing this draft: it reads the draft and sends it messages
        (the approval), and reaches no other workflow. 404 without COMM_TOKEN_SECRET."""
        # Your app decides here, with its own login, who may see and approve this draft.
        grant = TokenGrant(tenant=None, scopes=frozenset({"read", "send"}), workflow_id=draft_id)
        token, expires_at = issuer.mint(grant, PAGE_TOKEN_SECONDS)
        return TokenPublic(token=token, expires_at=expires_at)

    include_communication(app, settings)
    if REACT_DIST.is_dir():
        app.mount("/app", StaticFiles(directory=REACT_DIST, html=True), name="react-page")
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings(
        host=args.host,
        port=args.port,
        system_database_url=os.environ.get("DBOS_SYSTEM_DATABASE_URL", DEFAULT_DATABASE_URL),
    )
    # Open live connections are cut after 3 s at shutdown (python server.py ends them at once).
    uvicorn.run(create_app(settings), host=args.host, port=args.port, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
