"""Access control: optional API keys with a role, and optional tenants.

Keys. COMM_API_KEYS lists `key:role[:tenant]` items, comma-separated. With none configured
every endpoint is open, as by default. With keys, every workflow endpoint needs one:
- reading (GET, the SSE endpoints) takes a `read` or a `write` key; starting, sending,
  cancelling and resuming take a `write` key, and a `read` key gets 403;
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
from workflow_comm.settings import ApiKey

TENANT_SEPARATOR = "--"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
QUERY_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: may they write, and whose workflows they see (None: every workflow)."""

    role: Literal["read", "write"]
    tenant: str | None = None

    @property
    def can_write(self) -> bool:
        return self.role == "write"


OPEN = Caller("write")  # no keys configured: anyone may do anything
_caller: ContextVar[Caller] = ContextVar("caller", default=OPEN)


def current_caller() -> Caller:
    return _caller.get()


def stored_id(workflow_id: str) -> str:
    """The ID DBOS stores for the caller's `workflow_id`: with their tenant's prefix, if any."""
    tenant = _caller.get().tenant
    if tenant is None:
        return workflow_id
    stored = f"{tenant}{TENANT_SEPARATOR}{workflow_id}"
    if len(stored) > names.WORKFLOW_ID_MAX_LEN:
        room = names.WORKFLOW_ID_MAX_LEN - len(tenant) - len(TENANT_SEPARATOR)
        # The same shape as FastAPI's own 422s: every workflow ID is a path parameter.
        error = {
            "type": "string_too_long",
            "loc": ("path", "workflow_id"),
            "msg": f"Workflow ID too long: at most {room} characters for this key "
            f"(its tenant prefix takes the rest of {names.WORKFLOW_ID_MAX_LEN})",
            "input": workflow_id,
            "ctx": {"max_length": room},
        }
        raise RequestValidationError([error])
    return stored


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


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="workflows"'})


def identify(
    connection: HTTPConnection, presented: str | None, *, query_allowed: bool = False
) -> Caller:
    """The caller a key makes, remembered for this request; 401 if missing or unknown."""
    ring: KeyRing = connection.app.state.key_ring
    if not ring.enabled:
        return OPEN
    if not presented:
        where = "Authorization: Bearer <key> or X-API-Key: <key>"
        if query_allowed:
            where += f", or ?{QUERY_KEY}=<key>"
        raise unauthorized(f"An API key is required: send it as {where}.")
    caller = ring.find(presented)
    if caller is None:
        raise unauthorized("The API key is not valid.")
    _caller.set(caller)
    return caller


def require_write(caller: Caller) -> None:
    if not caller.can_write:
        raise HTTPException(
            403,
            "This key may only read: starting, sending, cancelling and resuming need a write key.",
        )


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")
_query = APIKeyQuery(
    name=QUERY_KEY,
    auto_error=False,
    description="Live endpoints only, for EventSource and WebSocket, which cannot set headers.",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
HeaderKey = Annotated[str | None, Depends(_header)]
QueryKey = Annotated[str | None, Depends(_query)]


async def authorize(request: Request, bearer: Bearer, header_key: HeaderKey) -> Caller:
    """Router dependency: who calls (401 if unknown); writes need a write key (403)."""
    try:
        caller = identify(request, bearer.credentials if bearer else header_key)
    except HTTPException as exc:
        if QUERY_KEY in request.query_params:
            exc.detail = f"{exc.detail} ?{QUERY_KEY}= is taken by the live endpoints only."
        raise
    if request.method not in READ_METHODS:
        require_write(caller)
    return caller


async def authorize_live(
    request: Request, bearer: Bearer, header_key: HeaderKey, query_key: QueryKey
) -> Caller:
    """authorize, also taking the key from `?api_key=`, for the SSE endpoints."""
    presented = (bearer.credentials if bearer else None) or header_key or query_key
    caller = identify(request, presented, query_allowed=True)
    if request.method not in READ_METHODS:
        require_write(caller)
    return caller


def socket_key(connection: HTTPConnection) -> str | None:
    """The key a WebSocket client sent: header, or `?api_key=` (browsers can do only that)."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return connection.headers.get("x-api-key") or connection.query_params.get(QUERY_KEY)
