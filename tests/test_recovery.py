"""Crash recovery: SIGKILL the server mid-workflow, start it again, and each workflow finishes once.

One crash serves the three tests (server starts are the slow part): a server starts an events,
a streaming and a messaging workflow, is SIGKILLed while they run or wait, and a new server
process starts with the same executor ID on the same database (on a new port). At launch,
DBOS resumes the PENDING workflows of its own executor ID and application version. Nothing
is written twice: every set_event, write_stream and close_stream sits in a workflow body, so
DBOS checkpoints it and the recovered run skips it. Each test then checks one kind.

    .venv/bin/pytest tests/test_recovery.py -q
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ServerProcess, ThrowawayPostgres, fibonacci_table, unique_id, wait_until
from workflow_comm import names

pytestmark = pytest.mark.needs_own_server

TERMINAL = names.TERMINAL_STATUSES
N_STEPS = 10
STEP_SECONDS = 1.0
# The kill comes once two steps are done and before five are: at least 5 s of work remain,
# so the events and streaming workflows are surely still running when it lands.
DONE_BEFORE_KILL = (2, 5)


def get_json(http: httpx.Client, path: str) -> Any:
    response = http.get(path)
    assert response.status_code == 200, f"GET {path}: {response.text}"
    return response.json()


def events_of(http: httpx.Client, workflow_id: str) -> Any:
    return get_json(http, f"/workflow-events/{workflow_id}/all")["events"]


def start(http: httpx.Client, kind: str, workflow_id: str, n_steps: int, **params: Any) -> None:
    response = http.post(f"/start-workflow-{kind}/{workflow_id}/{n_steps}", params=params)
    assert response.status_code == 200, response.text


@dataclass
class Crash:
    """What the tests need to know about the crash: IDs, what was there before, the new server."""

    executor_id: str
    events_id: str
    streaming_id: str
    messaging_id: str
    progress_before: int
    stream_before: list[Any]
    http: httpx.Client  # talks to the restarted server


@pytest.fixture(scope="module")
def database_url(postgres: ThrowawayPostgres | None, postgres_url: str) -> str:
    """A database of its own on the test Postgres, when the tests started that Postgres.

    Recovery hands a workflow back through DBOS's internal queue, which any live server on
    the same database may serve; alone on its database, the restarted server is the one.
    """
    if postgres is None:
        return postgres_url
    return postgres.create_database(unique_id("recovery").replace("-", "_"))


@pytest.fixture(scope="module")
def crash(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crash]:
    """Start three workflows, SIGKILL their server mid-way, start it again (same executor ID)."""
    executor_id = unique_id("recovery-executor")
    workdir: Path = tmp_path_factory.mktemp("recovery")
    ids = {kind: unique_id(f"crash-{kind}") for kind in ("events", "streaming", "messaging")}

    with (
        ServerProcess(database_url, executor_id=executor_id, workdir=workdir) as first,
        httpx.Client(base_url=first.base_url, timeout=30.0) as http,
    ):
        start(http, "events", ids["events"], N_STEPS, step_seconds=STEP_SECONDS)
        start(http, "streaming", ids["streaming"], N_STEPS, step_seconds=STEP_SECONDS)
        start(http, "messaging", ids["messaging"], 2, step_seconds=0, approval_timeout=120)

        def all_mid_way() -> tuple[int, list[Any]] | None:
            progress = events_of(http, ids["events"]).get(names.EVENT_PROGRESS, 0)
            stream = get_json(http, f"/workflow-stream/{ids['streaming']}")["stream_values"]
            status = events_of(http, ids["messaging"]).get(names.EVENT_STATUS)
            waiting = status == names.STATUS_WAITING
            low, high = DONE_BEFORE_KILL
            results = sum(1 for value in stream if value["type"] == "result")
            if progress > high * 100 // N_STEPS or results > high:
                raise AssertionError(f"went past mid-way before the kill: {progress}%, {results}")
            if progress >= low * 100 // N_STEPS and results >= low and waiting:
                return progress, stream
            return None

        progress_before, stream_before = wait_until(
            all_mid_way, timeout=30.0, what="all three workflows under way"
        )
        first.kill()

    with (
        ServerProcess(database_url, executor_id=executor_id, workdir=workdir) as second,
        httpx.Client(base_url=second.base_url, timeout=30.0) as http,
    ):
        yield Crash(
            executor_id=executor_id,
            events_id=ids["events"],
            streaming_id=ids["streaming"],
            messaging_id=ids["messaging"],
            progress_before=progress_before,
            stream_before=stream_before,
            http=http,
        )


def wait_finished(crash: Crash, workflow_id: str) -> Any:
    def finished() -> Any:
        workflow = get_json(crash.http, f"/workflows/{workflow_id}")
        return workflow if workflow["status"] in TERMINAL else None

    workflow = wait_until(finished, timeout=60.0, what=f"{workflow_id} to finish after restart")
    assert workflow["status"] == "SUCCESS", workflow
    assert workflow["executor_id"] == crash.executor_id, "not finished by the restarted server"
    return workflow


def test_streaming_workflow_survives_sigkill_without_duplicates(crash: Crash) -> None:
    """Killed mid-stream, the restarted server completes the stream: 3 + 2n entries, each once."""
    before = crash.stream_before
    assert len(before) < 3 + 2 * N_STEPS, f"the stream was complete before the kill: {before}"
    workflow = wait_finished(crash, crash.streaming_id)
    page = get_json(crash.http, f"/workflow-stream/{crash.streaming_id}")
    values = page["stream_values"]
    assert page["closed"] is True, page["closed"]
    assert len(values) == 3 + 2 * N_STEPS, [(v["type"], v.get("step")) for v in values]
    types = [value["type"] for value in values]
    assert types == ["start"] + ["progress", "result"] * N_STEPS + ["summary", "complete"], types
    steps = [(value["type"], value["step"]) for value in values[1:-2]]
    assert steps == [(kind, s) for s in range(1, N_STEPS + 1) for kind in ("progress", "result")]
    # Entries written before the kill stay exactly as written, timestamps and all.
    assert values[: len(before)] == before
    assert values[-2]["results"] == fibonacci_table(N_STEPS)
    assert workflow["result"]["stream_entries"] == 3 + 2 * N_STEPS, workflow["result"]


def test_events_workflow_survives_sigkill_with_correct_final_events(crash: Crash) -> None:
    """Killed mid-run, the restarted server finishes the steps; the final events are exact."""
    assert crash.progress_before < 100, f"finished before the kill ({crash.progress_before}%)"
    workflow = wait_finished(crash, crash.events_id)
    events = events_of(crash.http, crash.events_id)
    result = {"total_steps": N_STEPS, "results": fibonacci_table(N_STEPS)}
    assert workflow["result"] == result
    assert events == {
        names.EVENT_STATUS: names.STATUS_COMPLETED,
        names.EVENT_PROGRESS: 100,
        names.EVENT_RESULT: result,
    }


def test_messaging_workflow_killed_while_waiting_still_takes_its_approval(crash: Crash) -> None:
    """Killed while waiting for approval, the restarted workflow waits again and completes."""
    status = get_json(crash.http, f"/workflows/{crash.messaging_id}")["status"]
    # Recovery hands the workflow back through DBOS's queue: ENQUEUED, then PENDING.
    assert status in {"ENQUEUED", "PENDING"}, status
    payload = {"approved": True, "message": "approved after the crash"}
    response = crash.http.post(f"/send-message/{crash.messaging_id}", json=payload)
    assert response.status_code == 200, response.text
    workflow = wait_finished(crash, crash.messaging_id)
    assert workflow["result"] == {
        "outcome": names.STATUS_COMPLETED,
        "approved": True,
        "message": payload,
        "total_steps": 2,
        "results": fibonacci_table(2),
    }
    events = events_of(crash.http, crash.messaging_id)
    assert events[names.EVENT_MESSAGE] == payload
    assert events[names.EVENT_STATUS] == names.STATUS_COMPLETED
