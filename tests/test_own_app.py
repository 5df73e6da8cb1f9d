"""examples/own_app.py, run as its README says: an app of its own with the routes mounted.

`python examples/own_app.py --host H --port P` as a child process, on the SQLite default (no
DBOS_SYSTEM_DATABASE_URL) and on Postgres, driven over HTTP with its own start route and the
mounted communication routes; and its dashboard in headless Chromium, following a draft live
and approving it.
"""

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from playwright.sync_api import Page, expect, sync_playwright

from tests.support import ROOT, ServerProcess, unique_id, wait_until
from tests.test_browser import DESKTOP, WAIT_MS, Dashboard, launch_chromium

pytestmark = pytest.mark.needs_own_server

SSE_TIMEOUT = httpx.Timeout(30.0, read=15.0)


class OwnAppProcess(ServerProcess):
    """examples/own_app.py on its own port, in a folder of its own."""

    def command(self) -> list[str]:
        example = str(ROOT / "examples" / "own_app.py")
        return [sys.executable, example, "--host", "127.0.0.1", "--port", str(self.port)]


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with OwnAppProcess(None, workdir=tmp_path_factory.mktemp("own-app-sqlite")) as app:
        yield app


@pytest.fixture(scope="module")
def postgres_app(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("own-app-postgres")
    with OwnAppProcess(postgres_url, workdir=workdir) as app:
        yield app


@pytest.fixture(params=["sqlite", "postgres"])
def own_app(request: pytest.FixtureRequest) -> ServerProcess:
    app: ServerProcess = request.getfixturevalue(f"{request.param}_app")
    return app


def _event(http: httpx.Client, workflow_id: str, key: str) -> Any:
    answer = http.get(f"/workflow-events/{workflow_id}/{key}", params={"timeout": 20})
    assert answer.status_code == 200, answer.text
    return answer.json()["value"]


def test_a_draft_end_to_end_over_http(own_app: ServerProcess) -> None:
    """Its start route starts its workflow; the mounted routes stream its tokens live, show
    its events and keys, list it under its application, and deliver the approval."""
    wf = unique_id("draft")
    with own_app.client() as http:
        started = http.post(f"/drafts/{wf}", params={"prompt": "streams", "token_seconds": 0.01})
        assert started.status_code == 200, started.text
        with connect_sse(http, "GET", started.json()["tokens"], timeout=SSE_TIMEOUT) as source:
            events = [e for e in source.iter_sse() if e.data]  # to the end: `closed`
        assert events[-1].event == "closed", events[-1]
        tokens = [e.json() for e in events if e.event == "message"]
        assert [int(e.id) for e in events if e.event == "message"] == list(range(len(tokens)))
        assert _event(http, wf, "draft") == "".join(tokens), tokens
        assert _event(http, wf, "progress") == 100
        assert _event(http, wf, "stage") in {"drafting", "waiting_for_approval"}
        keys = http.get(f"/workflows/{wf}/stream-keys").json()["data"]
        assert keys == [{"key": "tokens", "length": len(tokens), "closed": True}], keys
        assert http.get(f"/workflows/{wf}/event-keys").json()["data"] == [
            "draft",
            "progress",
            "stage",
        ]
        listed = http.get("/workflows", params={"app": "drafting-assistant"}).json()["data"]
        assert wf in {w["workflow_id"] for w in listed}, listed
        wait_until(lambda: _event(http, wf, "stage") == "waiting_for_approval")
        sent = http.post(approve := started.json()["approve"], json={"approved": True})
        assert sent.status_code == 200, f"{approve}: {sent.text}"
        assert _event(http, wf, "stage") in {"waiting_for_approval", "approved"}
        done = wait_until(
            lambda: (s := http.get(f"/workflows/{wf}").json())["status"] == "SUCCESS" and s
        )
        assert done["result"]["outcome"] == "approved", done
        assert done["application_name"] == "drafting-assistant", done
        # The mounted routes are every route but the demo's start routes.
        assert http.post(f"/start-workflow-events/{wf}-x/1").status_code == 404


def test_its_dashboard_follows_a_draft_live_and_approves_it(sqlite_app: ServerProcess) -> None:
    """The dashboard, without demo workflows: no start form; the draft's events, its token
    stream (found by its key) as text, and an approval sent from the page."""
    wf = unique_id("ui-draft")
    with sqlite_app.client() as http:
        # Slow enough tokens that the page sees them arrive.
        params: dict[str, str | float] = {"prompt": "live pages", "token_seconds": 0.1}
        assert http.post(f"/drafts/{wf}", params=params).status_code == 200
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context(viewport=DESKTOP).new_page()
            dash = Dashboard(page, sqlite_app.base_url)
            page.on("console", dash.on_console)
            page.on("pageerror", dash.on_page_error)
            page.on("request", dash.on_request)
            _follow_and_approve(page, sqlite_app.base_url, wf)
            page.goto("about:blank")
        finally:
            browser.close()
    assert not dash.errors, f"console errors: {dash.errors}"
    assert not dash.foreign_requests, f"requests to other origins: {dash.foreign_requests}"


def _follow_and_approve(page: Page, base_url: str, wf: str) -> None:
    page.goto(f"{base_url}/")
    expect(page.locator("#start")).to_be_hidden()
    page.get_by_label("ID of a workflow to follow").fill(wf)
    page.get_by_role("button", name="Follow").click()
    expect(page.locator("#f-id")).to_have_text(wf)
    expect(page.locator("#stream-key")).to_have_value("tokens")
    stage = page.locator('#events-list div[data-key="stage"] dd')
    expect(stage).to_have_text(json.dumps("waiting_for_approval"))
    draft = page.locator('#events-list div[data-key="draft"] dd').inner_text()
    expect(page.locator("#stream-text")).to_have_text(json.loads(draft))
    expect(page.locator("#f-progress-text")).to_have_text("100%")
    page.get_by_label("Topic").fill("approval")
    page.get_by_label("Message (a JSON object)").fill('{"approved": true}')
    page.get_by_role("button", name="Send message").click()
    expect(stage).to_have_text(json.dumps("approved"))
    expect(page.locator("#f-status")).to_have_text("SUCCESS")
    expect(page.locator("#recent-list")).to_contain_text(wf)
