"""Gateway mode: another DBOS application's workflows, served over this server's routes.

A separate process (tests/other_app.py) runs a DBOS application with another name and its own
workflow on the same Postgres. A server with COMM_SERVE_APPS naming it reads, waits for,
watches, messages, cancels and resumes that application's workflows; a server without it
answers 404 for them. Neither ever runs, recovers or takes over one of them.
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.other_app import EVENT_REPLY, EVENT_STAGE, FIRST_TOKENS, STREAM, TOPIC
from tests.support import ROOT, OwnServer, ServerProcess, process_env, unique_id, wait_until

pytestmark = pytest.mark.needs_own_server

OTHER_APP = unique_id("other-app")  # a name no other test's workflows carry
# DBOS refuses a version name another application registered in the same database.
OTHER_VERSION = "other-1"
SSE_TIMEOUT = httpx.Timeout(30.0, read=15.0)


class OtherApp:
    """tests/other_app.py as a child process: application OTHER_APP, one executor ID."""

    def __init__(
        self, database_url: str, executor: str, workflow_ids: list[str], log: Path
    ) -> None:
        self.executor = executor
        self.log_path = log
        command = [sys.executable, "-m", "tests.other_app", "--name", OTHER_APP]
        command += ["--executor", executor, "--version", OTHER_VERSION, *workflow_ids]
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=process_env(database_url),
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_until_waiting(self, http: httpx.Client, workflow_ids: list[str]) -> None:
        """Until each workflow waits for its reply, as the gateway shows it."""
        for workflow_id in workflow_ids:
            if self.process.poll() is not None:
                raise AssertionError(f"other app exited:\n{self.log_path.read_text()[-3000:]}")
            wait_until(
                lambda wf=workflow_id: _stage(http, wf) == "waiting",  # type: ignore[misc]
                what=f"{workflow_id} waiting for its reply",
            )

    def kill(self) -> None:
        """SIGKILL: the application's process is gone, its PENDING workflows abandoned."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


# The other application's workflows, one per test that changes one.
IDS = {name: unique_id(f"other-{name}") for name in ("read", "send", "ws", "cancel", "left")}


# The gateway's application version, and its dead peer's (test_never_run_recovered_or_taken_over):
# other servers on the database (another version) neither scan for that peer nor take it over,
# so the peer's workflow is taken over by the gateway's scans, which is what shows they ran.
GATEWAY_VERSION = unique_id("gateway-version")


@pytest.fixture(scope="module")
def gateway(own_server: OwnServer) -> ServerProcess:
    """Our server, serving OTHER_APP too; quick takeover scans (test_never_taken_over)."""
    return own_server(
        env={
            "COMM_SERVE_APPS": OTHER_APP,
            "COMM_TAKEOVER_INTERVAL_SEC": "0.2",
            "COMM_APPLICATION_VERSION": GATEWAY_VERSION,
        }
    )


@pytest.fixture(scope="module")
def other_app(postgres_url: str, gateway: ServerProcess) -> Iterator[OtherApp]:
    log = gateway.workdir / "other-app.log"
    app = OtherApp(postgres_url, unique_id("other-executor"), list(IDS.values()), log)
    try:
        with gateway.client() as http:
            app.wait_until_waiting(http, list(IDS.values()))
        yield app
    finally:
        app.kill()


@pytest.fixture
def http(gateway: ServerProcess, other_app: OtherApp) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def _stage(http: httpx.Client, workflow_id: str) -> Any:
    response = http.get(f"/workflow-events/{workflow_id}/all")
    return response.json()["events"].get(EVENT_STAGE) if response.status_code == 200 else None


