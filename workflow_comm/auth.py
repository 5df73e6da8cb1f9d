"""Access control: optional API keys with a role, and optional tenants.

Keys. COMM_API_KEYS lists `key:role[:tenant]` items, comma-separated. With none configured
every endpoint is open, as by default. With keys, every workflow endpoint needs one:
- reading (GET, the SSE endpoints) takes a `read` or a `write` key; starting, sending,
  cancelling, resuming and minting tokens take a `write` key, and a `read` key gets 403;
- no key, or an unknown one, gets 401 with `WWW-Authenticate: Bearer`;
- the key goes in `Authorization: Bearer <key>` or `X-API-Key: <key>`. A browser cannot set
  headers on an EventSource or a WebSocket, so the live endpoints also take `?api_key=<key>`;
  logs.py blanks it out of every log line (uvicorn logs request lines with their query);
- a presented key is hashed and compared with hmac.compare_digest against every configured
  key, so the time taken shows neither how much of a key matched nor which one did.
/health and the dashboard page stay open; /metrics has its own rule (see metrics.py).

Tenants. A key may name a tenant; it then sees that tenant's workflows only. The workflow ID
such a client uses is stored in DBOS as "<tenant>--<id>" (a tenant is letters, digits and _,
so the first "--" ends it), and every response shows the client's own ID. Another tenant's
"x" is simply a different workflow: reading, messaging, cancelling, resuming or watching it
answers 404 as for any unknown ID, and starting "x" starts this tenant's own "x", so no
answer reveals that another tenant used the name. Lists are filtered by the prefix in the
database query. An owner attribute checked after each lookup could not do that: IDs are
unique in DBOS, so a tenant starting an ID another one holds would have to be refused.

The stored ID keeps the bounds of every workflow ID (names.WORKFLOW_ID_MAX_LEN), so a tenant
key's IDs can be 128 - len(tenant) - 2 characters long; a longer one gets the 422 of any
out-of-bounds parameter, a list of field errors naming path.workflow_id. A key
without a tenant is an operator's key: it sees every workflow, under its stored ID.

Tokens (tokens.py, minted by POST /tokens with a write key, or by anyone on an open server)
are taken wherever a key is, and as `?token=` on the live endpoints. A token carries the
tenant of the key that minted it and reaches only its workflow, or the IDs with its prefix:
- any other workflow answers 404 in the words of an unknown ID, as across tenants;
- it reads with the `read` scope, and sends messages (POST /send-message, a WebSocket `send`)
  only with the `send` scope, else 403;
- starting, cancelling, resuming, listing, metrics and minting tokens need a key: 403;
- an expired or forged token gets 401. A presented token is checked even on an open server
  (no keys), so a page behaves there as it will behind keys; tokens narrow, never widen.
A token is checked when a request or a live connection starts; a live connection opened
before the token expires runs on until it ends.

The caller of the current request lives in a context variable set by `authorize`, which
every workflow router declares; service.py and the routes translate IDs with `stored_id`
and `public_id`. Without a tenant both return the ID unchanged.
"""

import hashlib
import hmac
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from workflow_comm import names
from workflow_comm.errors import unknown_workflow
from workflow_comm.names import TokenScope
from workflow_comm.settings import ApiKey
from workflow_comm.tokens import InvalidToken, TokenGrant, TokenIssuer, looks_like_token

