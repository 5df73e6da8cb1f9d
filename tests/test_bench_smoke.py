"""The benchmark runs end to end and writes its files (no timing is asserted here).

`--smoke` is quick mode's code path with a handful of samples per measurement, every phase
included (idle watchers, waiters, both fan-out transports, workers, requests).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytest.importorskip("matplotlib", reason="the bench extra is not installed")
pytest.importorskip("aiohttp", reason="the bench extra is not installed")


@pytest.mark.needs_own_server
def test_smoke_mode_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    """`python -m bench --smoke` exits 0 and writes smoke.json, smoke.md and PNG plots."""
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"bench exited {run.returncode}:\n{run.stderr[-4000:]}"
    results = json.loads((tmp_path / "smoke.json").read_text())
    measured = {key for key, entry in results["latency"].items() if entry["summary"]["n"] > 0}
    assert {"floor", "message_http_postgres", "event_http_postgres"} <= measured, measured
    # The capacity phases ran at a tiny scale, or say why they were skipped; none failed.
    assert not results["errors"], results["errors"]
    for phase in ("idle", "waiters", "requests", "workers"):
        assert phase in results, f"no {phase} results"
    assert {"watched", "skipped"} & set(results["idle"]), results["idle"]
    transports = {row.get("transport") for row in results["fanout"]}
    assert transports | set(results.get("fanout_skipped", {})) == {"sse", "ws"}, transports
    markdown = (tmp_path / "smoke.md").read_text()
    assert "| measurement |" in markdown
    for section in ("## Idle watchers", "## Waiters", "## Workers", "## Requests", "## Targets"):
        assert section in markdown, f"{section} missing from smoke.md"
    plots = sorted(p.name for p in tmp_path.glob("smoke-*.png"))
    assert plots, f"no plots in {sorted(p.name for p in tmp_path.iterdir())}"


@pytest.mark.needs_own_server
def test_sse_overhead_measures_every_mode() -> None:
    """`python -m bench.sse_overhead` runs each of its five modes (the server's own feed path
    among them) and prints a figure for each (no timing is asserted)."""
    run = subprocess.run(
        [sys.executable, "-m", "bench.sse_overhead", "--subscribers", "3", "--values", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"sse_overhead exited {run.returncode}:\n{run.stderr[-4000:]}"
    modes = [line.split()[0] for line in run.stderr.splitlines() if "us per delivery" in line]
    assert modes == ["fastapi", "fastapi-lean", "raw-tasks", "raw", "feed"], run.stderr[-4000:]
