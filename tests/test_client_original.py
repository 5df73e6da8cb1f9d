"""The original WorkflowClient contract, checked by running code written for the original.

`ORIGINAL_USAGE` below is a script as a user of the original project wrote it: `from
client_examples import WorkflowClient`, dict subscripting on what the starts and sends
return, `len()` and indexing on `read_stream`, `stream_live_updates` and
`poll_until_complete` called as statements that print. It runs as its own process against a
live server; what it prints is checked line by line.
"""

import subprocess
import sys
import textwrap

import pytest

from tests.support import ROOT, unique_id
from workflow_comm.workflows import stream_entry_count

ORIGINAL_USAGE = textwrap.dedent(
    """
    import sys
    import time

    from client_examples import WorkflowClient

    client = WorkflowClient(base_url=sys.argv[1])
    tag = sys.argv[2]

    # Events
    result = client.start_workflow_with_events(f"events-{tag}", 3)
    print("started:", result["workflow_id"], "|", result["message"])
    final = client.poll_until_complete(f"events-{tag}", poll_interval=0.2)
    print("final total_steps:", final["total_steps"])
    print("progress:", client.get_workflow_event(f"events-{tag}", "progress", timeout=5))
    print("never set:", client.get_workflow_event(f"events-{tag}", "nope", timeout=0.2))
    print("unknown workflow:", client.get_workflow_event(f"missing-{tag}", "progress", timeout=1))
    events = client.get_all_workflow_events(f"events-{tag}")
    print("event keys:", sorted(events))

    # Messaging
    result = client.start_workflow_with_messaging(f"approve-{tag}", 2)
    print("messaging started:", result["workflow_id"])
    sent = client.send_approval(f"approve-{tag}", True, "Approved by client")
    print("approval payload keys:", sorted(sent["payload"]))
    print("approval topic:", sent["topic"])
    # To another workflow: two messages on one topic may swap within the same timestamp.
    custom = client.send_custom_message(f"events-{tag}", {"note": "hello"})
    print("custom payload:", custom["payload"])
    deadline = time.monotonic() + 60
    while client.get_workflow_event(f"approve-{tag}", "status", timeout=1) != "completed":
        assert time.monotonic() < deadline, "the approved workflow did not complete"
        time.sleep(0.2)
    print("approved workflow completed")

    # Streaming
    result = client.start_workflow_with_streaming(f"stream-{tag}", 2)
    print("streaming started:", result["workflow_id"])
    client.stream_live_updates(f"stream-{tag}", poll_interval=0.2, max_polls=300)
    stream = client.read_stream(f"stream-{tag}")
    print("stream length:", len(stream))
    print("first:", stream[0]["type"], "last:", stream[-1]["type"])
    """
)


def test_the_original_usage_runs_unchanged(base_url: str) -> None:
    """Every call of the original contract, as the original's users wrote them."""
    tag = unique_id("orig")
    done = subprocess.run(
        [sys.executable, "-c", ORIGINAL_USAGE, base_url, tag],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}:\n{out}\n{done.stderr[-3000:]}"
    lines = out.splitlines()
    assert f"started: events-{tag} | Started workflow events-{tag} with 3 steps" in lines, out
    assert f"Polling workflow events-{tag}..." in lines, out
    progress_lines = [line for line in lines if line.startswith("  Progress: ")]
    assert progress_lines and progress_lines[-1].startswith("  Progress: 100% - Status: "), out
    assert "final total_steps: 3" in lines, out
    assert "progress: 100" in lines, out
    assert "never set: None" in lines, out
    assert "unknown workflow: None" in lines, out
    assert "event keys: ['progress', 'result', 'status']" in lines, out
    assert f"messaging started: approve-{tag}" in lines, out
    assert "approval payload keys: ['approved', 'message', 'timestamp']" in lines, out
    assert "approval topic: notification" in lines, out
    assert "custom payload: {'note': 'hello'}" in lines, out
    assert "approved workflow completed" in lines, out
    # stream_live_updates printed every entry as `  [type] message`, then returned.
    started = lines.index(f"Streaming updates from workflow stream-{tag}...")
    printed = [line for line in lines[started + 1 :] if line.startswith("  [")]
    kinds = [line.split("]")[0].strip(" [") for line in printed]
    assert kinds == ["start", "progress", "result", "progress", "result", "summary", "complete"]
    assert printed[0] == "  [start] Starting", printed
    assert "Workflow completed!" in lines, out
    assert f"stream length: {stream_entry_count(2)}" in lines, out
    assert "first: start last: complete" in lines, out


def test_stream_live_updates_is_bounded_by_its_polls(base_url: str) -> None:
    """On a stream that is far from complete, `max_polls` reads `poll_interval` apart bound
    the call: it prints what there is and returns None."""
    tag = unique_id("bound")
    script = textwrap.dedent(
        """
        import sys
        from client_examples import WorkflowClient

        client = WorkflowClient(sys.argv[1])
        wf = f"slow-{sys.argv[2]}"
        client.start_workflow_with_streaming(wf, 300)  # 1 s a step: 5 minutes
        returned = client.stream_live_updates(wf, poll_interval=0.1, max_polls=3)
        print("returned:", returned)
        client.typed.cancel_workflow(wf)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, base_url, tag],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"Streaming updates from workflow slow-{tag}...", done.stdout
    assert lines[-1] == "returned: None", done.stdout
    kinds = {line.split("]")[0].strip(" [") for line in lines[1:-1]}
    assert kinds <= {"start", "progress", "result"}, done.stdout


@pytest.mark.parametrize("outcome", ["approved", "rejected"])
def test_poll_until_complete_returns_when_a_workflow_ends_short_of_100(
    base_url: str, outcome: str
) -> None:
    """A messaging workflow rejected never reaches progress 100: poll_until_complete
    returns its result instead of polling for ever (the original would never return)."""
    from client_examples import WorkflowClient

    wf = unique_id("poll")
    with WorkflowClient(base_url) as client:
        client.start_workflow_with_messaging(wf, 1)
        client.send_approval(wf, outcome == "approved")
        result = client.poll_until_complete(wf, poll_interval=0.1)
    assert result["outcome"] == ("completed" if outcome == "approved" else "rejected"), result