TENANT_SEPARATOR = "--"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
QUERY_KEY = "api_key"
QUERY_TOKEN = "token"
# What a token's caller is told where it needs a key.
TOKEN_CANNOT = (
    "A token may read the workflows it was made for, and send them messages with the send "
    "scope; {what} needs an API key."
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: may they write, whose workflows they see (None: every workflow), and, for a
    token's caller, the workflows and scopes the token grants."""

    role: Literal["read", "write"]
    tenant: str | None = None
    grant: TokenGrant | None = None

    @property
    def can_write(self) -> bool:
        """May start, send, cancel, resume and mint tokens: a write key (or an open server)."""
        return self.role == "write" and self.grant is None

    @property
    def can_send(self) -> bool:
        """May send messages: a write key, or a token with the send scope."""
        return self.grant.allows("send") if self.grant is not None else self.can_write


OPEN = Caller("write")  # no keys configured: anyone may do anything
_caller: ContextVar[Caller] = ContextVar("caller", default=OPEN)


def current_caller() -> Caller:
    return _caller.get()


def stored_id(workflow_id: str) -> str:
    """The ID DBOS stores for the caller's `workflow_id`: with their tenant's prefix, if any."""
    tenant = _caller.get().tenant
    if tenant is None:
        return workflow_id
    require_room(workflow_id, ("path", "workflow_id"))
    return f"{tenant}{TENANT_SEPARATOR}{workflow_id}"


def require_room(workflow_id: str, loc: tuple[str, str]) -> None:
    """A 422 on the field at `loc` if the caller's tenant prefix would make `workflow_id`
    longer than any stored ID may be."""
    tenant = _caller.get().tenant
    if tenant is None:
        return
    room = names.WORKFLOW_ID_MAX_LEN - len(tenant) - len(TENANT_SEPARATOR)
    if len(workflow_id) > room:
        # The same shape as FastAPI's own 422s.
        error = {
            "type": "string_too_long",
            "loc": loc,
            "msg": f"Workflow ID too long: at most {room} characters for this key "
            f"(its tenant prefix takes the rest of {names.WORKFLOW_ID_MAX_LEN})",
            "input": workflow_id,
            "ctx": {"max_length": room},
        }
        raise RequestValidationError([error])


def public_id(stored: str) -> str:
    """The caller's name for a stored workflow ID: the inverse of stored_id."""
    tenant = _caller.get().tenant
    return stored if tenant is None else stored.removeprefix(tenant + TENANT_SEPARATOR)


def tenant_prefix() -> str | None:
    """The stored-ID prefix of every workflow the caller may see; None for all of them."""
    tenant = _caller.get().tenant
    return None if tenant is None else tenant + TENANT_SEPARATOR


def _digest(key: str) -> bytes:
    # Equal-length digests: compare_digest's time then says nothing about the key's length.
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The configured keys, as digests, and who each one makes the caller.

    One per app, made from its settings by create_app and kept on `app.state.key_ring`.
    """

    def __init__(self, api_keys: tuple[ApiKey, ...]) -> None:
        self._entries = [
            (_digest(k.secret.get_secret_value()), Caller(k.role, k.tenant)) for k in api_keys
        ]

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def find(self, presented: str) -> Caller | None:
        digest = _digest(presented)
        found = None
        for known, caller in self._entries:  # every key, even after a match: constant time
            if hmac.compare_digest(known, digest):
                found = caller
        return found


def unauthorized(detail: str, *, token: bool = False) -> HTTPException:
    challenge = 'Bearer realm="workflows"' + (', error="invalid_token"' if token else "")
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def identify(
    connection: HTTPConnection, presented: str | None, *, query_allowed: bool = False
) -> Caller:
    """The caller a key or token makes, remembered for this request; 401 if missing or unknown
    (with keys configured), or for a token that is expired or forged (always)."""
    ring: KeyRing = connection.app.state.key_ring
    tokens: TokenIssuer = connection.app.state.tokens
    caller = ring.find(presented) if presented and ring.enabled else None
    if caller is None and presented and tokens.enabled and looks_like_token(presented):
        try:
            grant = tokens.verify(presented)
        except InvalidToken as exc:
            raise unauthorized(str(exc), token=True) from None
        caller = Caller("read", grant.tenant, grant)
    if caller is None and not ring.enabled:
        return OPEN
    if caller is None and not presented:
        where = "Authorization: Bearer <key> or X-API-Key: <key>"
        if query_allowed:
            where += f", or ?{QUERY_KEY}=<key> (a token: ?{QUERY_TOKEN}=<token>)"
        raise unauthorized(f"An API key is required: send it as {where}.")
    if caller is None:
        raise unauthorized("The API key is not valid.")
    _caller.set(caller)
    return caller


def require_write(caller: Caller) -> None:
    if caller.grant is not None:
        raise HTTPException(
            403, TOKEN_CANNOT.format(what="starting, cancelling, resuming or making tokens")
        )
    if not caller.can_write:
        raise HTTPException(
            403,
            "This key may only read: starting, sending, cancelling, resuming and making tokens "
            "need a write key.",
        )


def admit_token(connection: HTTPConnection, caller: Caller, scope: TokenScope) -> None:
    """For a token's caller: 404 for a workflow the token does not reach, in the words of an
    unknown ID; 403 for a route about no one workflow (a list), or a scope it lacks."""
    if caller.grant is None:
        return
    workflow_id = connection.path_params.get("workflow_id")
    if workflow_id is None:
        raise HTTPException(
            403, TOKEN_CANNOT.format(what="a list (or any route about no one workflow)")
        )
    if not caller.grant.reaches(workflow_id):
        raise unknown_workflow(workflow_id)
    if not caller.grant.allows(scope):
        raise HTTPException(403, f"This token lacks the {scope} scope.")


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key or token>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")
_query = APIKeyQuery(
    name=QUERY_KEY,
    auto_error=False,
    description="Live endpoints only, for EventSource and WebSocket, which cannot set headers.",
)
_query_token = APIKeyQuery(
    name=QUERY_TOKEN,
    auto_error=False,
    description="A token (POST /tokens), on the live endpoints only, as `?api_key=`.",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
HeaderKey = Annotated[str | None, Depends(_header)]
QueryKey = Annotated[str | None, Depends(_query)]
QueryToken = Annotated[str | None, Depends(_query_token)]


def _admit(request: Request, caller: Caller, *, sends: bool = False) -> None:
    """What the caller may do here: read with any key or a token that reaches the workflow;
    write with a write key, or send with a token's send scope where `sends`."""
    if request.method in READ_METHODS:
        admit_token(request, caller, "read")
    elif sends and caller.grant is not None:
        admit_token(request, caller, "send")
    else:
        require_write(caller)


def _identify_by_header(request: Request, bearer: Bearer, header_key: HeaderKey) -> Caller:
    try:
        return identify(request, bearer.credentials if bearer else header_key)
    except HTTPException as exc:
        for name in (QUERY_KEY, QUERY_TOKEN):
            if name in request.query_params:
                exc.detail = f"{exc.detail} ?{name}= is taken by the live endpoints only."
        raise


async def authorize(request: Request, bearer: Bearer, header_key: HeaderKey) -> Caller:
    """Router dependency: who calls (401 if unknown); writes need a write key (403); a token
    reads only the workflows it reaches (404 for others, 403 for lists)."""
    caller = _identify_by_header(request, bearer, header_key)
    _admit(request, caller)
    return caller


async def authorize_send(request: Request, bearer: Bearer, header_key: HeaderKey) -> Caller:
    """authorize, for the routes that send a message: a token with the send scope may POST."""
    caller = _identify_by_header(request, bearer, header_key)
    _admit(request, caller, sends=True)
    return caller


async def authorize_live(
    request: Request,
    bearer: Bearer,
    header_key: HeaderKey,
    query_key: QueryKey,
    query_token: QueryToken,
) -> Caller:
    """authorize, also taking the key from `?api_key=` or a token from `?token=`, for the SSE
    endpoints."""
    presented = (bearer.credentials if bearer else None) or header_key or query_key or query_token
    caller = identify(request, presented, query_allowed=True)
    _admit(request, caller)
    return caller


def socket_key(connection: HTTPConnection) -> str | None:
    """The key or token a WebSocket client sent: header, or `?api_key=` / `?token=` (browsers
    can do only that)."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    query = connection.query_params
    return connection.headers.get("x-api-key") or query.get(QUERY_KEY) or query.get(QUERY_TOKEN)
