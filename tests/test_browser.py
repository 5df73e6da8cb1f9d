"""The dashboard at `/`, end to end in headless Chromium (Debian's package) via Playwright.

A real server on Postgres, a real browser, the page's own live feeds: nothing is mocked.
Every test also checks that the page logged no console error and asked no other origin
for anything (it must work with no internet).

Skipped when /usr/bin/chromium is missing, unless CI is set: then it fails.
"""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.support import OwnServer, ServerProcess, unique_id
from workflow_comm.names import STATUS_COMPLETED, STATUS_REJECTED, STATUS_WAITING
from workflow_comm.workflows import stream_entry_count

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download is not available here; these make Debian's chromium
# quiet and offline: no sandbox (containers), no GPU, no background calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
WAIT_MS = 30_000  # generous bound on a workflow finishing while the page watches
MIN_TOUCH_TARGET_PX = 44  # WCAG 2.5.5
MIN_CONTRAST = 4.5  # WCAG AA, normal text


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's chromium, headless and offline (scripts/screenshot.py launches it alike)."""
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{why}; CI must run the browser tests", pytrace=False)
        pytest.skip(why)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Every expectation waits for what it expects; a loaded machine may need more than
    # Playwright's default 5 s to render it, so each gets WAIT_MS unless it says otherwise.
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def tab(browser: Browser) -> Iterator[Page]:
    """One tab for the module; each test loads the page afresh in it (a new browser context
    per test would cost a new renderer process each time)."""
    context = browser.new_context(viewport=DESKTOP)
    yield context.new_page()
    context.close()


@dataclass
class Dashboard:
    """The dashboard loaded in a tab, and what it logged."""

    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    # Console errors a test provokes on purpose (e.g. the browser logging a 409 response).
    expected_errors: list[str] = field(default_factory=list)

    def start(self, kind: str, n_steps: int, step_seconds: float, workflow_id: str) -> None:
        """Fill in the start form and press Start."""
        page = self.page
        page.get_by_label(kind.capitalize()).check()
        page.get_by_label("Workflow ID").fill(workflow_id)
        page.get_by_label("Steps", exact=True).fill(str(n_steps))
        page.get_by_label("Seconds per step").fill(str(step_seconds))
        page.get_by_role("button", name="Start workflow").click()

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def on_request(self, request: Request) -> None:
        if not request.url.startswith(self.base_url):
            self.foreign_requests.append(request.url)


@contextmanager
def dashboard_at(page: Page, base_url: str) -> Iterator[Dashboard]:
    """Load the dashboard; afterwards, fail on any console error or request elsewhere."""
    dash = Dashboard(page, base_url)
    page.on("console", dash.on_console)
    page.on("pageerror", dash.on_page_error)
    page.on("request", dash.on_request)
    try:
        page.goto(f"{base_url}/")
        expect(page.get_by_label("Workflow ID")).not_to_have_value("")  # the module ran
        yield dash
        page.goto("about:blank")  # ends the page's live feeds before the next test
    finally:
        page.remove_listener("console", dash.on_console)
        page.remove_listener("pageerror", dash.on_page_error)
        page.remove_listener("request", dash.on_request)
    unexpected = [e for e in dash.errors if not any(x in e for x in dash.expected_errors)]
    assert not unexpected, f"console errors: {unexpected}"
    assert not dash.foreign_requests, f"requests to other origins: {dash.foreign_requests}"


@pytest.fixture
def dashboard(tab: Page, base_url: str) -> Iterator[Dashboard]:
    with dashboard_at(tab, base_url) as dash:
        yield dash


@pytest.fixture
def phone(tab: Page, base_url: str) -> Iterator[Dashboard]:
    tab.set_viewport_size(PHONE)
    try:
        with dashboard_at(tab, base_url) as dash:
            yield dash
    finally:
        tab.set_viewport_size(DESKTOP)


def log_offsets(page: Page) -> list[int]:
    offsets: list[str] = page.eval_on_selector_all(
        "#stream-log li", "items => items.map(item => item.dataset.offset)"
    )
    return [int(o) for o in offsets]


