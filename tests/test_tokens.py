"""Tokens (POST /tokens): scopes, prefixes, tenants, expiry, forgery and rotation, over REST,
server-sent events and the WebSocket, on live server processes.

The module's server runs with API keys (write, read, and a write key for each of two tenants),
a token secret and a previous secret, and its access log on. The shared server (conftest.py)
is open (no keys) with the current secret only: the server after a rotation finished. One more
server has no secret at all: tokens off.

    .venv/bin/pytest tests/test_tokens.py -q
"""

import base64
import json
import secrets
import time
import warnings
from datetime import datetime
from typing import Any

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from pydantic import SecretStr, ValidationError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support import TOKEN_SECRET, OwnServer, ServerProcess, unique_id, wait_until
from workflow_comm import names
from workflow_comm.settings import TOKEN_SECRET_MIN_BYTES, Settings
from workflow_comm.tokens import TokenGrant, TokenIssuer

pytestmark = pytest.mark.needs_own_server

WRITE_KEY = secrets.token_urlsafe(24)
READ_KEY = secrets.token_urlsafe(24)
ACME_KEY = secrets.token_urlsafe(24)
BETA_KEY = secrets.token_urlsafe(24)
API_KEYS = f"{WRITE_KEY}:write,{READ_KEY}:read,{ACME_KEY}:write:acme,{BETA_KEY}:write:beta"
PREVIOUS_SECRET = secrets.token_hex(32)
TIMEOUT = 30.0
# Messaging workflows a test approves at its end wait this long: far past any wait of its own.
APPROVAL_TIMEOUT = 600


@pytest.fixture(scope="module")
def server(own_server: OwnServer) -> ServerProcess:
    """Keys, the current and the previous token secret, and the access log on (conftest's
    `http` is a client of it)."""
    env = {
        "COMM_API_KEYS": API_KEYS,
        "COMM_TOKEN_SECRET": TOKEN_SECRET,
        "COMM_TOKEN_PREVIOUS_SECRET": PREVIOUS_SECRET,
        "COMM_LOG_LEVEL": "INFO",  # access log on: it must not show tokens
    }
    return own_server(env=env)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def mint(http: httpx.Client, key: str | None = WRITE_KEY, **body: Any) -> str:
    response = http.post("/tokens", json=body, headers=bearer(key) if key else {})
    assert response.status_code == 200, f"mint {body}: {response.status_code} {response.text}"
    token: str = response.json()["token"]
    return token


def start(http: httpx.Client, kind: str, workflow_id: str, key: str = WRITE_KEY) -> None:
    params: dict[str, Any] = {"step_seconds": 0}
    if kind == "messaging":
        params["approval_timeout"] = APPROVAL_TIMEOUT
    response = http.post(
        f"/start-workflow-{kind}/{workflow_id}/1", params=params, headers=bearer(key)
    )
    assert response.status_code == 200, f"start {kind}: {response.status_code} {response.text}"


def status_of(http: httpx.Client, workflow_id: str, key: str = WRITE_KEY) -> str:
    status: str = http.get(f"/workflows/{workflow_id}", headers=bearer(key)).json()["status"]
    return status


def finished(http: httpx.Client, kind: str, key: str = WRITE_KEY, prefix: str = "tok") -> str:
    """A new workflow of `kind`, run to its end."""
    workflow_id = unique_id(prefix)
    start(http, kind, workflow_id, key)
    wait_until(
        lambda: status_of(http, workflow_id, key) == "SUCCESS",
        timeout=TIMEOUT,
        what=f"{workflow_id} finished",
    )
    return workflow_id


def events_of(http: httpx.Client, workflow_id: str, key: str = WRITE_KEY) -> dict[str, Any]:
    events: dict[str, Any] = http.get(
        f"/workflow-events/{workflow_id}/all", headers=bearer(key)
    ).json()["events"]
    return events


def waiting(http: httpx.Client, key: str = WRITE_KEY) -> str:
    """A new messaging workflow, waiting for its approval."""
    workflow_id = unique_id("tok-wait")
    start(http, "messaging", workflow_id, key)
    wait_until(
        lambda: events_of(http, workflow_id, key).get(names.EVENT_STATUS) == names.STATUS_WAITING,
        timeout=TIMEOUT,
        what=f"{workflow_id} waiting for approval",
    )
    return workflow_id


