"""Access control, tenants, CORS, resource bounds and error bodies, on live server processes.

One server runs with API keys (write, read, and one write key for each of two tenants), a
CORS origin, access logs on and a waiting-request cap of 2; the default server (no keys, no
CORS) checks that nothing changes when these settings are unset.

    .venv/bin/pytest tests/test_security.py -q
"""

import json
import secrets
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support import OwnServer, ServerProcess, unique_id, wait_until
from workflow_comm import names

pytestmark = pytest.mark.needs_own_server

WRITE_KEY = secrets.token_urlsafe(24)
READ_KEY = secrets.token_urlsafe(24)
ACME_KEY = secrets.token_urlsafe(24)
BETA_KEY = secrets.token_urlsafe(24)
ALL_KEYS = (WRITE_KEY, READ_KEY, ACME_KEY, BETA_KEY)
API_KEYS = f"{WRITE_KEY}:write, {READ_KEY}:read, {ACME_KEY}:write:acme, {BETA_KEY}:write:beta"
ORIGIN = "https://app.example.com"
MAX_WAITS = 2
TIMEOUT = 30.0
# Messaging workflows a test approves at its end wait this long: far past any wait of the
# test's own, so none times out first on a loaded machine.
APPROVAL_TIMEOUT = 600


@pytest.fixture(scope="module")
def server(own_server: OwnServer) -> ServerProcess:
    """The secured server of this module's own (conftest's `http` is a client of it)."""
    env = {
        "COMM_API_KEYS": API_KEYS,
        "COMM_CORS_ORIGINS": ORIGIN,
        "COMM_LOG_LEVEL": "INFO",  # access log on: it must not show keys
        "COMM_MAX_WAITS_PER_CLIENT": str(MAX_WAITS),
    }
    return own_server(env=env)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def start(http: httpx.Client, key: str, kind: str, workflow_id: str, **params: Any) -> Any:
    params.setdefault("step_seconds", 0)
    response = http.post(
        f"/start-workflow-{kind}/{workflow_id}/1", params=params, headers=bearer(key)
    )
    assert response.status_code == 200, f"start {kind}: {response.status_code} {response.text}"
    return response.json()


def finished(http: httpx.Client, key: str, workflow_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"/workflows/{workflow_id}", headers=bearer(key)).json()
        return body if body.get("status") == "SUCCESS" else None

    return wait_until(done, timeout=TIMEOUT, what=f"{workflow_id} finished")


def events_of(http: httpx.Client, key: str, workflow_id: str) -> dict[str, Any]:
    response = http.get(f"/workflow-events/{workflow_id}/all", headers=bearer(key))
    events: dict[str, Any] = response.json()["events"]
    return events


def waiting(http: httpx.Client, key: str, workflow_id: str) -> None:
    """Wait until a messaging workflow waits for its approval."""
    wait_until(
        lambda: events_of(http, key, workflow_id).get(names.EVENT_STATUS) == names.STATUS_WAITING,
        timeout=TIMEOUT,
        what=f"{workflow_id} waiting for approval",
    )


def assert_untouched(http: httpx.Client, key: str, workflow_id: str, after: str) -> None:
    """The messaging workflow is still waiting and its mailbox was empty: the first message it
    receives is the one sent now."""
    status = http.get(f"/workflows/{workflow_id}", headers=bearer(key)).json()["status"]
    assert status == "PENDING", f"the workflow is {status} after {after}"
    approval = {"approved": True, "sent_by": "the owner, after the refusal"}
    sent = http.post(f"/send-message/{workflow_id}", json=approval, headers=bearer(key))
    assert sent.status_code == 200, sent.text
    received = wait_until(
        lambda: events_of(http, key, workflow_id).get(names.EVENT_MESSAGE),
        timeout=TIMEOUT,
        what="the owner's message received",
    )
    assert received == approval, f"the workflow received {received} first, after {after}"


