"""The browser client, /client/workflow-comm.js, in headless Chromium against live servers.

Each test opens a page of the server's origin, imports the module as any page would
(`import("/client/workflow-comm.js")`) and drives it with `page.evaluate`: what its callbacks
receive is kept in `window.seen` and compared here. Nothing is mocked; the restart test kills
a server of its own mid-stream.
"""

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support import TOKEN_SECRET, OwnServer, ServerProcess, gauge, unique_id, wait_until
from tests.test_browser import WAIT_MS, launch_chromium
from workflow_comm import names
from workflow_comm.workflows import stream_entry_count

CLIENT_JS = "/client/workflow-comm.js"
CLIENT_TYPES = "/client/workflow-comm.d.ts"
# Long enough for a feed that should have stopped to show a value if it had not.
QUIET_MS = 1500


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@contextmanager
def client_page(browser: Browser, base_url: str, token: str | None = None) -> Iterator[Page]:
    """A page of `base_url`'s origin with the module imported as `window.wc` and a client
    (with `token`, if given) as `window.client`; callbacks record into `window.seen`.
    Afterwards, fail on any uncaught error in the page (e.g. thrown by a callback)."""
    page = browser.new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{base_url}/health")
        page.evaluate(
            """async ([path, token]) => {
                window.wc = await import(path);
                window.client = new wc.WorkflowClient(token ? { token } : {});
                window.seen = { values: [], states: [], errors: [], closed: null };
            }""",
            [CLIENT_JS, token],
        )
        yield page
    finally:
        page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def seen(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.seen")
    return result


def wait_for(page: Page, condition: str) -> None:
    """Wait (at most WAIT_MS) until the JavaScript `condition` on `seen` holds."""
    page.wait_for_function(
        f"() => {{ const seen = window.seen; return {condition}; }}", timeout=WAIT_MS
    )


# The JavaScript that follows stream `id` into window.seen (with `handle` kept as window.live).
FOLLOW = """([id]) => {
    window.live = client.followStream(id, {
        onValue: (value, offset) => seen.values.push({ offset, type: value.type }),
        onClose: (end) => { seen.closed = end; },
        onState: (state) => seen.states.push(state),
        onError: (error, { retrying }) => seen.errors.push({ status: error.status, retrying }),
    });
}"""


def mint(http: httpx.Client, workflow_id: str, scopes: list[str]) -> str:
    minted = http.post("/tokens", json={"workflow_id": workflow_id, "scopes": scopes})
    assert minted.status_code == 200, minted.text
    token: str = minted.json()["token"]
    return token


# -- serving ---------------------------------------------------------------------------------


def test_module_and_types_are_served_and_the_types_declare_every_export(
    client: httpx.Client,
) -> None:
    """The module is served as JavaScript naming its types; the .d.ts, as text, declares each
    of its exports and each public method of WorkflowClient."""
    module = client.get(CLIENT_JS)
    assert module.status_code == 200, module.status_code
    assert module.headers["content-type"].startswith("text/javascript"), module.headers
    assert module.headers["x-typescript-types"] == CLIENT_TYPES, module.headers
    types = client.get(CLIENT_TYPES)
    assert types.status_code == 200, types.status_code
    assert types.headers["content-type"].startswith("text/plain"), types.headers
    exports = re.findall(r"^export (?:async )?(?:class|function|const) (\w+)", module.text, re.M)
    assert {"WorkflowClient", "WorkflowCommError", "LiveHandle"} <= set(exports), exports
    undeclared = [name for name in exports if f"export class {name}" not in types.text]
    assert not undeclared, f"exported but not in the .d.ts: {undeclared}"
    body = module.text.split("export class WorkflowClient", 1)[1]
    methods = re.findall(r"^  (?:async )?([a-z]\w*)\(", body, re.M)
    assert {"followStream", "watchEvents", "watchStatus", "getEvent", "send"} <= set(methods)
    missing = [m for m in methods if not re.search(rf"^  {m}(<\w+[^>]*>)?\(", types.text, re.M)]
    assert not missing, f"methods not in the .d.ts: {missing}"


# -- following a stream across a restart -----------------------------------------------------


@pytest.fixture(scope="module")
def restartable_server(own_server: OwnServer) -> ServerProcess:
    """A server of our own with tokens on, to kill and restart (same executor ID and port)."""
    return own_server(env={"COMM_TOKEN_SECRET": TOKEN_SECRET})


@pytest.mark.needs_own_server
@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_follow_stream_resumes_across_a_server_restart_with_a_token(
    browser: Browser, restartable_server: ServerProcess, how: str
) -> None:
    """The server dies (SIGKILL) or shuts down (SIGTERM: a `shutdown` event) mid-stream and
    comes back: followStream, authenticated by a token, delivers the exact sequence, each
    value once, says `reconnecting` meanwhile and `ended` after `closed`."""
    server = restartable_server
    wf, n = unique_id("js-restart"), 6
    with server.client() as http:
        started = http.post(f"/start-workflow-streaming/{wf}/{n}", params={"step_seconds": 1.0})
        assert started.status_code == 200, started.text
        token = mint(http, wf, ["read"])
    with client_page(browser, server.base_url, token) as page:
        page.evaluate(FOLLOW, [wf])
        wait_for(page, "seen.values.length >= 3")
        server.kill() if how == "killed" else server.stop()
        wait_for(page, 'seen.states.includes("reconnecting")')
        server.start()
        wait_for(page, "seen.closed !== null")
        got = seen(page)
    offsets = [value["offset"] for value in got["values"]]
    assert offsets == list(range(stream_entry_count(n))), offsets
    types = [value["type"] for value in got["values"]]
    assert types == ["start", *["progress", "result"] * n, "summary", "complete"], types
    assert got["closed"]["next_offset"] == stream_entry_count(n), got["closed"]
    assert got["states"][-1] == "ended", got["states"]
    assert all(error["retrying"] for error in got["errors"]), got["errors"]


# -- tokens, waiting reads, sends, watches ----------------------------------------------------


def test_a_token_reaches_its_workflow_only(
    browser: Browser, client: httpx.Client, base_url: str
) -> None:
    """With a read token (given as a function, asked before each call) the client reads its
    workflow; another workflow is a 404 and its live feed fails for good (no retry loop);
    a send is refused with 403."""
    wf, other = unique_id("js-token"), unique_id("js-other")
    for workflow_id in (wf, other):
        started = client.post(f"/start-workflow-events/{workflow_id}/1", params={"step_seconds": 0})
        assert started.status_code == 200, started.text
    token = mint(client, wf, ["read"])
    with client_page(browser, base_url) as page:
        got = page.evaluate(
            """async ([wf, other, token]) => {
                const client = new wc.WorkflowClient({ token: async () => token });
                const outcome = async (promise) =>
                    promise.then((value) => ({ ok: value }), (error) => ({ status: error.status }));
                const feed = client.watchStatus(other, {
                    onStatus: () => {},
                    onError: (error, { retrying }) =>
                        seen.errors.push({ status: error.status, retrying }),
                });
                const own = await outcome(client.getWorkflow(wf));
                const foreign = await outcome(client.getWorkflow(other));
                const sent = await outcome(client.send(wf, { approved: true }));
                while (feed.state !== "failed") await new Promise((r) => setTimeout(r, 50));
                return { own: own.ok?.workflow_id, foreign, sent, feed: feed.state };
            }""",
            [wf, other, token],
        )
        errors = seen(page)["errors"]
    assert got["own"] == wf, got
    assert got["foreign"] == {"status": 404}, got
    assert got["sent"] == {"status": 403}, got
    assert errors == [{"status": 404, "retrying": False}], errors


def test_get_event_waits_for_the_value(
    browser: Browser, client: httpx.Client, base_url: str
) -> None:
    """getEvent, waiting on the server for `result` (counted by comm_waiting_requests) before
    the approval that leads to it is sent, resolves with it once set; a key a finished
    workflow never set rejects with 404."""
    wf = unique_id("js-wait")
    started = client.post(
        f"/start-workflow-messaging/{wf}/1", params={"step_seconds": 0, "approval_timeout": 60}
    )
    assert started.status_code == 200, started.text
    with client_page(browser, base_url) as page:
        before = gauge(client, "comm_waiting_requests")
        page.evaluate(
            "([wf, key]) => { window.waited = client.getEvent(wf, key, { timeout: 30 }); }",
            [wf, names.EVENT_RESULT],
        )
        wait_until(
            lambda: gauge(client, "comm_waiting_requests") > before,
            what="the page's getEvent waiting on the server",
        )
        sent = client.post(f"/send-message/{wf}", json={"approved": True})
        assert sent.status_code == 200, sent.text
        got = page.evaluate(
            """async (wf) => {
                const value = await window.waited;
                const unset = await client.getEvent(wf, "never-set", { timeout: 5 }).then(
                    () => null, (error) => error.status);
                return { value, unset };
            }""",
            wf,
        )
    assert got["value"]["outcome"] == names.STATUS_COMPLETED, got
    assert got["unset"] == 404, got


def test_send_with_an_idempotency_key_delivers_once(
    browser: Browser, client: httpx.Client, base_url: str, postgres_url: str
) -> None:
    """The same send twice (a retry) with one idempotency key: both answer, one message is
    stored, and the waiting workflow takes it and completes."""
    wf = unique_id("js-send")
    started = client.post(f"/start-workflow-messaging/{wf}/1", params={"step_seconds": 0})
    assert started.status_code == 200, started.text
    token = mint(client, wf, ["read", "send"])
    with client_page(browser, base_url, token) as page:
        answers = page.evaluate(
            """async ([wf, key]) => {
                const message = { approved: true, note: "from the browser" };
                const first = await client.send(wf, message, { idempotencyKey: key });
                const again = await client.send(wf, message, { idempotencyKey: key });
                const result = await client.getEvent(wf, "result", { timeout: 30 });
                return [first, again, result];
            }""",
            [wf, f"approve-{wf}"],
        )
    first, again, result = answers
    assert first["idempotency_key"] == again["idempotency_key"] == f"approve-{wf}", answers
    assert result["outcome"] == names.STATUS_COMPLETED, result
    with psycopg.connect(postgres_url) as db:
        rows = db.execute(
            "SELECT message FROM dbos.notifications WHERE destination_uuid = %s AND topic = %s",
            (wf, names.TOPIC_NOTIFICATION),
        ).fetchall()
    assert len(rows) == 1, f"{len(rows)} messages stored: {rows}"


def test_watch_events_and_status_report_every_change(
    browser: Browser, client: httpx.Client, base_url: str
) -> None:
    """watchEvents reports progress climbing to 100 with growing versions, then `closed`;
    watchStatus reports the run and the final SUCCESS with its result, each once."""
    wf, n = unique_id("js-watch"), 3
    with client_page(browser, base_url) as page:
        started = client.post(f"/start-workflow-events/{wf}/{n}", params={"step_seconds": 0.3})
        assert started.status_code == 200, started.text
        page.evaluate(
            """([wf]) => {
                seen.events = []; seen.statuses = []; seen.ends = [];
                client.watchEvents(wf, {
                    onEvent: (change) => seen.events.push(change),
                    onClose: (end) => seen.ends.push(["events", end.status]),
                });
                client.watchStatus(wf, {
                    onStatus: (workflow) => seen.statuses.push(workflow),
                    onClose: (workflow) => seen.ends.push(["status", workflow.status]),
                });
            }""",
            [wf],
        )
        wait_for(page, "seen.ends.length === 2")
        got = seen(page)
    assert sorted(got["ends"]) == [["events", "SUCCESS"], ["status", "SUCCESS"]], got["ends"]
    versions = [change["version"] for change in got["events"]]
    assert versions == sorted(set(versions)), f"versions not growing: {versions}"
    progress = [c["value"] for c in got["events"] if c["key"] == names.EVENT_PROGRESS]
    assert progress == sorted(progress) and progress[-1] == 100, progress
    assert {c["key"] for c in got["events"]} >= {names.EVENT_STATUS, names.EVENT_RESULT}
    statuses = [workflow["status"] for workflow in got["statuses"]]
    assert statuses[-1] == "SUCCESS", statuses
    assert got["statuses"][-1]["result"]["total_steps"] == n, got["statuses"][-1]
    reported = [json.dumps(workflow, sort_keys=True) for workflow in got["statuses"]]
    assert len(reported) == len(set(reported)), f"a status reported twice: {statuses}"


def test_close_stops_a_feed(browser: Browser, client: httpx.Client, base_url: str) -> None:
    """After close(), a followed stream delivers nothing more and its state is `closed`."""
    wf = unique_id("js-close")
    started = client.post(f"/start-workflow-streaming/{wf}/6", params={"step_seconds": 0.2})
    assert started.status_code == 200, started.text
    with client_page(browser, base_url) as page:
        page.evaluate(FOLLOW, [wf])
        wait_for(page, "seen.values.length >= 1")
        count = page.evaluate("() => { live.close(); return seen.values.length; }")
        page.wait_for_timeout(QUIET_MS)
        got = seen(page)
        state = page.evaluate("live.state")
    assert len(got["values"]) == count, f"{len(got['values']) - count} values after close()"
    assert state == "closed" and got["closed"] is None, (state, got["closed"])
