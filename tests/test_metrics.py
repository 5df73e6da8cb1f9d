"""Operations: Prometheus metrics at /metrics and JSON logs, on a live server process.

The server runs with COMM_LOG_FORMAT=json and its access log on. Each metrics test reads
/metrics before and after what it does and checks the difference, so the tests of this
module must not share the server with anything else (it is their own).

    .venv/bin/pytest tests/test_metrics.py -q
"""

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.support import OwnServer, ServerProcess, unique_id, wait_until
from workflow_comm.workflows import stream_entry_count

pytestmark = pytest.mark.needs_own_server
TIMEOUT = 30.0
METRIC_FAMILIES = (
    "comm_http_requests",
    "comm_http_request_duration_seconds",
    "comm_live_connections",
    "comm_live_watched_workflows",
    "comm_waiting_requests",
    "comm_workflows_started",
    "comm_workflows_finished",
    "comm_messages_sent",
    "comm_live_pushed",
    "comm_db_probe_duration_seconds",
    "comm_db_probe_failures",
)


@pytest.fixture(scope="module")
def server(own_server: OwnServer) -> ServerProcess:
    """This module's own server (conftest's `http` is a client of it)."""
    return own_server(env={"COMM_LOG_FORMAT": "json", "COMM_LOG_LEVEL": "INFO"})


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    response = http.get("/metrics")
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def start(http: httpx.Client, kind: str, workflow_id: str, n_steps: int = 1, **params: Any) -> Any:
    params.setdefault("step_seconds", 0)
    response = http.post(f"/start-workflow-{kind}/{workflow_id}/{n_steps}", params=params)
    assert response.status_code == 200, f"start {kind}: {response.status_code} {response.text}"
    return response.json()


def status_becomes(http: httpx.Client, workflow_id: str, status: str) -> None:
    wait_until(
        lambda: http.get(f"/workflows/{workflow_id}").json()["status"] == status,
        timeout=TIMEOUT,
        what=f"{workflow_id} {status}",
    )


# --- Metrics -------------------------------------------------------------------------------


def test_metrics_are_served_in_prometheus_text_format(http: httpx.Client) -> None:
    """/metrics answers in the Prometheus text format and has every metric family."""
    response = http.get("/metrics")
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    missing = [name for name in METRIC_FAMILIES if name not in families]
    assert not missing, f"missing families {missing}; present: {sorted(families)}"


def test_requests_are_labelled_by_route_template(http: httpx.Client) -> None:
    """A request to /workflows/<id> counts under route="/workflows/{workflow_id}" with its
    status and duration; the raw ID never becomes a label."""
    workflow_id = unique_id("met-route")
    before = scrape(http)
    http.get(f"/workflows/{workflow_id}")
    after_response = http.get("/metrics").text
    after = scrape(http)
    route = {"method": "GET", "route": "/workflows/{workflow_id}"}
    assert grew(before, after, "comm_http_requests_total", **route, status="404") == 1
    assert grew(before, after, "comm_http_request_duration_seconds_count", **route) == 1
    assert workflow_id not in after_response, "a raw workflow ID appears in /metrics"


def test_unmatched_paths_share_one_label(http: httpx.Client) -> None:
    """Requests to paths no route serves all count under route="unmatched"."""
    paths = [f"/no-such-{unique_id()}", f"/also/{unique_id()}/missing"]
    before = scrape(http)
    codes = [http.get(path).status_code for path in paths]
    after = scrape(http)
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    assert codes == [404, 404], codes
    assert grew(before, after, "comm_http_requests_total", **labels) == len(paths)