def ws_url(base_url: str, workflow_id: str, key: str | None = None) -> str:
    url = f"{base_url.replace('http', 'ws', 1)}/ws/workflows/{workflow_id}"
    return f"{url}?api_key={key}" if key else url


def first_frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return frame


def close_code_after_frames(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    frames = []
    try:
        while True:
            frames.append(json.loads(ws.recv(timeout=TIMEOUT)))
    except ConnectionClosed:
        return frames, ws.close_code


# --- API keys ------------------------------------------------------------------------------


def test_no_key_is_401_with_www_authenticate(http: httpx.Client) -> None:
    """With keys configured, a request without one gets 401 and a WWW-Authenticate header."""
    response = http.get("/workflows")
    assert response.status_code == 401, f"{response.status_code} {response.text}"
    assert response.headers.get("www-authenticate", "").startswith("Bearer"), (
        f"headers {dict(response.headers)}"
    )
    assert "API key" in response.json()["detail"], response.text


def test_unknown_key_is_401(http: httpx.Client) -> None:
    """A key that is not configured (here: a configured one with a character changed) is 401."""
    near_miss = WRITE_KEY[:-1] + ("A" if WRITE_KEY[-1] != "A" else "B")
    response = http.get("/workflows", headers=bearer(near_miss))
    assert response.status_code == 401, f"{response.status_code} {response.text}"
    assert response.json() == {"detail": "The API key is not valid."}


def test_key_accepted_as_bearer_and_as_x_api_key(http: httpx.Client) -> None:
    """The same key works in `Authorization: Bearer` and in `X-API-Key`."""
    as_bearer = http.get("/workflows", headers=bearer(READ_KEY))
    as_header = http.get("/workflows", headers={"X-API-Key": READ_KEY})
    assert (as_bearer.status_code, as_header.status_code) == (200, 200), (
        f"bearer {as_bearer.status_code}, X-API-Key {as_header.status_code}"
    )


WRITE_REQUESTS = [
    ("POST", "/start-workflow-events/{id}/1", None),
    ("POST", "/start-workflow-messaging/{id}/1", None),
    ("POST", "/start-workflow-streaming/{id}/1", None),
    ("POST", "/send-message/{id}", {"approved": True}),
    ("POST", "/workflows/{id}/cancel", None),
    ("POST", "/workflows/{id}/resume", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITE_REQUESTS)
def test_read_key_gets_403_on_writes(
    http: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """A read key cannot start, send, cancel or resume: 403, and nothing happens."""
    workflow_id = unique_id("sec-ro")
    start(http, WRITE_KEY, "messaging", workflow_id, approval_timeout=APPROVAL_TIMEOUT)
    waiting(http, WRITE_KEY, workflow_id)
    other_id = unique_id("sec-ro-new")
    target = workflow_id if "start" not in path else other_id
    response = http.request(
        method, path.format(id=target), json=body, headers={"X-API-Key": READ_KEY}
    )
    assert response.status_code == 403, f"{method} {path}: {response.status_code} {response.text}"
    assert "only read" in response.json()["detail"], response.text
    assert http.get(f"/workflows/{other_id}", headers=bearer(READ_KEY)).status_code == 404
    assert_untouched(http, WRITE_KEY, workflow_id, f"a refused {method} {path}")


def test_read_key_reads_everything(http: httpx.Client) -> None:
    """A read key gets 200 from the status, events, stream, list and live (SSE) endpoints."""
    workflow_id = unique_id("sec-read")
    start(http, WRITE_KEY, "streaming", workflow_id)
    finished(http, WRITE_KEY, workflow_id)
    headers = {"X-API-Key": READ_KEY}
    paths = [
        f"/workflows/{workflow_id}",
        f"/workflow-events/{workflow_id}/all",
        f"/workflow-stream/{workflow_id}",
        "/workflows",
        f"/workflow-stream/{workflow_id}/live",  # finished: the SSE response ends by itself
        f"/workflows/{workflow_id}/live",
    ]
    codes = {path: http.get(path, headers=headers).status_code for path in paths}
    assert set(codes.values()) == {200}, f"status codes {codes}"


def test_query_key_is_taken_by_live_endpoints_only(http: httpx.Client) -> None:
    """`?api_key=` opens an SSE stream (EventSource cannot set headers) but not a plain GET."""
    workflow_id = unique_id("sec-query")
    start(http, WRITE_KEY, "events", workflow_id)
    finished(http, WRITE_KEY, workflow_id)
    live = http.get(f"/workflows/{workflow_id}/live", params={"api_key": READ_KEY})
    plain = http.get(f"/workflows/{workflow_id}", params={"api_key": READ_KEY})
    assert live.status_code == 200 and "event: closed" in live.text, (
        f"live: {live.status_code} {live.text[:200]}"
    )
    assert plain.status_code == 401, f"plain GET with ?api_key=: {plain.status_code}"
    assert "live endpoints only" in plain.json()["detail"], plain.text


def test_websocket_without_key_is_closed_4401(server: ServerProcess, http: httpx.Client) -> None:
    """A WebSocket without a key gets an error frame and close code 4401."""
    workflow_id = unique_id("sec-ws-nokey")
    start(http, WRITE_KEY, "events", workflow_id)
    with connect(ws_url(server.base_url, workflow_id), open_timeout=TIMEOUT) as ws:
        frames, code = close_code_after_frames(ws)
    assert code == 4401, f"close code {code}, frames {frames}"
    assert frames and frames[0]["type"] == "error" and "API key" in frames[0]["detail"], frames


def test_websocket_read_key_watches_but_cannot_send(
    server: ServerProcess, http: httpx.Client
) -> None:
    """A read key's WebSocket gets the workflow's frames, but a `send` gets an error frame
    and the workflow never receives the message."""
    workflow_id = unique_id("sec-ws-read")
    start(http, WRITE_KEY, "messaging", workflow_id, approval_timeout=APPROVAL_TIMEOUT)
    waiting(http, WRITE_KEY, workflow_id)
    url = ws_url(server.base_url, workflow_id, READ_KEY)
    with connect(url, open_timeout=TIMEOUT) as ws:
        first = first_frame(ws)
        ws.send(json.dumps({"type": "send", "id": "r1", "payload": {"approved": True}}))
        reply = first_frame(ws)
        while reply["type"] not in ("error", "ack"):
            reply = first_frame(ws)
    assert first["type"] in ("status", "event", "stream"), f"first frame {first}"
    assert reply["type"] == "error" and reply["id"] == "r1", f"reply to the send: {reply}"
    assert "only read" in reply["detail"], reply
    assert_untouched(http, WRITE_KEY, workflow_id, "a read key's WebSocket send")


def test_keys_never_appear_in_the_log(server: ServerProcess, http: httpx.Client) -> None:
    """After requests with every key in headers and in `?api_key=` (SSE and WebSocket), the
    server's log (access log on) holds none of the keys; the query shows as [redacted]."""
    workflow_id = unique_id("sec-log")
    start(http, WRITE_KEY, "events", workflow_id)
    finished(http, WRITE_KEY, workflow_id)
    for key in ALL_KEYS:
        http.get("/workflows", headers=bearer(key))
        http.get("/workflows", headers={"X-API-Key": key})
        http.get(f"/workflows/{workflow_id}", params={"api_key": key})
        http.get(f"/workflows/{workflow_id}/live", params={"api_key": key})
    with connect(ws_url(server.base_url, workflow_id, ACME_KEY), open_timeout=TIMEOUT) as ws:
        close_code_after_frames(ws)

    ws_line = f'"WebSocket /ws/workflows/{workflow_id}?api_key=[redacted]"'

    def log_with_redactions() -> str | None:
        text = server.log_path.read_text(errors="replace")
        done = text.count("[redacted]") >= 2 * len(ALL_KEYS) + 1 and ws_line in text
        return text if done else None

    # Every access line, the WebSocket's too, is in the log once this returns.
    log = wait_until(
        log_with_redactions,
        timeout=TIMEOUT,
        what="access lines with a redacted key, the WebSocket's among them",
    )
    leaked = [key for key in ALL_KEYS if key in log]
    assert not leaked, f"{len(leaked)} key(s) found in the server log"


# --- Tenants -------------------------------------------------------------------------------

TENANT_PROBES = [
    ("GET", "/workflows/{id}", None),
    ("GET", "/workflow-events/{id}/all", None),
    ("GET", "/workflow-events/{id}/status?timeout=0", None),
    ("GET", "/workflow-stream/{id}", None),
    ("POST", "/send-message/{id}", {"approved": True}),
    ("POST", "/workflows/{id}/cancel", None),
    ("POST", "/workflows/{id}/resume", None),
    ("GET", "/workflows/{id}/live", None),
    ("GET", "/workflow-events/{id}/live", None),
    ("GET", "/workflow-stream/{id}/live", None),
]


@pytest.mark.parametrize(("method", "path", "body"), TENANT_PROBES)
def test_other_tenants_workflow_is_404(
    http: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Tenant beta asking for tenant acme's workflow gets the same 404 as for an ID nobody
    used, and acme's workflow is untouched (still waiting, no message received)."""
    workflow_id = unique_id("sec-acme")
    start(http, ACME_KEY, "messaging", workflow_id, approval_timeout=APPROVAL_TIMEOUT)
    waiting(http, ACME_KEY, workflow_id)
    theirs = http.request(method, path.format(id=workflow_id), json=body, headers=bearer(BETA_KEY))
    nobodys_id = unique_id("sec-nobody")
    unknown = http.request(method, path.format(id=nobodys_id), json=body, headers=bearer(BETA_KEY))

    assert theirs.status_code == 404, f"{method} {path}: {theirs.status_code} {theirs.text}"
    assert theirs.json()["detail"].replace(workflow_id, "ID") == unknown.json()["detail"].replace(
        nobodys_id, "ID"
    ), f"other tenant's: {theirs.text}; unknown: {unknown.text}"
    assert_untouched(http, ACME_KEY, workflow_id, f"beta's {method} {path}")


def test_other_tenants_websocket_is_closed_as_unknown(
    server: ServerProcess, http: httpx.Client
) -> None:
    """Tenant beta's WebSocket on acme's workflow closes with 4404, as for an unknown ID."""
    workflow_id = unique_id("sec-acme-ws")
    start(http, ACME_KEY, "messaging", workflow_id, approval_timeout=60)
    with connect(ws_url(server.base_url, workflow_id, BETA_KEY), open_timeout=TIMEOUT) as ws:
        frames, code = close_code_after_frames(ws)
    assert code == 4404, f"close code {code}, frames {frames}"
    assert "does not exist" in frames[0]["detail"], frames


def test_tenants_can_use_the_same_id(http: httpx.Client) -> None:
    """acme and beta both start workflow "x" (of different kinds): both are created, so
    neither learns the other used the name, and each reads back its own workflow."""
    workflow_id = unique_id("sec-same")
    acme = start(http, ACME_KEY, "events", workflow_id)
    beta = start(http, BETA_KEY, "streaming", workflow_id)
    assert (acme["created"], beta["created"]) == (True, True), f"acme {acme}, beta {beta}"
    assert (acme["workflow_id"], beta["workflow_id"]) == (workflow_id, workflow_id)
    kinds = {
        name: finished(http, key, workflow_id)["kind"]
        for name, key in (("acme", ACME_KEY), ("beta", BETA_KEY))
    }
    assert kinds == {"acme": "events", "beta": "streaming"}, f"kinds {kinds}"


def test_tenant_list_shows_only_its_own_workflows(http: httpx.Client) -> None:
    """GET /workflows with a tenant's key lists that tenant's workflows only, by their IDs as
    the tenant named them."""
    acme_id, beta_id = unique_id("sec-list-a"), unique_id("sec-list-b")
    start(http, ACME_KEY, "events", acme_id)
    start(http, BETA_KEY, "events", beta_id)
    listed = http.get("/workflows", params={"limit": 500}, headers=bearer(ACME_KEY)).json()
    ids = [w["workflow_id"] for w in listed["data"]]
    assert acme_id in ids, f"acme's own workflow missing from {len(ids)} listed"
    assert beta_id not in ids, "beta's workflow listed for acme"
    assert not any("--" in i and i.startswith(("acme", "beta")) for i in ids), f"{ids[:5]}"


def test_operator_key_sees_tenant_workflows_under_stored_id(http: httpx.Client) -> None:
    """A key without a tenant sees a tenant's workflow "x" as "acme--x"."""
    workflow_id = unique_id("sec-op")
    start(http, ACME_KEY, "events", workflow_id)
    response = http.get(f"/workflows/acme--{workflow_id}", headers=bearer(READ_KEY))
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    assert response.json()["workflow_id"] == f"acme--{workflow_id}", response.text


def test_tenant_id_length_leaves_room_for_the_prefix(http: httpx.Client) -> None:
    """Tenant "acme" may use IDs of up to 128 - len("acme--") = 122 characters: 122 starts,
    123 is a 422 that says the limit."""
    room = names.WORKFLOW_ID_MAX_LEN - len("acme--")
    longest = unique_id("sec-len").ljust(room, "x")
    too_long = longest + "x"
    ok = http.post(f"/start-workflow-events/{longest}/1?step_seconds=0", headers=bearer(ACME_KEY))
    refused = http.post(
        f"/start-workflow-events/{too_long}/1?step_seconds=0", headers=bearer(ACME_KEY)
    )
    assert ok.status_code == 200, f"{len(longest)} chars: {ok.status_code} {ok.text}"
    assert refused.status_code == 422, f"{len(too_long)} chars: {refused.status_code}"
    assert f"at most {room}" in refused.json()["detail"][0]["msg"], refused.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/start-workflow-events/{id}/1?step_seconds=0"),
        ("GET", "/workflows/{id}"),
        ("GET", "/workflow-events/{id}/status?timeout=0"),
        ("GET", "/workflow-stream/{id}/live"),
    ],
)
def test_tenant_id_too_long_is_a_list_of_field_errors(
    http: httpx.Client, method: str, path: str
) -> None:
    """An ID valid alone but too long with the tenant prefix gets the documented 422: a
    list of field errors, like any out-of-bounds parameter, naming path.workflow_id."""
    room = names.WORKFLOW_ID_MAX_LEN - len("acme--")
    too_long = unique_id("sec-long").ljust(room + 1, "x")
    response = http.request(method, path.format(id=too_long), headers=bearer(ACME_KEY))
    assert response.status_code == 422, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    detail = response.json()["detail"]
    assert isinstance(detail, list) and len(detail) == 1, detail
    assert detail[0]["loc"] == ["path", "workflow_id"], detail
    assert detail[0]["type"] == "string_too_long", detail
    assert f"at most {room} characters" in detail[0]["msg"], detail


def test_tenant_websocket_with_an_id_too_long_is_closed_4422(server: ServerProcess) -> None:
    """The WebSocket's answer to the same ID: an error frame naming the field, close 4422."""
    room = names.WORKFLOW_ID_MAX_LEN - len("acme--")
    too_long = unique_id("sec-long-ws").ljust(room + 1, "x")
    with connect(ws_url(server.base_url, too_long, ACME_KEY), open_timeout=TIMEOUT) as ws:
        frames, code = close_code_after_frames(ws)
    assert code == 4422, f"close code {code}, frames {frames}"
    assert [frame["type"] for frame in frames] == ["error"], frames
    assert frames[0]["detail"].startswith("Invalid parameter: path.workflow_id: "), frames
    assert f"at most {room} characters" in frames[0]["detail"], frames


def test_metrics_need_a_key_without_tenant(http: httpx.Client) -> None:
    """/metrics: 401 without a key, 403 with a tenant's key (metrics span all tenants), 200
    with a read key without a tenant."""
    codes = {
        "none": http.get("/metrics").status_code,
        "tenant": http.get("/metrics", headers=bearer(ACME_KEY)).status_code,
        "read": http.get("/metrics", headers=bearer(READ_KEY)).status_code,
    }
    assert codes == {"none": 401, "tenant": 403, "read": 200}, f"status codes {codes}"


# --- Open by default -----------------------------------------------------------------------


def test_without_keys_everything_is_open(postgres_server: ServerProcess) -> None:
    """With COMM_API_KEYS unset (the default), starting and reading need no key."""
    workflow_id = unique_id("sec-open")
    with httpx.Client(base_url=postgres_server.base_url, timeout=TIMEOUT) as open_http:
        started = open_http.post(f"/start-workflow-events/{workflow_id}/1?step_seconds=0")
        read = open_http.get(f"/workflows/{workflow_id}")
    assert (started.status_code, read.status_code) == (200, 200), (
        f"start {started.status_code}, read {read.status_code}"
    )


# --- CORS ----------------------------------------------------------------------------------


def preflight(http: httpx.Client, origin: str) -> httpx.Response:
    return http.options(
        "/send-message/some-workflow",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_preflight_from_configured_origin_is_allowed(http: httpx.Client) -> None:
    """A preflight from COMM_CORS_ORIGINS is answered 200 with that origin, POST and the
    Authorization header allowed."""
    response = preflight(http, ORIGIN)
    allowed_headers = response.headers.get("access-control-allow-headers", "").lower()
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    assert response.headers.get("access-control-allow-origin") == ORIGIN, dict(response.headers)
    assert "POST" in response.headers.get("access-control-allow-methods", ""), response.headers
    assert "authorization" in allowed_headers, f"allowed headers: {allowed_headers}"


def test_cors_other_origin_is_not_allowed(http: httpx.Client) -> None:
    """A preflight or a request from an origin not configured gets no allow-origin header."""
    evil = "https://evil.example.net"
    pre = preflight(http, evil)
    simple = http.get("/health", headers={"Origin": evil})
    assert pre.status_code == 400, f"preflight from {evil}: {pre.status_code}"
    assert "access-control-allow-origin" not in pre.headers, dict(pre.headers)
    assert "access-control-allow-origin" not in simple.headers, dict(simple.headers)


def test_cors_headers_are_on_error_answers_too(http: httpx.Client) -> None:
    """A 401 to the configured origin carries the CORS header, so the page can read why."""
    response = http.get("/workflows", headers={"Origin": ORIGIN})
    assert response.status_code == 401, response.status_code
    assert response.headers.get("access-control-allow-origin") == ORIGIN, dict(response.headers)


def test_cors_is_off_by_default(postgres_server: ServerProcess) -> None:
    """With COMM_CORS_ORIGINS unset (the default) no response carries CORS headers."""
    with httpx.Client(base_url=postgres_server.base_url, timeout=TIMEOUT) as open_http:
        pre = preflight(open_http, ORIGIN)
        simple = open_http.get("/workflows", headers={"Origin": ORIGIN})
    cors = [h for r in (pre, simple) for h in r.headers if h.startswith("access-control-")]
    assert not cors, f"CORS headers on a default server: {cors}"


# --- Resource bounds -----------------------------------------------------------------------


def test_waiting_requests_per_client_are_capped(server: ServerProcess, http: httpx.Client) -> None:
    """With COMM_MAX_WAITS_PER_CLIENT=2, a third concurrent waiting GET of an event gets 429
    with Retry-After at once; the two waiting ones still get their value, and a new wait is
    admitted once they returned."""
    workflow_id = unique_id("sec-waits")
    start(http, WRITE_KEY, "messaging", workflow_id, approval_timeout=APPROVAL_TIMEOUT)
    path = f"/workflow-events/{workflow_id}/{names.EVENT_RESULT}"
    results: list[httpx.Response] = []
    # The waiters return once the result is set: the longest wait the server allows keeps
    # them waiting through everything before the approval, however slow the machine.
    wait_seconds = names.EVENT_TIMEOUT_MAX

    def wait_for_result() -> None:
        with httpx.Client(base_url=server.base_url, timeout=wait_seconds + TIMEOUT) as own:
            results.append(
                own.get(path, params={"timeout": wait_seconds}, headers=bearer(READ_KEY))
            )

    waiters = [threading.Thread(target=wait_for_result) for _ in range(MAX_WAITS)]
    for waiter in waiters:
        waiter.start()

    def waiting_requests() -> float:
        text = http.get("/metrics", headers=bearer(READ_KEY)).text
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return samples["comm_waiting_requests"]

    wait_until(
        lambda: waiting_requests() == MAX_WAITS, timeout=TIMEOUT, what="both requests waiting"
    )
    refused = http.get(path, params={"timeout": 5}, headers=bearer(READ_KEY))
    began = time.monotonic()
    sent = http.post(
        f"/send-message/{workflow_id}", json={"approved": True}, headers=bearer(WRITE_KEY)
    )
    for waiter in waiters:
        waiter.join(timeout=wait_seconds + TIMEOUT)
    admitted = http.get(path, params={"timeout": 5}, headers=bearer(READ_KEY))

    assert refused.status_code == 429, f"third waiting request: {refused.status_code}"
    assert refused.headers.get("retry-after") == "1", dict(refused.headers)
    assert f"limit {MAX_WAITS}" in refused.json()["detail"], refused.text
    assert sent.status_code == 200, sent.text
    assert [r.status_code for r in results] == [200] * MAX_WAITS, (
        f"waiters got {[r.status_code for r in results]} after {time.monotonic() - began:.1f}s"
    )
    assert admitted.status_code == 200, f"after the waits: {admitted.status_code}"


# --- Error bodies --------------------------------------------------------------------------

INTERNALS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "dbos.", "Error:")


def test_internal_error_answer_shows_no_internals(
    postgres_server: ServerProcess, postgres_url: str
) -> None:
    """A database error nobody handles (a trigger raising on one message) answers 500 with a
    fixed JSON body: no trace, no exception text. The operator finds both in the log."""
    marker = unique_id("poison").replace("-", "_")
    secret_text = f"internal-detail-{marker}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION dbos.{marker}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.message LIKE '%{marker}%' THEN RAISE EXCEPTION '{secret_text}'; END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER {marker} BEFORE INSERT ON dbos.notifications "
            f"FOR EACH ROW EXECUTE FUNCTION dbos.{marker}()"
        )
    try:
        workflow_id = unique_id("sec-500")
        with httpx.Client(base_url=postgres_server.base_url, timeout=TIMEOUT) as open_http:
            open_http.post(f"/start-workflow-messaging/{workflow_id}/1?step_seconds=0")
            response = open_http.post(f"/send-message/{workflow_id}", json={"note": marker})
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER {marker} ON dbos.notifications")
            conn.execute(f"DROP FUNCTION dbos.{marker}()")

    assert response.status_code == 500, f"{response.status_code} {response.text}"
    assert response.json() == {"detail": "Internal server error."}, response.text
    assert secret_text not in response.text, response.text
    log = postgres_server.log_path.read_text(errors="replace")
    assert secret_text in log and "Traceback" in log, "the error is not in the server log"


def test_unparseable_body_answer_shows_no_internals(http: httpx.Client) -> None:
    """A body the JSON parser gives up on (nested 20,000 deep: a RecursionError inside it)
    gets a 400 with a fixed message, nothing about the parser."""
    workflow_id = unique_id("sec-deep")
    start(http, WRITE_KEY, "messaging", workflow_id, approval_timeout=60)
    deep = "[" * 20_000 + "]" * 20_000
    response = http.post(
        f"/send-message/{workflow_id}",
        content=deep,
        headers={**bearer(WRITE_KEY), "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), f"{response.status_code} {response.text}"
    assert not [word for word in (*INTERNALS, "Recursion") if word in response.text], response.text