def record_progress(page: Page) -> None:
    """Keep every value the progress bar shows in window.progressSeen."""
    page.evaluate(
        """() => {
            const bar = document.getElementById("f-progress");
            window.progressSeen = [];
            new MutationObserver(() => window.progressSeen.push(bar.value))
                .observe(bar, { attributes: true, attributeFilter: ["value"] });
        }"""
    )


# -- serving -------------------------------------------------------------------------------


def test_root_serves_the_dashboard_and_docs_stay(client: httpx.Client) -> None:
    """GET / is the page (same-origin-only CSP); /docs and the API schema are unchanged."""
    page = client.get("/")
    assert page.status_code == 200, page.status_code
    assert page.headers["content-type"].startswith("text/html"), page.headers
    assert "default-src 'self'" in page.headers["content-security-policy"], page.headers
    assert '<script type="module" src="/static/app.js">' in page.text
    script = client.get("/static/app.js")
    assert script.headers["content-type"].startswith("text/javascript"), script.headers
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/start-workflow-events/{workflow_id}/{n_steps}" in paths


# -- the three mechanisms --------------------------------------------------------------------


def test_events_workflow_progress_bar_climbs_to_100(dashboard: Dashboard) -> None:
    """Starting an events workflow follows it: the bar climbs through the steps to 100%."""
    page = dashboard.page
    record_progress(page)
    wf = unique_id("ui-events")
    # Steps of 1.5 s: the page, however slow to subscribe, sees progress between 0 and 100.
    dashboard.start("events", 4, 1.5, wf)
    expect(page.locator("#f-id")).to_have_text(wf)
    expect(page.locator("#f-progress")).to_have_js_property("value", 100, timeout=WAIT_MS)
    expect(page.locator("#f-step")).to_have_text(STATUS_COMPLETED)
    expect(page.locator("#f-status")).to_have_text("SUCCESS")
    expect(page.locator("#f-progress-text")).to_have_text("100%")
    seen: list[float] = page.evaluate("window.progressSeen")
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert any(0 < v < 100 for v in seen), f"no step in between 0 and 100: {seen}"


def test_messaging_workflow_approved_in_the_page_completes(dashboard: Dashboard) -> None:
    """A messaging workflow waits with Approve enabled; Approve makes it run to completion."""
    page = dashboard.page
    dashboard.start("messaging", 3, 0.05, unique_id("ui-approve"))
    approve = page.get_by_role("button", name="Approve", exact=True)
    expect(page.locator("#f-step")).to_have_text(STATUS_WAITING, timeout=WAIT_MS)
    expect(approve).to_be_enabled()
    expect(page.locator("#f-progress")).to_have_js_property("value", 0)
    approve.click()
    expect(page.locator("#f-status")).to_have_text("SUCCESS", timeout=WAIT_MS)
    expect(page.locator("#f-step")).to_have_text(STATUS_COMPLETED)
    expect(page.locator("#f-progress")).to_have_js_property("value", 100)
    expect(page.locator("#f-message")).to_have_text('{"approved":true}')
    expect(page.locator("#f-result")).to_contain_text('"outcome": "completed"')
    expect(approve).to_be_disabled()


def test_messaging_workflow_rejected_in_the_page_stops(dashboard: Dashboard) -> None:
    """Reject ends the workflow as rejected without running a step."""
    page = dashboard.page
    dashboard.start("messaging", 3, 0.05, unique_id("ui-reject"))
    reject = page.get_by_role("button", name="Reject", exact=True)
    expect(reject).to_be_enabled(timeout=WAIT_MS)
    reject.click()
    expect(page.locator("#f-step")).to_have_text(STATUS_REJECTED, timeout=WAIT_MS)
    expect(page.locator("#f-status")).to_have_text("SUCCESS")
    expect(page.locator("#f-progress")).to_have_js_property("value", 0)
    expect(page.locator("#f-result")).to_contain_text('"outcome": "rejected"')


