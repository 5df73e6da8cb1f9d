"""Take docs/dashboard.png: the dashboard following a finished streaming workflow.

Starts its own server (SQLite, in a temporary folder), starts a few workflows of each kind,
and photographs the page in the same headless Debian chromium the browser tests use.

    .venv/bin/python scripts/screenshot.py                 # writes docs/dashboard.png
    .venv/bin/python scripts/screenshot.py --out /tmp/x.png --width 390 --height 844
"""

import argparse
import sys
import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import ServerProcess  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def populate(base_url: str) -> None:
    """A few workflows for the recent list: finished, rejected and one still waiting."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        http.post("/start-workflow-events/nightly-report/4", params={"step_seconds": 0})
        http.post("/start-workflow-messaging/expense-claim-17/3", params={"step_seconds": 0})
        http.post("/start-workflow-messaging/refund-482/2", params={"step_seconds": 0})
        http.post("/send-message/refund-482", json={"approved": False, "reason": "duplicate"})
        http.post("/start-workflow-events/image-resize/3", params={"step_seconds": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install chromium")

    with (
        tempfile.TemporaryDirectory(prefix="comm-shot-") as workdir,
        ServerProcess(None, workdir=Path(workdir)) as server,
        sync_playwright() as playwright,
    ):
        populate(server.base_url)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(f"{server.base_url}/")
        page.get_by_label("Streaming").check()
        page.get_by_label("Workflow ID").fill("ingest-batch-7")
        page.get_by_label("Steps", exact=True).fill("5")
        page.get_by_label("Seconds per step").fill("0.2")
        page.get_by_role("button", name="Start workflow").click()
        expect(page.locator("#stream-summary")).to_contain_text("Stream closed", timeout=30_000)
        expect(page.locator("#recent-list li")).to_have_count(5, timeout=10_000)
        page.locator("body").focus()  # no focus ring and no hover in the picture
        page.mouse.move(0, 0)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