def _status(http: httpx.Client, workflow_id: str) -> dict[str, Any]:
    response = http.get(f"/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_listed_with_its_application(http: httpx.Client) -> None:
    """GET /workflows lists the served application's workflows, each with its application;
    ?app= keeps one application's."""
    every = {wf["workflow_id"]: wf for wf in http.get("/workflows?limit=500").json()["data"]}
    assert every[IDS["read"]]["application_name"] == OTHER_APP, every.get(IDS["read"])
    only = http.get("/workflows", params={"app": OTHER_APP, "limit": 500}).json()["data"]
    assert {wf["application_name"] for wf in only} == {OTHER_APP}, only
    assert set(IDS.values()) <= {wf["workflow_id"] for wf in only}
    mine = http.get("/workflows", params={"app": "dbos-workflow-communication"}).json()["data"]
    assert IDS["read"] not in {wf["workflow_id"] for wf in mine}
    assert http.get("/workflows", params={"app": "not-served"}).json() == {"data": [], "count": 0}


def test_status(http: httpx.Client, other_app: OtherApp) -> None:
    """Its status: PENDING on the other application's executor, no demo kind."""
    status = _status(http, IDS["read"])
    assert (status["status"], status["name"], status["kind"]) == ("PENDING", "chat", None)
    assert (status["application_name"], status["executor_id"]) == (OTHER_APP, other_app.executor)


def test_events_waited_for_and_watched_live(http: httpx.Client) -> None:
    """One event (set: at once), all of them, and the live feed of every key."""
    wf = IDS["read"]
    one = http.get(f"/workflow-events/{wf}/{EVENT_STAGE}", params={"timeout": 10})
    assert one.json()["value"] == "waiting", one.text
    assert http.get(f"/workflow-events/{wf}/all").json()["events"] == {EVENT_STAGE: "waiting"}
    with connect_sse(http, "GET", f"/workflow-events/{wf}/live", timeout=SSE_TIMEOUT) as source:
        first = next(e for e in source.iter_sse() if e.data)
    assert json.loads(first.data)["key"] == EVENT_STAGE, first.data
    assert json.loads(first.data)["value"] == "waiting", first.data


def test_stream_paged_and_followed_live(http: httpx.Client) -> None:
    """Its stream, by key: a page, then the live feed resumed after Last-Event-ID."""
    wf = IDS["read"]
    page = http.get(f"/workflow-stream/{wf}", params={"key": STREAM, "limit": 2}).json()
    assert page["stream_values"] == FIRST_TOKENS[:2] and page["has_more"], page
    with connect_sse(
        http,
        "GET",
        f"/workflow-stream/{wf}/live",
        params={"key": STREAM},
        headers={"Last-Event-ID": "1"},
        timeout=SSE_TIMEOUT,
    ) as source:
        events = source.iter_sse()
        got = [next(e for e in events if e.data) for _ in FIRST_TOKENS[2:]]
    assert [(int(e.id), e.json()) for e in got] == list(enumerate(FIRST_TOKENS))[2:], got


def test_keys_listed(http: httpx.Client) -> None:
    """Its event keys and stream keys, for a client that knows neither beforehand."""
    wf = IDS["read"]
    events = http.get(f"/workflows/{wf}/event-keys").json()
    assert events == {"workflow_id": wf, "data": [EVENT_STAGE], "count": 1}, events
    streams = http.get(f"/workflows/{wf}/stream-keys").json()
    expected = [{"key": STREAM, "length": len(FIRST_TOKENS), "closed": False}]
    assert streams == {"workflow_id": wf, "data": expected, "count": 1}, streams


def test_send_reaches_its_recv(http: httpx.Client) -> None:
    """POST /send-message with its topic: the workflow receives it and goes on to finish."""
    wf = IDS["send"]
    sent = http.post(f"/send-message/{wf}", params={"topic": TOPIC}, json={"text": "hi"})
    assert sent.status_code == 200, sent.text
    reply = http.get(f"/workflow-events/{wf}/{EVENT_REPLY}", params={"timeout": 20})
    assert reply.json()["value"] == {"text": "hi"}, reply.text
    done = wait_until(lambda: (s := _status(http, wf))["status"] == "SUCCESS" and s, timeout=20)
    assert done["result"] == {"reply": {"text": "hi"}}, done
    page = http.get(f"/workflow-stream/{wf}", params={"key": STREAM}).json()
    assert page["stream_values"] == [*FIRST_TOKENS, "!"] and page["closed"], page


def test_websocket(gateway: ServerProcess, http: httpx.Client) -> None:
    """The WebSocket: its stream and events out, a message in, to the end of the workflow."""
    wf = IDS["ws"]
    url = f"{gateway.base_url.replace('http', 'ws', 1)}/ws/workflows/{wf}?stream_key={STREAM}"
    frames: list[dict[str, Any]] = []
    with connect(url, open_timeout=15) as ws:
        ws.send(json.dumps({"type": "send", "id": 1, "topic": TOPIC, "payload": {"ok": True}}))
        while not frames or frames[-1]["type"] != "closed":
            frames.append(json.loads(ws.recv(timeout=15)))
    assert {"type": "ack", "id": 1, "topic": TOPIC} in frames, frames
    tokens = [f["value"] for f in frames if f["type"] == "stream"]
    assert tokens == [*FIRST_TOKENS, "!"], frames
    replies = [f["value"] for f in frames if f["type"] == "event" and f["key"] == EVENT_REPLY]
    assert replies == [{"ok": True}], frames
    assert frames[-1] == {"type": "closed", "status": "SUCCESS"}, frames[-1]


def test_cancel_and_resume(http: httpx.Client, other_app: OtherApp) -> None:
    """Cancel stops it; resume hands it back to its own application, which runs it again (a
    PENDING one is never resumed from here: no lock tells its executor alive or gone)."""
    wf = IDS["cancel"]
    refused = http.post(f"/workflows/{wf}/resume")
    assert refused.status_code == 409 and OTHER_APP in refused.json()["detail"], refused.text
    cancelled = http.post(f"/workflows/{wf}/cancel")
    assert cancelled.json()["status"] == "CANCELLED", cancelled.text
    assert http.post(f"/workflows/{wf}/resume").status_code == 200
    wait_until(
        lambda: (
            (s := _status(http, wf))["status"] == "PENDING"
            and s["executor_id"] == other_app.executor
        ),
        what=f"{wf} running again in its own application",
    )


def test_invisible_without_serve_apps(postgres_server: ServerProcess, http: httpx.Client) -> None:
    """A server with COMM_SERVE_APPS unset: 404 on every endpoint, absent from every list."""
    wf = IDS["left"]
    with postgres_server.client() as plain:
        for method, path in [
            ("GET", f"/workflows/{wf}"),
            ("GET", f"/workflows/{wf}/event-keys"),
            ("GET", f"/workflows/{wf}/stream-keys"),
            ("GET", f"/workflows/{wf}/live"),
            ("GET", f"/workflow-events/{wf}/all"),
            ("GET", f"/workflow-events/{wf}/{EVENT_STAGE}?timeout=0"),
            ("GET", f"/workflow-events/{wf}/live"),
            ("GET", f"/workflow-stream/{wf}?key={STREAM}"),
            ("GET", f"/workflow-stream/{wf}/live?key={STREAM}"),
            ("POST", f"/workflows/{wf}/cancel"),
            ("POST", f"/workflows/{wf}/resume"),
        ]:
            answer = plain.request(method, path)
            assert answer.status_code == 404, f"{method} {path}: {answer.status_code} {answer.text}"
        sent = plain.post(f"/send-message/{wf}", params={"topic": TOPIC}, json={"no": 1})
        assert sent.status_code == 404, sent.text
        listed = plain.get("/workflows", params={"limit": 500}).json()["data"]
        assert wf not in {w["workflow_id"] for w in listed}
        assert plain.get("/workflows", params={"app": OTHER_APP}).json()["count"] == 0
    url = f"{postgres_server.base_url.replace('http', 'ws', 1)}/ws/workflows/{wf}"
    with connect(url, open_timeout=15) as ws:
        assert "does not exist" in json.loads(ws.recv(timeout=15))["detail"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=15)
    assert ws.close_code == 4404, ws.close_code
    # The refused message never reached it: it still waits (seen through the gateway).
    assert _stage(http, wf) == "waiting"


def test_never_run_recovered_or_taken_over(
    gateway: ServerProcess,
    own_server: OwnServer,
    postgres_url: str,
    http: httpx.Client,
    other_app: OtherApp,
) -> None:
    """Its PENDING workflows, abandoned by their processes, stay PENDING on their own
    executors across our server's restart and its takeover scans: one on an executor of
    its own, one on our server's own executor ID (as two applications both left at DBOS's
    default "local" would be), which DBOS's startup recovery looks for."""
    ours = gateway.env["COMM_EXECUTOR_ID"]
    same_id = unique_id("other-same-executor")
    twin = OtherApp(postgres_url, ours, [same_id], gateway.workdir / "other-twin.log")
    try:
        twin.wait_until_waiting(http, [same_id])
    finally:
        twin.kill()
    other_app.kill()
    # A dead executor of our own application, for the scans to find: once our server has
    # taken its workflow over, the scans have run.
    peer = own_server(env={"COMM_APPLICATION_VERSION": GATEWAY_VERSION})
    dead = unique_id("peer-wf")
    with peer.client() as client:
        started = client.post(f"/start-workflow-messaging/{dead}/1", params={"step_seconds": 0})
        assert started.status_code == 200, started.text
    peer.kill()
    gateway.stop()
    gateway.start()  # DBOS's startup recovery of our executor ID runs here
    with gateway.client() as client:
        wait_until(
            lambda: _status(client, dead)["executor_id"] == ours,
            what=f"{dead} taken over from the dead peer",
        )
        for workflow_id, executor in [(same_id, ours), (IDS["left"], other_app.executor)]:
            status = _status(client, workflow_id)
            assert (status["status"], status["executor_id"]) == ("PENDING", executor), status
            assert _stage(client, workflow_id) == "waiting", workflow_id