def test_custom_message_reaches_the_workflow_only_on_its_topic(dashboard: Dashboard) -> None:
    """A JSON message on another topic is sent but not taken; on the workflow's topic it is."""
    page = dashboard.page
    dashboard.start("messaging", 2, 0, unique_id("ui-custom"))
    expect(page.locator("#f-step")).to_have_text(STATUS_WAITING, timeout=WAIT_MS)
    topic, body = page.get_by_label("Topic"), page.get_by_label("Message (a JSON object)")
    topic.fill("audit")
    body.fill('{"approved": true, "note": "wrong topic"}')
    page.get_by_role("button", name="Send message").click()
    expect(page.locator("#message-note")).to_contain_text("on topic “audit”")
    expect(page.locator("#f-step")).to_have_text(STATUS_WAITING)
    expect(page.locator("#f-message")).to_have_text("nothing yet")

    topic.fill("notification")
    body.fill('{"approved": true, "note": "custom"}')
    page.get_by_role("button", name="Send message").click()
    expect(page.locator("#f-step")).to_have_text(STATUS_COMPLETED, timeout=WAIT_MS)
    expect(page.locator("#f-message")).to_have_text('{"approved":true,"note":"custom"}')


def test_stream_log_shows_every_entry_once_in_order(dashboard: Dashboard) -> None:
    """The stream log gets all 3 + 2n entries live, each once, in offset order."""
    page = dashboard.page
    n = 5
    dashboard.start("streaming", n, 0.05, unique_id("ui-stream"))
    expect(page.locator("#stream-summary")).to_contain_text("Stream closed", timeout=WAIT_MS)
    offsets = log_offsets(page)
    assert offsets == list(range(stream_entry_count(n))), offsets
    types = page.eval_on_selector_all("#stream-log li", "items => items.map(i => i.dataset.type)")
    assert types == ["start", *["progress", "result"] * n, "summary", "complete"], types
    expect(page.locator("#f-progress")).to_have_js_property("value", 100)
    expect(page.locator("#f-status")).to_have_text("SUCCESS")


@pytest.fixture(scope="module")
def restartable_server(own_server: OwnServer) -> ServerProcess:
    """A server of our own on Postgres, to kill and restart (same executor ID and port)."""
    return own_server()


@pytest.mark.needs_own_server
@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_stream_log_resumes_across_a_server_restart(
    tab: Page, restartable_server: ServerProcess, how: str
) -> None:
    """The server dies (SIGKILL) or shuts down (SIGTERM, `shutdown` event) mid-stream and
    comes back: the page reconnects by itself; the log ends complete, no gap, no repeat."""
    server = restartable_server
    with dashboard_at(tab, server.base_url) as dash:
        # While the server is away, the browser logs its failed requests; nothing else may.
        dash.expected_errors = ["net::ERR_", "status of 503"]
        n = 6
        # 6 s of stream: the server goes away after entry 3 (about 1 s in), mid-stream.
        dash.start("streaming", n, 1.0, unique_id("ui-restart"))
        expect(tab.locator("#stream-log li").nth(3)).to_be_attached(timeout=WAIT_MS)
        server.kill() if how == "killed" else server.stop()
        expect(tab.locator("#f-connection")).to_have_text("Reconnecting…")
        server.start()
        expect(tab.locator("#stream-summary")).to_contain_text("Stream closed", timeout=WAIT_MS)
        offsets = log_offsets(tab)
        assert offsets == list(range(stream_entry_count(n))), offsets


# -- the recent list ------------------------------------------------------------------------


def test_recent_list_shows_new_workflows_and_choosing_one_follows_it(
    dashboard: Dashboard, client: httpx.Client
) -> None:
    """A workflow started elsewhere appears in the list without a reload; choosing it
    follows it."""
    page = dashboard.page
    wf = unique_id("ui-elsewhere")
    client.post(f"/start-workflow-events/{wf}/2", params={"step_seconds": 0}).raise_for_status()
    row = page.locator(f'#recent-list button[data-id="{wf}"]')
    expect(row).to_contain_text("SUCCESS", timeout=WAIT_MS)
    row.click()
    expect(page.locator("#f-id")).to_have_text(wf)
    expect(page.locator("#f-progress")).to_have_js_property("value", 100, timeout=WAIT_MS)
    expect(row).to_have_attribute("aria-current", "true")


# -- errors in plain words ------------------------------------------------------------------