def assert_untouched(http: httpx.Client, workflow_id: str, after: str) -> None:
    """The waiting workflow is still waiting with an empty mailbox: the first message it
    receives is the one its owner sends now (which also lets it finish)."""
    assert status_of(http, workflow_id) == "PENDING", f"{workflow_id} is not waiting after {after}"
    approval = {"approved": True, "sent_by": "the owner, after the refusal"}
    sent = http.post(f"/send-message/{workflow_id}", json=approval, headers=bearer(WRITE_KEY))
    assert sent.status_code == 200, sent.text
    received = wait_until(
        lambda: events_of(http, workflow_id).get(names.EVENT_MESSAGE),
        timeout=TIMEOUT,
        what="the owner's message received",
    )
    assert received == approval, f"the workflow received {received} first, after {after}"


def ws_url(server: ServerProcess, workflow_id: str, token: str) -> str:
    return f"{server.base_url.replace('http', 'ws', 1)}/ws/workflows/{workflow_id}?token={token}"


def socket_outcome(url: str) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame a WebSocket gets until the server closes it, and the close code."""
    frames = []
    with connect(url, open_timeout=TIMEOUT) as ws:
        try:
            while True:
                frames.append(json.loads(ws.recv(timeout=TIMEOUT)))
        except ConnectionClosed:
            return frames, ws.close_code


def reply_to_send(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The `ack` or `error` frame a WebSocket `send` gets."""
    with connect(url, open_timeout=TIMEOUT) as ws:
        ws.send(json.dumps({"type": "send", "id": "s1", "payload": payload}))
        while True:
            frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
            if frame["type"] in ("ack", "error"):
                return frame


@pytest.fixture(scope="module")
def streamed(server: ServerProcess) -> str:
    """A finished streaming workflow the read tests share (reading changes nothing)."""
    with server.client() as http:
        return finished(http, "streaming", prefix="tok-read-stream")


@pytest.fixture(scope="module")
def evented(server: ServerProcess) -> str:
    """A finished events workflow the read tests share."""
    with server.client() as http:
        return finished(http, "events", prefix="tok-read-events")


# --- Minting -------------------------------------------------------------------------------


def test_mint_answers_a_token_and_its_expiry(http: httpx.Client, streamed: str) -> None:
    """A write key gets a JWT and `expires_at` ttl_seconds from now (rounded up to a second)."""
    before = time.time()
    response = http.post(
        "/tokens", json={"workflow_id": streamed, "ttl_seconds": 600}, headers=bearer(WRITE_KEY)
    )
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    body = response.json()
    assert set(body) == {"token", "expires_at"}, body
    assert body["token"].count(".") == 2, body
    lifetime = datetime.fromisoformat(body["expires_at"]).timestamp() - before
    assert 600 <= lifetime <= 600 + 2 + TIMEOUT, f"expires {lifetime:.1f}s after the request"


def test_mint_needs_a_write_key(http: httpx.Client, streamed: str) -> None:
    """No key: 401; a read key, or a token (even a send one): 403. Tokens come from keys."""
    token = mint(http, workflow_id=streamed, scopes=["read", "send"])
    body = {"workflow_id": streamed}
    codes = {
        "none": http.post("/tokens", json=body).status_code,
        "read key": http.post("/tokens", json=body, headers=bearer(READ_KEY)).status_code,
        "token": http.post("/tokens", json=body, headers=bearer(token)).status_code,
    }
    assert codes == {"none": 401, "read key": 403, "token": 403}, f"status codes {codes}"


