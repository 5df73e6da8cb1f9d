"""examples/react, built with npm and served by examples/own_app.py, in headless Chromium.

`npm ci` (skipped while node_modules matches package-lock.json) and `npm run build` (a type
check of the page and the client's .d.ts, then Vite) make examples/react/dist; own_app, started
as a process with API keys and a token secret, serves it at /app/. The page starts a draft,
gets a token for it from own_app's token route, and shows its progress, its reply token by
token, and an Approve button, with that token only: the API answers nothing without a key.
"""

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.support import ROOT, TOKEN_SECRET, ServerProcess
from tests.test_browser import DESKTOP, WAIT_MS, launch_chromium
from tests.test_own_app import OwnAppProcess

pytestmark = pytest.mark.needs_own_server

APP = ROOT / "examples" / "react"
# What `npm ci` installed from, kept in node_modules: the same lockfile needs no new install.
INSTALLED_STAMP = APP / "node_modules" / ".installed-lock-sha256"
API_KEY = "react-example-write-key-0123456789"
NPM_CI_TIMEOUT = 300
NPM_BUILD_TIMEOUT = 180


def npm(*args: str, timeout: float) -> None:
    """Run `npm ARGS` in examples/react; fail with npm's output if it fails."""
    done = subprocess.run(
        ["npm", *args], cwd=APP, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert done.returncode == 0, f"npm {' '.join(args)} exited {done.returncode}:\n{output}"


@pytest.fixture(scope="module")
def built_page() -> Path:
    """examples/react/dist, freshly built; node_modules installed with `npm ci` if the lockfile
    changed since the last install."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        why = "node and npm are missing (apt-get install nodejs npm): the React example needs them"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{why}; CI must run this test", pytrace=False)
        pytest.skip(why)
    lock = hashlib.sha256((APP / "package-lock.json").read_bytes()).hexdigest()
    if not INSTALLED_STAMP.exists() or INSTALLED_STAMP.read_text() != lock:
        npm("ci", "--no-audit", "--no-fund", timeout=NPM_CI_TIMEOUT)
        INSTALLED_STAMP.write_text(lock)
    npm("run", "build", timeout=NPM_BUILD_TIMEOUT)
    return APP / "dist"


@pytest.fixture(scope="module")
def drafting_app(
    built_page: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """own_app behind a write key, with tokens on; started after the build, so it serves it."""
    env = {"COMM_API_KEYS": f"{API_KEY}:write", "COMM_TOKEN_SECRET": TOKEN_SECRET}
    workdir = tmp_path_factory.mktemp("react-example")
    with OwnAppProcess(None, workdir=workdir, env=env) as app:
        yield app


def test_the_page_follows_a_draft_with_a_token_and_approves_it(drafting_app: ServerProcess) -> None:
    """The page shows progress to 100%, every token of the stream once and in order, and its
    Approve button finishes the workflow approved; every call it makes carries the token its
    backend minted (a JWT), never the API key, which the workflow routes need otherwise."""
    requests: list[tuple[str, dict[str, str]]] = []  # URL and headers of each
    errors: list[str] = []
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context(viewport=DESKTOP).new_page()
            page.on("request", lambda r: requests.append((r.url, r.headers)))
            page.on("console", lambda m: errors.extend([m.text] if m.type == "error" else []))
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            page.on("response", lambda r: errors.extend([r.url] if r.status >= 400 else []))
            draft_id, shown = _draft_and_approve(page, drafting_app.base_url)
            page.goto("about:blank")  # ends the page's live feeds
        finally:
            browser.close()
    assert not errors, f"console errors or refused requests: {errors}"

    with drafting_app.client(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        written = http.get(f"/workflow-stream/{draft_id}", params={"key": "tokens"}).json()
        assert shown == written["stream_values"], f"page {shown} != stream {written}"
        done = http.get(f"/workflows/{draft_id}").json()
        assert done["status"] == "SUCCESS", done
        assert done["result"]["outcome"] == "approved", done
        assert done["result"]["decision"] == {"approved": True}, done
        assert httpx.get(f"{drafting_app.base_url}/workflows/{draft_id}").status_code == 401

    foreign = [url for url, _ in requests if not url.startswith(drafting_app.base_url)]
    assert not foreign, f"requests to other origins: {foreign}"
    api = {
        url: headers for url, headers in requests if "/workflow" in url or "/send-message" in url
    }
    assert {urlparse(url).path for url in api} >= {
        f"/workflow-stream/{draft_id}/live",
        f"/workflow-events/{draft_id}/live",
        f"/workflows/{draft_id}/live",
        f"/send-message/{draft_id}",
    }, list(api)
    for url, headers in requests:
        assert API_KEY not in f"{url} {headers}", f"the page sent the API key: {url} {headers}"
    for url, headers in api.items():
        credential = headers.get("authorization", "")
        assert credential.startswith("Bearer ") and credential.count(".") == 2, (
            f"{url}: Authorization {credential!r} is no token"
        )


def _draft_and_approve(page: Page, base_url: str) -> tuple[str, list[str]]:
    """Start a draft from the page, see it through, approve it; its ID and the tokens shown."""
    page.goto(f"{base_url}/app/")
    page.get_by_label("What should the reply be about?").fill("React pages")
    page.get_by_role("button", name="Draft a reply").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Draft draft-")
    draft_id = parse_qs(urlparse(page.url).query)["draft"][0]

    expect(page.get_by_test_id("progress")).to_have_text("100%")
    expect(page.locator("progress")).to_have_js_property("value", 100)
    expect(page.get_by_test_id("stage")).to_have_text("waiting_for_approval")
    approve = page.get_by_role("button", name="Approve")
    expect(approve).to_be_enabled()
    reply = page.get_by_label("Reply")
    expect(reply).to_have_attribute("data-state", "ended")  # the stream's feed: closed
    expect(reply).to_contain_text("React pages.")
    # Each token once, in stream order: the offsets the page rendered are 0, 1, 2, ...
    offsets = reply.locator("span").evaluate_all("spans => spans.map(s => s.dataset.offset)")
    assert offsets == [str(i) for i in range(len(offsets))], offsets
    shown = reply.locator("span").all_text_contents()

    approve.click()
    expect(page.get_by_test_id("status")).to_have_text("SUCCESS")
    expect(page.get_by_test_id("outcome")).to_have_text("approved")
    expect(page.get_by_test_id("stage")).to_have_text("approved")
    expect(approve).to_be_disabled()
    expect(page.get_by_role("alert")).to_have_count(0)
    return draft_id, shown