def test_reused_id_is_explained_in_plain_words(dashboard: Dashboard, client: httpx.Client) -> None:
    """Starting a streaming workflow under an events workflow's ID shows the 409 in words."""
    dashboard.expected_errors = ["status of 409"]
    wf = unique_id("ui-taken")
    client.post(f"/start-workflow-events/{wf}/1", params={"step_seconds": 0}).raise_for_status()
    dashboard.start("streaming", 1, 0, wf)
    alert = dashboard.page.locator("#start-error")
    expect(alert).to_contain_text("That ID is already taken.")
    expect(alert).to_contain_text(wf)  # the server's own words follow, naming the ID
    expect(dashboard.page.locator("#followed-body")).to_be_hidden()


def test_out_of_bounds_input_names_the_field(dashboard: Dashboard) -> None:
    """A 422 says which field is wrong and what it must be."""
    dashboard.expected_errors = ["status of 422"]
    dashboard.start("events", 0, 0, unique_id("ui-bounds"))
    alert = dashboard.page.locator("#start-error")
    expect(alert).to_have_text(
        "Could not start the workflow. Please check the input: Steps must be at least 1."
    )


def test_invalid_id_is_caught_before_sending(dashboard: Dashboard) -> None:
    """An ID that cannot be a URL segment is explained, and the field is marked and focused."""
    dashboard.start("events", 1, 0, "not a valid/id")
    expect(dashboard.page.locator("#start-error")).to_contain_text(
        "Workflow ID may use only letters, digits"
    )
    field = dashboard.page.get_by_label("Workflow ID")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()


# -- accessibility ---------------------------------------------------------------------------


def test_every_control_has_a_label(dashboard: Dashboard) -> None:
    """Every input, textarea and progress bar has a label; every button a name."""
    unnamed = dashboard.page.evaluate(
        """() => [...document.querySelectorAll("input, textarea, select, progress, button")]
            .filter(el => el.tagName === "BUTTON"
                ? !el.textContent.trim() && !el.getAttribute("aria-label")
                : el.labels.length === 0 && !el.getAttribute("aria-label"))
            .map(el => el.outerHTML)"""
    )
    assert unnamed == [], f"controls without a label: {unnamed}"


def test_every_button_and_field_is_reachable_with_tab(dashboard: Dashboard) -> None:
    """With a messaging workflow waiting, Tab alone reaches every visible enabled control."""
    page = dashboard.page
    dashboard.start("messaging", 1, 0, unique_id("ui-tab"))
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_enabled(timeout=WAIT_MS)
    expect(page.locator("#recent-list button").first).to_be_visible(timeout=WAIT_MS)
    page.locator("body").focus()
    reached: set[str] = set()
    for _ in range(80):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.dataset.id"))
    wanted: list[str] = page.evaluate(
        """() => [...document.querySelectorAll("input, textarea, button, a")]
            .filter(el => !el.disabled && el.checkVisibility())
            .filter(el => el.type !== "radio" || el.checked)
            .map(el => el.id || el.dataset.id)
            .filter(Boolean)"""
    )
    missed = [w for w in wanted if w not in reached]
    assert not missed, f"not reachable by Tab: {missed} (reached {sorted(reached)})"