def test_body_over_the_limit_counts_under_its_route_template(http: httpx.Client) -> None:
    """A 413 (answered before routing, by the body limit) to /send-message/<id> counts under
    route="/send-message/{workflow_id}", declared or chunked, never under "unmatched"."""
    workflow_id = unique_id("met-413")
    body = json.dumps({"x": "a" * 70_000}).encode()
    headers = {"content-type": "application/json"}
    before = scrape(http)
    declared = http.post(f"/send-message/{workflow_id}", content=body, headers=headers)
    chunked = http.post(f"/send-message/{workflow_id}", content=iter([body]), headers=headers)
    assert [declared.status_code, chunked.status_code] == [413, 413], (declared, chunked)
    route = {"method": "POST", "route": "/send-message/{workflow_id}"}

    # A 413 may reach the client (which then scrapes on a new connection) before the server
    # has finished counting it: wait for both counts, then check nothing else was counted.
    def both_counted() -> Samples | None:
        now = scrape(http)
        return (
            now
            if grew(before, now, "comm_http_requests_total", **route, status="413") >= 2
            else None
        )

    after = wait_until(both_counted, timeout=TIMEOUT, what="both 413s counted")
    assert grew(before, after, "comm_http_requests_total", **route, status="413") == 2
    unmatched = {"method": "POST", "route": "unmatched", "status": "413"}
    assert grew(before, after, "comm_http_requests_total", **unmatched) == 0


def test_workflows_started_and_finished_are_counted_by_kind(http: httpx.Client) -> None:
    """One workflow of each kind run to the end adds 1 to started{kind} and 1 to
    finished{kind, SUCCESS}; starting an existing ID again adds nothing."""
    ids = {kind: unique_id(f"met-{kind}") for kind in ("events", "messaging", "streaming")}
    before = scrape(http)
    for kind, workflow_id in ids.items():
        start(http, kind, workflow_id)
        assert start(http, kind, workflow_id)["created"] is False
    http.post(f"/send-message/{ids['messaging']}", json={"approved": True})
    for workflow_id in ids.values():
        status_becomes(http, workflow_id, "SUCCESS")
    after = scrape(http)
    counted = {
        kind: (
            grew(before, after, "comm_workflows_started_total", kind=kind),
            grew(before, after, "comm_workflows_finished_total", kind=kind, status="SUCCESS"),
        )
        for kind in ids
    }
    assert counted == dict.fromkeys(ids, (1, 1)), f"(started, finished) by kind: {counted}"


def test_cancelled_workflow_is_counted_as_cancelled(http: httpx.Client) -> None:
    """A workflow cancelled while it runs counts once as finished{kind, CANCELLED}."""
    workflow_id = unique_id("met-cancel")
    before = scrape(http)
    start(http, "events", workflow_id, n_steps=200, step_seconds=0.1)
    assert http.post(f"/workflows/{workflow_id}/cancel").status_code == 200
    labels = {"kind": "events", "status": "CANCELLED"}
    wait_until(
        lambda: grew(before, scrape(http), "comm_workflows_finished_total", **labels) >= 1,
        timeout=TIMEOUT,
        what="the cancelled run counted",
    )
    after = scrape(http)
    assert grew(before, after, "comm_workflows_finished_total", **labels) == 1
    assert (
        grew(before, after, "comm_workflows_finished_total", kind="events", status="SUCCESS") == 0
    )


def test_messages_sent_are_counted_by_transport(server: ServerProcess, http: httpx.Client) -> None:
    """A message sent over HTTP counts under transport="http", one over the WebSocket under
    transport="websocket"."""
    workflow_id = unique_id("met-msg")
    start(http, "messaging", workflow_id, approval_timeout=60)
    before = scrape(http)
    http.post(f"/send-message/{workflow_id}", json={"n": 1}, params={"topic": "other"})
    url = f"{server.base_url.replace('http', 'ws', 1)}/ws/workflows/{workflow_id}"
    with connect(url, open_timeout=TIMEOUT) as ws:
        ws.send(json.dumps({"type": "send", "id": "m1", "topic": "other", "payload": {"n": 2}}))
        while json.loads(ws.recv(timeout=TIMEOUT))["type"] != "ack":
            pass
    after = scrape(http)
    sent = {
        t: grew(before, after, "comm_messages_sent_total", transport=t)
        for t in ("http", "websocket")
    }
    assert sent == {"http": 1, "websocket": 1}, f"messages counted: {sent}"