BAD_BODIES = {
    "both targets": {"workflow_id": "a", "workflow_id_prefix": "a"},
    "no target": {"scopes": ["read"]},
    "send without read": {"workflow_id": "a", "scopes": ["send"]},
    "a scope twice": {"workflow_id": "a", "scopes": ["read", "read"]},
    "no scope": {"workflow_id": "a", "scopes": []},
    "unknown scope": {"workflow_id": "a", "scopes": ["read", "cancel"]},
    "ttl 0": {"workflow_id": "a", "ttl_seconds": 0},
    "ttl past the bound": {"workflow_id": "a", "ttl_seconds": names.TOKEN_TTL_MAX + 1},
    "bad ID": {"workflow_id": "-no spaces-"},
    "unknown field": {"workflow_id": "a", "tenant": "beta"},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_mint_body_is_422(http: httpx.Client, body: dict[str, Any]) -> None:
    """Every malformed request is a 422 with a list of field errors, and mints nothing."""
    response = http.post("/tokens", json=body, headers=bearer(WRITE_KEY))
    assert response.status_code == 422, f"{body}: {response.status_code} {response.text}"
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail


def test_tenant_id_too_long_for_a_token_is_422(http: httpx.Client) -> None:
    """A tenant's token ID, like its workflow IDs, leaves room for the tenant prefix."""
    room = names.WORKFLOW_ID_MAX_LEN - len("acme--")
    response = http.post(
        "/tokens", json={"workflow_id": "x" * (room + 1)}, headers=bearer(ACME_KEY)
    )
    assert response.status_code == 422, f"{response.status_code} {response.text}"
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "workflow_id"], detail
    assert f"at most {room} characters" in detail[0]["msg"], detail


def test_tokens_are_off_without_a_secret(own_server: OwnServer) -> None:
    """Without COMM_TOKEN_SECRET, POST /tokens is a 404 that says how to turn tokens on, and a
    token-shaped credential is ignored like any other on an open server."""
    tokenless = own_server(backend="sqlite")
    with tokenless.client() as http:
        minted = http.post("/tokens", json={"workflow_id": "x"})
        listed = http.get("/workflows", headers=bearer("not.a.token"))
    assert minted.status_code == 404, f"{minted.status_code} {minted.text}"
    assert "COMM_TOKEN_SECRET" in minted.json()["detail"], minted.text
    assert listed.status_code == 200, f"{listed.status_code} {listed.text}"


# --- What a token reaches ------------------------------------------------------------------


def read_paths(streamed: str, evented: str) -> list[str]:
    return [
        f"/workflows/{streamed}",
        f"/workflows/{evented}/event-keys",
        f"/workflows/{streamed}/stream-keys",
        f"/workflow-events/{evented}/all",
        f"/workflow-events/{evented}/{names.EVENT_RESULT}?timeout=0",
        f"/workflow-stream/{streamed}",
    ]


def live_paths(streamed: str, evented: str) -> list[str]:
    return [
        f"/workflows/{streamed}/live",
        f"/workflow-events/{evented}/live",
        f"/workflow-stream/{streamed}/live",
    ]


def test_token_reads_its_workflows(http: httpx.Client, streamed: str, evented: str) -> None:
    """A read token gets 200 from every read endpoint (as Bearer) and every SSE endpoint (as
    ?token=, each response to its `closed` end)."""
    token = mint(http, workflow_id_prefix="tok-read-")  # both fixtures' workflows
    paths = read_paths(streamed, evented)
    codes = {path: http.get(path, headers=bearer(token)).status_code for path in paths}
    for path in live_paths(streamed, evented):
        live = http.get(path, params={"token": token})
        codes[path] = live.status_code if "event: closed" in live.text else -live.status_code
    assert set(codes.values()) == {200}, f"status codes {codes}"
    page = http.get(f"/workflow-stream/{streamed}", headers=bearer(token)).json()
    assert page["closed"] and page["stream_values"], page


def test_token_in_the_query_only_on_live_endpoints(http: httpx.Client, streamed: str) -> None:
    """`?token=` opens an SSE stream, but a plain GET with it is a 401 that says why."""
    token = mint(http, workflow_id=streamed)
    plain = http.get(f"/workflows/{streamed}", params={"token": token})
    assert plain.status_code == 401, f"{plain.status_code} {plain.text}"
    assert "?token= is taken by the live endpoints only" in plain.json()["detail"], plain.text


def test_token_websocket_watches_its_workflow(server: ServerProcess, http: httpx.Client) -> None:
    """A WebSocket with ?token= gets the workflow's frames and a normal close."""
    workflow_id = finished(http, "events")
    frames, code = socket_outcome(ws_url(server, workflow_id, mint(http, workflow_id=workflow_id)))
    assert code == 1000, f"close code {code}, frames {frames}"
    assert frames[-1] == {"type": "closed", "status": "SUCCESS"}, frames[-3:]