def test_workflow_can_be_started_and_approved_with_the_keyboard(dashboard: Dashboard) -> None:
    """Arrow keys choose the kind, Enter starts, Tab and Space approve: no mouse needed."""
    page = dashboard.page
    page.get_by_label("Events").focus()
    page.keyboard.press("ArrowDown")  # radio group: events -> messaging
    expect(page.get_by_label("Messaging")).to_be_checked()
    page.get_by_label("Seconds per step").focus()
    page.keyboard.press("Control+a")
    page.keyboard.type("0")
    page.keyboard.press("Enter")  # submits the form
    expect(page.locator("#f-step")).to_have_text(STATUS_WAITING, timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_enabled()
    page.locator("#followed").focus()
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "approve":
            break
    page.keyboard.press("Space")
    expect(page.locator("#f-step")).to_have_text(STATUS_COMPLETED, timeout=WAIT_MS)


def test_text_has_enough_contrast(dashboard: Dashboard) -> None:
    """Every visible text on a followed workflow meets WCAG AA contrast (4.5:1)."""
    page = dashboard.page
    dashboard.start("messaging", 1, 0, unique_id("ui-contrast"))
    expect(page.locator("#f-step")).to_have_text(STATUS_WAITING, timeout=WAIT_MS)
    low: list[dict[str, Any]] = page.evaluate(
        """(minimum) => {
            const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
            const lum = ([r, g, b]) => {
                const f = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
            };
            const background = (el) => {
                for (; el; el = el.parentElement) {
                    const c = rgb(getComputedStyle(el).backgroundColor);
                    if (c.length < 4 || c[3] > 0) return c;
                }
                return [255, 255, 255];
            };
            const found = [];
            for (const el of document.querySelectorAll("body *")) {
                const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
                if (!own || !el.checkVisibility() || el.closest(":disabled")) continue;
                const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
                const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
                const text = el.textContent.trim().slice(0, 40);
                if (ratio < minimum) found.push({ text, ratio });
            }
            return found;
        }""",
        MIN_CONTRAST,
    )
    assert low == [], f"text below {MIN_CONTRAST}:1 contrast: {low}"


def test_phone_screen_has_no_sideways_scroll_and_big_targets(phone: Dashboard) -> None:
    """On a 390 px wide screen, nothing scrolls sideways and every button is >= 44 px tall."""
    page = phone.page
    phone.start("streaming", 3, 0, unique_id("ui-phone"))
    expect(page.locator("#stream-summary")).to_contain_text("Stream closed", timeout=WAIT_MS)
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"page {widths[0]} px wide on a {widths[1]} px screen"
    small = [
        (name, box["height"])
        for button in page.get_by_role("button").all()
        if button.is_visible() and (box := button.bounding_box()) is not None
        if box["height"] < MIN_TOUCH_TARGET_PX
        for name in [button.inner_text()]
    ]
    assert small == [], f"buttons under {MIN_TOUCH_TARGET_PX} px: {small}"


# -- API keys --------------------------------------------------------------------------------

WRITE_KEY = secrets.token_urlsafe(24)
READ_KEY = secrets.token_urlsafe(24)
ASK_FOR_KEY = "This server requires an API key. Please enter yours here, then press Use key."


@pytest.fixture(scope="module")
def keyed_server(own_server: OwnServer) -> ServerProcess:
    """A server of our own that requires API keys: one write key and one read key."""
    return own_server(env={"COMM_API_KEYS": f"{WRITE_KEY}:write,{READ_KEY}:read"})


@pytest.fixture
def keyless_tab(browser: Browser) -> Iterator[Page]:
    """A tab in a new browser context: its sessionStorage holds no key from another test."""
    context = browser.new_context(viewport=DESKTOP)
    yield context.new_page()
    context.close()


def use_key(page: Page, key: str) -> None:
    """Type `key` into the API key field and press Use key; wait until the list loaded."""
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-message")).to_be_empty()
    expect(page.locator("#recent-updated")).not_to_have_text("Loading…")


@pytest.mark.needs_own_server
def test_api_key_missing_the_page_asks_for_one(
    keyless_tab: Page, keyed_server: ServerProcess
) -> None:
    """On a server that requires keys, the page's first 401 asks for a key in plain words
    and puts the focus in the API key field (a password field)."""
    page = keyless_tab
    with dashboard_at(page, keyed_server.base_url) as dash:
        dash.expected_errors = ["status of 401"]  # the refused list requests
        field = page.get_by_label("API key")
        expect(page.locator("#key-message")).to_have_text(ASK_FOR_KEY)
        expect(field).to_be_focused()
        expect(field).to_have_attribute("type", "password")
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#recent-error")).to_contain_text("needs an API key")


@pytest.mark.needs_own_server
def test_api_key_write_the_page_starts_and_follows_live(
    keyless_tab: Page, keyed_server: ServerProcess
) -> None:
    """With a write key entered, the page starts a streaming workflow and follows it live to
    the end; the key stays in sessionStorage, out of the URL bar and localStorage."""
    page = keyless_tab
    with dashboard_at(page, keyed_server.base_url) as dash:
        dash.expected_errors = ["status of 401"]  # only before the key is entered
        expect(page.locator("#key-message")).to_have_text(ASK_FOR_KEY)
        use_key(page, WRITE_KEY)
        errors_before_start = len(dash.errors)
        n = 3
        dash.start("streaming", n, 0.05, unique_id("ui-key"))
        expect(page.locator("#stream-summary")).to_contain_text("Stream closed", timeout=WAIT_MS)
        offsets = log_offsets(page)
        assert offsets == list(range(stream_entry_count(n))), offsets
        expect(page.locator("#f-status")).to_have_text("SUCCESS")
        late = dash.errors[errors_before_start:]
        assert late == [], f"console errors with the key in use: {late}"
        assert WRITE_KEY not in page.url, page.url
        stored = page.evaluate(
            "[sessionStorage.getItem('workflow-comm.api-key'), localStorage.length]"
        )
        assert stored == [WRITE_KEY, 0], "the key is not in sessionStorage only"


@pytest.mark.needs_own_server
def test_api_key_read_only_is_told_it_cannot_start(
    keyless_tab: Page, keyed_server: ServerProcess
) -> None:
    """With a read key the list loads, and Start says the key can read but not start."""
    page = keyless_tab
    with dashboard_at(page, keyed_server.base_url) as dash:
        dash.expected_errors = ["status of 401", "status of 403"]
        use_key(page, READ_KEY)
        dash.start("events", 1, 0, unique_id("ui-read"))
        expect(page.locator("#start-error")).to_contain_text(
            "This key can read but not start or send"
        )
        expect(page.locator("#followed-body")).to_be_hidden()


# -- mailbox and timeline ------------------------------------------------------------------


def test_mailbox_and_timeline_of_the_followed_workflow(
    dashboard: Dashboard, client: httpx.Client
) -> None:
    """Following a messaging workflow: a message on another topic shows pending in the mailbox
    and the approval consumed; the timeline lists each entry once and draws the steps as bars
    and the rest as marks."""
    page = dashboard.page
    wf = unique_id("ui-history")
    dashboard.start("messaging", 2, 0.2, wf)
    expect(page.locator("#f-step")).to_have_text(STATUS_WAITING)
    page.get_by_label("Topic").fill("audit")
    page.get_by_label("Message (a JSON object)").fill('{"note": "kept"}')
    page.get_by_role("button", name="Send message").click()
    pending = page.locator('#mailbox-rows tr[data-state="pending"]')
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text('{"note":"kept"}')
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator("#f-status")).to_have_text("SUCCESS")
    expect(page.locator('#timeline-list li[data-type="end"]')).to_have_count(1)
    expect(page.locator('#mailbox-rows tr[data-state="consumed"]')).to_have_count(1)
    expect(pending).to_have_count(1)
    expect(page.locator("#timeline-chart rect.bar.step")).to_have_count(2)
    expect(page.locator("#timeline-chart circle.mark.message_received")).to_have_count(1)
    entries = client.get(f"/workflows/{wf}/timeline").json()["data"]
    listed = page.eval_on_selector_all("#timeline-list li", "items => items.length")
    assert listed == len(entries), f"{listed} listed, the timeline has {len(entries)}"


