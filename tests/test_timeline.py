"""The timeline of each demo kind, paged and live, on the shared servers (Postgres, SQLite).

(The timeline after a crash and recovery is checked in tests/test_mailbox_requests.py, which
SIGKILLs a server mid-request.)

    .venv/bin/pytest -n0 tests/test_timeline.py -q
"""

import json
from collections.abc import Iterable
from typing import Any

import httpx
import pytest

from tests.support import AsyncClientAsSync, fibonacci_table, unique_id, wait_until
from workflow_comm import names

pytestmark = pytest.mark.both_backends
LONG = 600


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, f"{response.request.url}: {response.text}"
    return response.json()


def finished(client: httpx.Client, workflow_id: str) -> None:
    wait_until(
        lambda: ok(client.get(f"/workflows/{workflow_id}"))["status"] in names.TERMINAL_STATUSES,
        what=f"{workflow_id} to finish",
    )


def timeline(client: httpx.Client, workflow_id: str, **params: Any) -> list[dict[str, Any]]:
    page = ok(client.get(f"/workflows/{workflow_id}/timeline", params=params))
    assert page["count"] == len(page["data"]) and not page["truncated"], page
    data: list[dict[str, Any]] = page["data"]
    return data


def assert_well_formed(entries: list[dict[str, Any]]) -> None:
    """created first, end last, every ID once, the workflow's operations in their order."""
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)), f"listed twice: {ids}"
    assert entries[0]["type"] == "created" and entries[0]["executor_id"], entries[0]
    assert entries[-1]["type"] == "end" and entries[-1]["status"] == "SUCCESS", entries[-1]
    step_ids = [e["step_id"] for e in entries if "step_id" in e]
    assert step_ids == sorted(step_ids), f"operations out of order: {step_ids}"


def test_events_workflow_timeline_has_each_step_and_event_change(client: httpx.Client) -> None:
    wf = unique_id("tl-events")
    ok(client.post(f"/start-workflow-events/{wf}/2", params={"step_seconds": 0.05}))
    finished(client, wf)
    entries = timeline(client, wf)
    assert_well_formed(entries)
    steps = [e for e in entries if e["type"] == "step"]
    assert [s["output"] for s in steps] == [r["fibonacci"] for r in fibonacci_table(2)], steps
    for step in steps:
        assert step["name"] == "compute_step"
        assert step["duration_ms"] == step["end"] - step["at"] >= 0, step
    changes = [(e["key"], e["value"]) for e in entries if e["type"] == "event"]
    assert changes[:4] == [
        (names.EVENT_STATUS, names.STATUS_STARTED),
        (names.EVENT_PROGRESS, 0),
        (names.EVENT_STATUS, names.status_processing(1)),
        (names.EVENT_PROGRESS, 50),
    ], changes
    assert changes[-1] == (names.EVENT_STATUS, names.STATUS_COMPLETED), changes
    versions = [e["version"] for e in entries if e["type"] == "event"]
    assert versions == sorted(versions) and len(set(versions)) == len(versions), versions
    assert entries[-1]["output"]["total_steps"] == 2


def test_messaging_workflow_timeline_shows_the_message_sent_and_received(
    client: httpx.Client,
) -> None:
    wf = unique_id("tl-msg")
    ok(
        client.post(
            f"/start-workflow-messaging/{wf}/1",
            params={"step_seconds": 0, "approval_timeout": LONG},
        )
    )
    ok(client.post(f"/send-message/{wf}", json={"approved": True, "note": "x" * 3000}))
    finished(client, wf)
    entries = timeline(client, wf)
    assert_well_formed(entries)
    (sent,) = [e for e in entries if e["type"] == "message_sent"]
    (received,) = [e for e in entries if e["type"] == "message_received"]
    assert received["message_id"] == sent["message_id"], (sent, received)
    assert received["at"] >= sent["at"] - 1000, (sent, received)  # SQLite: seconds
    # A long payload is shown as a bounded preview, not in full.
    assert "value" not in sent and len(sent["preview"]) == names.TIMELINE_VALUE_MAX_CHARS, sent


def test_streaming_workflow_timeline_lists_every_write_then_the_close(
    client: httpx.Client,
) -> None:
    wf = unique_id("tl-stream")
    ok(client.post(f"/start-workflow-streaming/{wf}/2", params={"step_seconds": 0}))
    finished(client, wf)
    entries = timeline(client, wf)
    assert_well_formed(entries)
    stream = [e for e in entries if e["type"] in ("stream_write", "stream_close")]
    assert [e["offset"] for e in stream] == list(range(3 + 2 * 2 + 1)), stream
    assert stream[-1]["type"] == "stream_close" and stream[0]["value"]["type"] == "start"
    assert {e["key"] for e in stream} == {names.STREAM_PROGRESS}


def test_service_workflow_timeline_shows_each_request_and_reply(client: httpx.Client) -> None:
    wf = unique_id("tl-svc")
    ok(client.post(f"/start-workflow-service/{wf}", params={"idle_timeout": 1}))
    answer = ok(client.post(f"/workflows/{wf}/request", json={"n": 7}))
    finished(client, wf)  # idle for 1 s: ends
    entries = timeline(client, wf)
    assert_well_formed(entries)
    types = [e["type"] for e in entries]
    assert types.count("message_sent") == types.count("message_received") == 1, types
    assert "recv_timeout" in types, types  # the idle wait that ended it
    reply_key = names.reply_event(answer["correlation_id"])
    (reply,) = [e for e in entries if e["type"] == "event" and e["key"] == reply_key]
    assert reply["value"] == {"n": 7, "fibonacci": 13}, reply