OTHER_WORKFLOW_PROBES = [
    ("GET", "/workflows/{id}"),
    ("GET", "/workflow-events/{id}/all"),
    ("GET", "/workflow-events/{id}/status?timeout=0"),
    ("GET", "/workflow-stream/{id}"),
    ("POST", "/send-message/{id}"),
    ("GET", "/workflows/{id}/live?token={token}"),
    ("GET", "/workflow-events/{id}/live?token={token}"),
    ("GET", "/workflow-stream/{id}/live?token={token}"),
]


@pytest.mark.parametrize(("method", "path"), OTHER_WORKFLOW_PROBES)
def test_other_workflow_is_404_as_unknown(
    http: httpx.Client, streamed: str, method: str, path: str
) -> None:
    """A read-and-send token asking for another (waiting) workflow gets the 404 of an ID
    nobody used, and that workflow is untouched: still waiting, its mailbox empty."""
    token = mint(http, workflow_id=streamed, scopes=["read", "send"])
    other = waiting(http)
    nobodys = unique_id("tok-nobody")
    body = {"approved": True} if method == "POST" else None
    headers = {} if "token=" in path else bearer(token)

    def ask(workflow_id: str) -> httpx.Response:
        url = path.format(id=workflow_id, token=token)
        return http.request(method, url, json=body, headers=headers)

    theirs, unknown = ask(other), ask(nobodys)
    assert theirs.status_code == 404, f"{method} {path}: {theirs.status_code} {theirs.text}"
    assert theirs.json()["detail"].replace(other, "ID") == unknown.json()["detail"].replace(
        nobodys, "ID"
    ), f"other workflow: {theirs.text}; unknown: {unknown.text}"
    assert_untouched(http, other, f"a token's {method} {path}")


def test_other_workflow_websocket_is_closed_4404(server: ServerProcess, http: httpx.Client) -> None:
    """A token's WebSocket on another workflow closes with 4404, as for an unknown ID."""
    token = mint(http, workflow_id=unique_id("tok-mine"), scopes=["read", "send"])
    other = waiting(http)
    frames, code = socket_outcome(ws_url(server, other, token))
    assert code == 4404, f"close code {code}, frames {frames}"
    assert frames == [
        {"type": "error", "id": None, "detail": f"Workflow '{other}' does not exist."}
    ]
    assert_untouched(http, other, "a token's WebSocket")


def test_prefix_token_reaches_every_id_with_its_prefix(http: httpx.Client) -> None:
    """A prefix token reads each workflow whose ID starts with the prefix, including one
    started after the token was made, and no other."""
    prefix = unique_id("tok-user") + "-"
    first = finished(http, "events", prefix=prefix)
    token = mint(http, workflow_id_prefix=prefix)
    later = finished(http, "events", prefix=prefix)
    outside = finished(http, "events", prefix="tok-outside")
    codes = {
        name: http.get(f"/workflows/{wf}", headers=bearer(token)).status_code
        for name, wf in (("first", first), ("later", later), ("outside", outside))
    }
    assert codes == {"first": 200, "later": 200, "outside": 404}, f"status codes {codes}"


def test_token_carries_the_minting_keys_tenant(http: httpx.Client) -> None:
    """acme and beta both start "x". acme's token for "x" reads acme's "x" (under the ID acme
    uses), never beta's; an operator's token names the stored ID "acme--x"."""
    workflow_id = unique_id("tok-x")
    start(http, "events", workflow_id, ACME_KEY)
    start(http, "streaming", workflow_id, BETA_KEY)
    acme_token = mint(http, ACME_KEY, workflow_id=workflow_id)
    seen = http.get(f"/workflows/{workflow_id}", headers=bearer(acme_token)).json()
    stored = http.get(f"/workflows/acme--{workflow_id}", headers=bearer(acme_token))
    operator_token = mint(http, WRITE_KEY, workflow_id=f"acme--{workflow_id}")
    as_operator = http.get(f"/workflows/acme--{workflow_id}", headers=bearer(operator_token))
    assert (seen["workflow_id"], seen["kind"]) == (workflow_id, "events"), seen
    assert stored.status_code == 404, f"acme's token on acme--x: {stored.status_code}"
    assert as_operator.status_code == 200, as_operator.text
    assert as_operator.json()["kind"] == "events", as_operator.text