def test_service_started_from_the_form_shows_its_requests(
    dashboard: Dashboard, client: httpx.Client
) -> None:
    """The Service kind asks for an idle timeout instead of a number of steps and starts a
    service workflow; a request answered through the API shows in the followed workflow's
    mailbox (consumed) and timeline (the message taken, the reply set)."""
    page = dashboard.page
    wf = unique_id("ui-service")
    page.get_by_label("Service").check()
    expect(page.get_by_label("Steps", exact=True)).to_be_hidden()
    page.get_by_label("Workflow ID").fill(wf)
    page.get_by_label("Idle timeout (seconds)").fill("600")
    page.get_by_label("Seconds per step").fill("0")
    page.get_by_role("button", name="Start workflow").click()
    expect(page.locator("#f-kind")).to_have_text("service")
    answer = client.post(f"/workflows/{wf}/request", json={"n": 10})
    assert answer.status_code == 200 and answer.json()["reply"]["fibonacci"] == 55, answer.text
    expect(page.locator('#mailbox-rows tr[data-state="consumed"]')).to_have_count(1)
    expect(page.locator('#timeline-list li[data-type="message_received"]')).to_have_count(1)
    assert client.post(f"/workflows/{wf}/cancel").status_code == 200
    expect(page.locator("#f-status")).to_have_text("CANCELLED")