def test_live_connections_gauge_follows_open_connections(http: httpx.Client) -> None:
    """comm_live_connections is 1 while an SSE connection is open, 0 after it closed."""
    workflow_id = unique_id("met-live")
    start(http, "messaging", workflow_id, approval_timeout=600)
    # Connections of the tests before (a WebSocket just closed) may still be being released.
    wait_until(
        lambda: value(scrape(http), "comm_live_connections") == 0,
        timeout=TIMEOUT,
        what="earlier live connections released",
    )
    with http.stream("GET", f"/workflows/{workflow_id}/live") as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        open_count = value(scrape(http), "comm_live_connections")
        watched = value(scrape(http), "comm_live_watched_workflows")
    wait_until(
        lambda: value(scrape(http), "comm_live_connections") == 0,
        timeout=TIMEOUT,
        what="the connection released",
    )
    http.post(f"/workflows/{workflow_id}/cancel")
    assert (open_count, watched) == (1, 1), f"open {open_count}, watched {watched}"


def test_stream_entries_pushed_are_counted(http: httpx.Client) -> None:
    """Reading a whole stream live over SSE adds its length to pushed{sse, stream}."""
    workflow_id, n_steps = unique_id("met-push"), 3
    start(http, "streaming", workflow_id, n_steps=n_steps)
    before = scrape(http)
    text = http.get(f"/workflow-stream/{workflow_id}/live").text
    after = scrape(http)
    pushed = grew(before, after, "comm_live_pushed_total", transport="sse", type="stream")
    assert pushed == stream_entry_count(n_steps), f"pushed {pushed}; response:\n{text[-300:]}"


def test_health_probes_are_timed(http: httpx.Client) -> None:
    """Each GET /health (asked one after another) times one database probe: the histogram's
    count grows by the number of requests and its sum by the latencies the answers report."""
    before = scrape(http)
    answers = [http.get("/health").json()["database"] for _ in range(3)]
    after = scrape(http)
    assert all(a["reachable"] for a in answers), answers
    probes = grew(before, after, "comm_db_probe_duration_seconds_count")
    seconds = grew(before, after, "comm_db_probe_duration_seconds_sum")
    reported = sum(a["latency_ms"] for a in answers) / 1000
    assert probes == 3, f"{probes} probes timed for 3 requests"
    # The answers round to 0.01 ms.
    assert abs(seconds - reported) < 3 * 0.005e-3, f"timed {seconds:.6f}s, reported {reported}s"
    assert grew(before, after, "comm_db_probe_failures_total") == 0


# --- JSON logs -----------------------------------------------------------------------------


def log_lines(server: ServerProcess) -> list[str]:
    """The lines logged since the app started (uvicorn prints two before it can set up)."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    startup = max(i for i, line in enumerate(lines) if "Waiting for application startup" in line)
    return lines[startup + 1 :]


def test_json_logs_have_one_object_per_line(server: ServerProcess, http: httpx.Client) -> None:
    """With COMM_LOG_FORMAT=json every line (DBOS's, uvicorn's, ours) is a JSON object with
    ts, level, logger and message."""
    http.get("/workflows")
    lines = log_lines(server)
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not JSON: {line[:200]}")
    loggers = {entry["logger"] for entry in parsed}
    assert all({"ts", "level", "logger", "message"} <= entry.keys() for entry in parsed)
    assert {"dbos", "workflow_comm", "uvicorn.access"} <= loggers, f"loggers seen: {loggers}"


def test_json_log_lines_name_their_workflow(server: ServerProcess, http: httpx.Client) -> None:
    """Access lines of requests about a workflow carry its `workflow_id`; others do not."""
    workflow_id = unique_id("met-log")
    start(http, "events", workflow_id)
    http.get(f"/workflow-events/{workflow_id}/all")
    http.get("/workflows", params={"limit": 1})

    def access(path_part: str) -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in log_lines(server)]
        return [e for e in entries if e["logger"] == "uvicorn.access" and path_part in e["path"]]

    # Access lines reach the log file when uvicorn writes them: wait for all three requests'.
    wait_until(
        lambda: len(access(workflow_id)) >= 2 and access("/workflows?limit=1"),
        timeout=TIMEOUT,
        what="access lines",
    )
    about, listing = access(workflow_id), access("/workflows?limit=1")
    assert len(about) == 2 and {e.get("workflow_id") for e in about} == {workflow_id}, about
    assert listing and "workflow_id" not in listing[-1], listing