# --- Scopes --------------------------------------------------------------------------------


def test_read_token_cannot_send(server: ServerProcess, http: httpx.Client) -> None:
    """A read token's POST /send-message is a 403 naming the send scope, its WebSocket `send`
    an error frame; the workflow receives neither."""
    workflow_id = waiting(http)
    token = mint(http, workflow_id=workflow_id)
    posted = http.post(
        f"/send-message/{workflow_id}", json={"approved": True}, headers=bearer(token)
    )
    reply = reply_to_send(ws_url(server, workflow_id, token), {"approved": True})
    assert posted.status_code == 403, f"{posted.status_code} {posted.text}"
    assert "send scope" in posted.json()["detail"], posted.text
    assert reply["type"] == "error" and "send scope" in reply["detail"], reply
    assert_untouched(http, workflow_id, "a read token's sends")


def test_send_token_sends_over_http(http: httpx.Client) -> None:
    """A read-and-send token's message reaches the workflow."""
    workflow_id = waiting(http)
    token = mint(http, workflow_id=workflow_id, scopes=["read", "send"])
    approval = {"approved": True, "sent_by": "a send token"}
    posted = http.post(f"/send-message/{workflow_id}", json=approval, headers=bearer(token))
    assert posted.status_code == 200, f"{posted.status_code} {posted.text}"
    received = wait_until(
        lambda: events_of(http, workflow_id).get(names.EVENT_MESSAGE), timeout=TIMEOUT
    )
    assert received == approval, received


def test_send_token_sends_over_the_websocket(server: ServerProcess, http: httpx.Client) -> None:
    """A read-and-send token's WebSocket `send` is acknowledged and received."""
    workflow_id = waiting(http)
    token = mint(http, workflow_id=workflow_id, scopes=["read", "send"])
    approval = {"approved": True, "sent_by": "a send token's socket"}
    reply = reply_to_send(ws_url(server, workflow_id, token), approval)
    assert reply["type"] == "ack", reply
    received = wait_until(
        lambda: events_of(http, workflow_id).get(names.EVENT_MESSAGE), timeout=TIMEOUT
    )
    assert received == approval, received


KEY_ONLY = [
    ("POST", "/workflows/{id}/cancel"),
    ("POST", "/workflows/{id}/resume"),
    ("POST", "/start-workflow-events/{id}/1?step_seconds=0"),
    ("GET", "/workflows"),
    ("GET", "/workflows/live"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), KEY_ONLY)
def test_token_cannot_do_what_needs_a_key(http: httpx.Client, method: str, path: str) -> None:
    """Cancel, resume and start (even of the token's own workflow), the lists and metrics
    need a key: a read-and-send token gets 403, and its workflow goes on waiting."""
    workflow_id = waiting(http)
    token = mint(http, workflow_id=workflow_id, scopes=["read", "send"])
    live = path.endswith("/live")
    response = http.request(
        method,
        path.format(id=workflow_id),
        headers={} if live else bearer(token),
        params={"token": token} if live else None,
    )
    assert response.status_code == 403, f"{method} {path}: {response.status_code} {response.text}"
    assert "API key" in response.json()["detail"], response.text
    assert_untouched(http, workflow_id, f"a token's {method} {path}")


# --- Expiry, forgery, rotation -------------------------------------------------------------


SHORT_TTL = 4  # seconds


