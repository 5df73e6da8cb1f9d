"""Tokens: a backend with a write key mints a token that reaches one workflow, for a browser."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from starlette.requests import HTTPConnection

from workflow_comm.auth import current_caller, require_room
from workflow_comm.errors import error_responses
from workflow_comm.models import TokenCreate, TokenPublic
from workflow_comm.tokens import TokenGrant, TokenIssuer

NOT_ENABLED = "Tokens are not enabled on this server: set COMM_TOKEN_SECRET to enable them."


async def token_issuer(connection: HTTPConnection) -> TokenIssuer:
    """Dependency: the app's token issuer; 404 if no COMM_TOKEN_SECRET is set."""
    issuer: TokenIssuer = connection.app.state.tokens
    if not issuer.enabled:
        raise HTTPException(404, NOT_ENABLED)
    return issuer


# Authorization (a write key) and the common error answers come where the router is included
# (app.py).
router = APIRouter(
    prefix="/tokens",
    tags=["tokens"],
    responses=error_responses(
        {
            403: "A read key, or a token: minting needs a write key",
            404: "Tokens are not enabled (COMM_TOKEN_SECRET is not set)",
        }
    ),
)


@router.post("")
async def create_token(
    body: TokenCreate, issuer: Annotated[TokenIssuer, Depends(token_issuer)]
) -> TokenPublic:
    """A signed token that reads (and with the send scope messages) one workflow, or every
    workflow with an ID prefix, until it expires."""
    tenant = current_caller().tenant  # the token sees what the minting key sees
    if body.workflow_id is not None:
        require_room(body.workflow_id, ("body", "workflow_id"))
    if body.workflow_id_prefix is not None:
        require_room(body.workflow_id_prefix, ("body", "workflow_id_prefix"))
    grant = TokenGrant(
        tenant=tenant,
        scopes=frozenset(body.scopes),
        workflow_id=body.workflow_id,
        workflow_id_prefix=body.workflow_id_prefix,
    )
    token, expires_at = issuer.mint(grant, body.ttl_seconds)
    return TokenPublic(token=token, expires_at=expires_at)