def test_timeline_pages_are_slices_of_the_whole(client: httpx.Client) -> None:
    wf = unique_id("tl-page")
    ok(client.post(f"/start-workflow-events/{wf}/1", params={"step_seconds": 0}))
    finished(client, wf)
    whole = timeline(client, wf)
    page = ok(client.get(f"/workflows/{wf}/timeline", params={"limit": 3, "offset": 2}))
    assert page["data"] == whole[2:5] and page["has_more"], page


def read_sse(lines: Iterable[str]) -> list[tuple[str | None, str | None, Any]]:
    """(event, id, data) of each server-sent event until the stream ends."""
    frames: list[tuple[str | None, str | None, Any]] = []
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                frames.append((fields.get("event"), fields.get("id"), json.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return frames


def live(client: httpx.Client, workflow_id: str, **headers: str) -> list[tuple[Any, ...]]:
    url = f"/workflows/{workflow_id}/timeline/live"
    with client.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        return read_sse(response.iter_lines())


def test_live_timeline_sends_each_entry_once_then_closed(client: httpx.Client) -> None:
    """Watched from its start, the live timeline sends the entries the paged one lists at the
    end (the current status aside), each once, then `closed` with the final status."""
    wf = unique_id("tl-live")
    ok(client.post(f"/start-workflow-events/{wf}/3", params={"step_seconds": 0.2}))
    frames = live(client, wf)
    assert frames[-1][0] == "closed" and frames[-1][2]["status"] == "SUCCESS", frames[-1]
    sent = [data for event, _, data in frames if event is None]
    assert sent == timeline(client, wf), sent  # the same entries, field for field


def test_live_timeline_shows_a_message_taken_while_watched(client: httpx.Client) -> None:
    """Watched while it waits in recv, a messaging workflow's live timeline gets the message
    sent, the recv that took it (DBOS records it after the sleep it reserved the next ID for)
    and the rest, each once: the entries the paged timeline lists at the end. Live, each is
    sent as it is read, so one read later may come after one it sorts before."""
    wf = unique_id("tl-live-msg")
    ok(
        client.post(
            f"/start-workflow-messaging/{wf}/1",
            params={"step_seconds": 0, "approval_timeout": LONG},
        )
    )
    status = client.get(f"/workflow-events/{wf}/status", params={"timeout": 60})
    assert ok(status)["value"] == names.STATUS_WAITING, status.text
    url = f"/workflows/{wf}/timeline/live"
    with client.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200, response.read()
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))  # watched now
        ok(client.post(f"/send-message/{wf}", json={"approved": True}))
        frames = read_sse(lines)
    assert frames[-1][0] == "closed" and frames[-1][2]["status"] == "SUCCESS", frames[-1]
    sent = [json.loads(first[len("data: ") :])] + [d for e, _, d in frames if e is None]
    whole = timeline(client, wf)
    ids = [e["id"] for e in sent]
    assert len(ids) == len(set(ids)) and set(ids) == {e["id"] for e in whole}, (sent, whole)
    assert [e["type"] for e in sent].count("message_received") == 1, sent


def test_live_timeline_resumes_after_last_event_id(client: httpx.Client) -> None:
    wf = unique_id("tl-resume")
    ok(client.post(f"/start-workflow-events/{wf}/1", params={"step_seconds": 0}))
    finished(client, wf)
    whole = timeline(client, wf)
    frames = live(client, wf, **{"Last-Event-ID": whole[2]["id"]})
    assert [d["id"] for e, _, d in frames if e is None] == [e["id"] for e in whole[3:]]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_client_iter_timeline_follows_the_live_timeline_to_the_end(
    base_url: str, client: httpx.Client, kind: str
) -> None:
    """Both typed clients' iter_timeline (one feed): every entry once, in the paged timeline's
    order, ending with `end`, and the iteration ends when the workflow has finished."""
    from workflow_comm.client import TypedWorkflowClient

    typed: Any = TypedWorkflowClient(base_url) if kind == "sync" else AsyncClientAsSync(base_url)
    wf = unique_id(f"tl-client-{kind}")
    with typed:
        typed.start_workflow_with_events(wf, 2, step_seconds=0.1)
        entries = list(typed.iter_timeline(wf))
    assert entries[-1].type == "end" and entries[-1].status == "SUCCESS", entries[-1]
    assert [e.id for e in entries] == [e["id"] for e in timeline(client, wf)], entries


def test_bad_timeline_parameters_are_422_and_unknown_is_404(client: httpx.Client) -> None:
    wf = unique_id("tl-bad")
    ok(client.post(f"/start-workflow-events/{wf}/1", params={"step_seconds": 0}))
    for params in ({"limit": 0}, {"limit": names.TIMELINE_PAGE_MAX + 1}, {"offset": -1}):
        response = client.get(f"/workflows/{wf}/timeline", params=params)
        assert response.status_code == 422, (params, response.text)
    assert client.get(f"/workflows/{unique_id('nobody')}/timeline").status_code == 404
    assert client.get(f"/workflows/{unique_id('nobody')}/timeline/live").status_code == 404