def test_expired_token_is_401_everywhere(server: ServerProcess, http: httpx.Client) -> None:
    """A token works until `expires_at`, then REST and SSE answer 401 (`invalid_token`) and the
    WebSocket closes with 4401, each saying it expired."""
    workflow_id = finished(http, "events")
    response = http.post(
        "/tokens",
        # Long enough for the request below to come before the expiry on a loaded machine.
        json={"workflow_id": workflow_id, "ttl_seconds": SHORT_TTL},
        headers=bearer(WRITE_KEY),
    )
    token = response.json()["token"]
    expires_at = datetime.fromisoformat(response.json()["expires_at"]).timestamp()
    fresh = http.get(f"/workflows/{workflow_id}", headers=bearer(token))

    def refused() -> httpx.Response | None:
        answer = http.get(f"/workflows/{workflow_id}", headers=bearer(token))
        return answer if answer.status_code == 401 else None

    rest = wait_until(refused, timeout=SHORT_TTL + 10, interval=0.1, what="a 401")
    refused_at = time.time()
    sse = http.get(f"/workflows/{workflow_id}/live", params={"token": token})
    frames, code = socket_outcome(ws_url(server, workflow_id, token))

    assert fresh.status_code == 200, f"before expiry: {fresh.status_code} {fresh.text}"
    assert refused_at >= expires_at - 0.5, f"refused {expires_at - refused_at:.2f}s early"
    assert 'error="invalid_token"' in rest.headers["www-authenticate"], rest.headers
    assert sse.status_code == 401, f"SSE after expiry: {sse.status_code}"
    for detail in (rest.json()["detail"], sse.json()["detail"], frames[0]["detail"]):
        assert "expired" in detail, detail
    assert code == 4401, f"close code {code}, frames {frames}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(kind: str, token: str, other_workflow: str) -> str:
    """A token the server must refuse, made from a real one of its."""
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    if kind == "tampered signature":
        flipped = "A" if signature[10] != "A" else "B"
        return f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"
    if kind == "tampered claims":  # the real signature, over another workflow's claims
        changed = b64(json.dumps({**claims, "workflow_id": other_workflow}).encode())
        return f"{header}.{changed}.{signature}"
    if kind == "other secret":
        return jwt.encode(claims, secrets.token_bytes(32), algorithm="HS256")
    if kind == "alg none":
        unsigned = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{unsigned}.{payload}."
    if kind == "HS512 with the secret":  # only HS256 is accepted
        with warnings.catch_warnings():  # PyJWT finds the secret short for HS512: no matter
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            return jwt.encode(claims, TOKEN_SECRET, algorithm="HS512")
    if kind == "no audience":  # a JWT another system signed with the same secret
        return jwt.encode({k: v for k, v in claims.items() if k != "aud"}, TOKEN_SECRET)
    raise AssertionError(kind)


FORGERIES = [
    "tampered signature",
    "tampered claims",
    "other secret",
    "alg none",
    "HS512 with the secret",
    "no audience",
]


@pytest.mark.parametrize("transport", ["rest", "sse", "websocket"])
@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_token_is_401(
    server: ServerProcess, http: httpx.Client, streamed: str, kind: str, transport: str
) -> None:
    """Each forgery of a real token is refused: 401 "not valid" (WebSocket: 4401)."""
    genuine = mint(http, workflow_id=unique_id("tok-genuine"))
    forged = forge(kind, genuine, other_workflow=streamed)
    if transport == "websocket":
        frames, code = socket_outcome(ws_url(server, streamed, forged))
        assert code == 4401, f"close code {code}, frames {frames}"
        assert frames[0]["detail"] == "The token is not valid.", frames
        return
    if transport == "rest":
        response = http.get(f"/workflows/{streamed}", headers=bearer(forged))
    else:
        response = http.get(f"/workflow-stream/{streamed}/live", params={"token": forged})
    assert response.status_code == 401, f"{response.status_code} {response.text}"
    assert response.json() == {"detail": "The token is not valid."}, response.text


def previous_secret_token(workflow_id: str) -> str:
    """A token as the server signed it before the rotation, with the secret now previous."""
    issuer = TokenIssuer(Settings(token_secret=SecretStr(PREVIOUS_SECRET)))
    grant = TokenGrant(tenant=None, scopes=frozenset({"read"}), workflow_id=workflow_id)
    token, _ = issuer.mint(grant, ttl_seconds=600)
    return token


def test_previous_secret_is_accepted_during_rotation(
    server: ServerProcess, http: httpx.Client, streamed: str
) -> None:
    """With the old secret as COMM_TOKEN_PREVIOUS_SECRET, its tokens still work everywhere."""
    token = previous_secret_token(streamed)
    rest = http.get(f"/workflows/{streamed}", headers=bearer(token))
    sse = http.get(f"/workflow-stream/{streamed}/live", params={"token": token})
    frames, code = socket_outcome(ws_url(server, streamed, token))
    assert (rest.status_code, sse.status_code, code) == (200, 200, 1000), (
        f"REST {rest.status_code}, SSE {sse.status_code}, WebSocket {code}: {frames[:1]}"
    )


def test_previous_secret_is_refused_once_dropped(
    postgres_server: ServerProcess, http: httpx.Client, streamed: str
) -> None:
    """A server with the same current secret but no previous one (the rotation finished)
    refuses the old secret's tokens and takes the current secret's."""
    old = previous_secret_token(streamed)
    current = mint(http, workflow_id=streamed)  # by the module's server; one database
    with postgres_server.client() as rotated:
        refused = rotated.get(f"/workflows/{streamed}", headers=bearer(old))
        taken = rotated.get(f"/workflows/{streamed}", headers=bearer(current))
    assert refused.status_code == 401, f"old secret: {refused.status_code} {refused.text}"
    assert taken.status_code == 200, f"current secret: {taken.status_code} {taken.text}"


# --- An open server ------------------------------------------------------------------------


def test_open_server_mints_without_a_key_and_tokens_narrow(postgres_server: ServerProcess) -> None:
    """With no API keys, anyone may mint (the server is open anyway), and a token still only
    reaches its workflow: a page behaves as it will behind keys. A forged one is a 401."""
    with postgres_server.client() as http:
        mine = unique_id("tok-open")
        start_answer = http.post(f"/start-workflow-events/{mine}/1?step_seconds=0")
        token = mint(http, key=None, workflow_id=mine)
        codes = {
            "own": http.get(f"/workflows/{mine}", headers=bearer(token)).status_code,
            "other": http.get(
                f"/workflows/{unique_id('tok-x')}", headers=bearer(token)
            ).status_code,
            "list": http.get("/workflows", headers=bearer(token)).status_code,
            "no credential": http.get(f"/workflows/{mine}").status_code,
            "forged": http.get(f"/workflows/{mine}", headers=bearer(token + "x")).status_code,
        }
    assert start_answer.status_code == 200, start_answer.text
    expected = {"own": 200, "other": 404, "list": 403, "no credential": 200, "forged": 401}
    assert codes == expected, f"status codes {codes}"


# --- Logs ----------------------------------------------------------------------------------


def test_tokens_never_appear_in_the_log(
    server: ServerProcess, http: httpx.Client, streamed: str
) -> None:
    """After tokens went as Bearer, as ?token= on SSE, a WebSocket and a plain GET, the
    server's log (access log on) holds none of them; the query shows as [redacted]."""
    tokens = [mint(http, workflow_id=streamed) for _ in range(3)]
    marker = unique_id("tok-log")
    http.get(f"/workflows/{streamed}", headers=bearer(tokens[0]))
    http.get(f"/workflow-stream/{streamed}/live", params={"token": tokens[1], "m": marker})
    http.get(f"/workflows/{streamed}", params={"token": tokens[1], "m": marker})
    socket_outcome(ws_url(server, streamed, tokens[2]) + f"&m={marker}")

    def log_with_redactions() -> str | None:
        text = server.log_path.read_text(errors="replace")
        lines = [line for line in text.splitlines() if marker in line]
        done = len(lines) >= 3 and all("token=[redacted]" in line for line in lines)
        return text if done else None

    log = wait_until(
        log_with_redactions,
        timeout=TIMEOUT,
        what="the SSE, GET and WebSocket access lines, each with a redacted token",
    )
    leaked = [token for token in tokens if token in log or token.split(".")[2] in log]
    assert not leaked, f"{len(leaked)} token(s) found in the server log"


# --- Settings ------------------------------------------------------------------------------


def test_short_secret_fails_fast_without_showing_it() -> None:
    """A secret under 32 bytes stops the settings from loading; the error never shows it."""
    short = "s3cret-" + "x" * (TOKEN_SECRET_MIN_BYTES - 8)
    with pytest.raises(ValidationError) as caught:
        Settings(token_secret=SecretStr(short))
    assert "at least 32 bytes" in str(caught.value), caught.value
    assert short not in str(caught.value), "the secret is in the error"


def test_previous_secret_needs_a_current_one() -> None:
    """A previous secret alone is a mistake, refused at startup."""
    with pytest.raises(ValidationError, match="COMM_TOKEN_SECRET is not"):
        Settings(token_previous_secret=SecretStr(PREVIOUS_SECRET))
