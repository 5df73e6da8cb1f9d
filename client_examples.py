"""Runnable examples of the Python client for the DBOS workflow communication server.

What it demonstrates, one numbered example each:
  1. events: start a workflow, poll its progress, read its result
  2. messaging: a workflow waits for approval; send it, see the steps run
  3. messaging: a rejection, and an approval that never comes (timeout)
  4. streaming: read the stream page by page while it grows (no waiting on the server)
  5. streaming pushed live over server-sent events; disconnect and resume from an offset
  6. events pushed live: every change to status, progress and result as it happens
  7. the async client: several workflows of every kind at once with asyncio.gather
  8. combined: watch a workflow's events and approve it the moment it asks
  9. the original WorkflowClient: plain dicts and lists, progress printed (the original API)

Examples 1-8 use the typed clients (TypedWorkflowClient, AsyncWorkflowClient): pydantic
answers, live push over server-sent events, an error class per failure.

How to run (the server first, in another terminal):
    python server.py
    python client_examples.py [--base-url http://localhost:8000] [--step-seconds 0.5] [--only 5]

A server started with API keys (COMM_API_KEYS) needs a write key: --api-key KEY, or the
environment variable COMM_API_KEY (kept out of the shell history and the process list).

Try the live stream by hand:
    curl -X POST http://localhost:8000/start-workflow-streaming/curl-demo/5
    curl -N http://localhost:8000/workflow-stream/curl-demo/live

The clients live in workflow_comm/client/; they are re-exported here, so the original
`from client_examples import WorkflowClient` works, call for call.
"""

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workflow_comm.client import (
    AsyncWorkflowClient,
    BadRequest,
    ClientTimeout,
    Conflict,
    ConnectionFailed,
    EventChange,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    StreamDisconnected,
    StreamItem,
    TooManyRequests,
    TypedWorkflowClient,
    Unauthorized,
    ValidationFailed,
    WorkflowClient,
    WorkflowClientError,
)
from workflow_comm.models import EventsPublic, StreamPage
from workflow_comm.names import (
    EVENT_MESSAGE,
    EVENT_PROGRESS,
    EVENT_RESULT,
    EVENT_STATUS,
    STATUS_COMPLETED,
    STATUS_REJECTED,
    STATUS_TIMED_OUT,
    STATUS_WAITING,
    STREAM_PROGRESS,
)

__all__ = [
    "AsyncWorkflowClient",
    "BadRequest",
    "ClientTimeout",
    "Conflict",
    "ConnectionFailed",
    "EventChange",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "ServiceUnavailable",
    "StreamDisconnected",
    "StreamItem",
    "TooManyRequests",
    "TypedWorkflowClient",
    "Unauthorized",
    "ValidationFailed",
    "WorkflowClient",
    "WorkflowClientError",
]


class ExampleFailed(Exception):
    """The server answered, but not what the example expects."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise ExampleFailed(what)


@dataclass(frozen=True)
class Run:
    """Settings every example shares."""

    base_url: str
    step_seconds: float
    tag: str
    api_key: str | None = field(default=None, repr=False)

    def new_id(self, name: str) -> str:
        return f"example-{name}-{self.tag}-{uuid.uuid4().hex[:6]}"

    @property
    def interval(self) -> float:
        """How often to poll: a few times per step."""
        return max(0.05, self.step_seconds / 3)

    @property
    def timeout(self) -> float:
        """How long any example may wait for a workflow."""
        return 60.0 + 20 * self.step_seconds


def short(value: Any, width: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_entry(entry: Any) -> str:
    """One line for a `progress_stream` entry."""
    kind = entry.get("type")
    if kind == "result":
        return f"result   step {entry['step']}: F({entry['n']}) = {entry['fibonacci']}"
    if kind == "summary":
        return f"summary  {len(entry['results'])} results"
    return f"{kind:<8} {entry.get('message', '')}"


# -----------------------------------------------------------------------------------------


def example_1_events_polling(client: TypedWorkflowClient, run: Run) -> None:
    """Events: start a workflow, poll its progress, read its result."""
    wf = run.new_id("events")
    started = client.start_workflow_with_events(wf, 5, step_seconds=run.step_seconds)
    print(f"started {started.workflow_id}: {started.message}")

    def show(events: EventsPublic) -> None:
        values = events.events
        print(f"  progress {values.get(EVENT_PROGRESS, 0):>3}%   status={values.get(EVENT_STATUS)}")

    final = client.poll_until_complete(
        wf, timeout=run.timeout, interval=run.interval, on_progress=show
    )
    result = final.events[EVENT_RESULT]
    fibs = [r["fibonacci"] for r in result["results"]]
    print(f"  result: {result['total_steps']} steps, fibonacci {fibs}")
    check(final.events[EVENT_STATUS] == STATUS_COMPLETED, f"final events {final.events}")
    # A single key can also be read directly; the server waits (up to `timeout`) if unset.
    progress = client.get_workflow_event(wf, EVENT_PROGRESS, timeout=1)
    print(f"  GET /workflow-events/{wf}/progress -> {progress.value}")
    check(progress.value == 100, f"progress {progress.value}")


def example_2_messaging_approval(client: TypedWorkflowClient, run: Run) -> None:
    """Messaging: the workflow waits for approval; send it and watch the steps run."""
    wf = run.new_id("approve")
    started = client.start_workflow_with_messaging(
        wf, 3, step_seconds=run.step_seconds, approval_timeout=60
    )
    print(f"started {wf}: {started.note}")
    status = client.get_workflow_event(wf, EVENT_STATUS, timeout=10)
    print(f"  status: {status.value}")
    check(status.value == STATUS_WAITING, f"status {status.value}")
    # The idempotency key makes a retried send (after a network error) arrive once only.
    sent = client.send_approval(wf, message="Looks good", idempotency_key=f"{wf}-approval")
    print(f"  sent {sent.payload} on topic {sent.topic!r}")
    done = client.wait_for_result(wf, timeout=run.timeout, interval=run.interval)
    print(
        f"  workflow {done.status}: outcome={done.result['outcome']}, "
        f"{done.result['total_steps']} steps run"
    )
    check(done.result["outcome"] == STATUS_COMPLETED, f"result {done.result}")


def example_3_messaging_rejection_and_timeout(client: TypedWorkflowClient, run: Run) -> None:
    """Messaging: anything but {"approved": true} rejects; no message at all times out."""
    rejected = run.new_id("reject")
    client.start_workflow_with_messaging(rejected, 3, step_seconds=run.step_seconds)
    client.send_custom_message(rejected, {"approved": False, "reason": "budget"})
    outcome = client.wait_for_result(rejected, timeout=run.timeout, interval=run.interval)
    message = client.get_workflow_event(rejected, EVENT_MESSAGE, timeout=1).value
    print(f"{rejected}: outcome={outcome.result['outcome']}, it received {message}")
    check(outcome.result["outcome"] == STATUS_REJECTED, f"result {outcome.result}")

    waited = run.new_id("timeout")
    approval_timeout = 0.5 + 2 * run.step_seconds
    client.start_workflow_with_messaging(waited, 3, approval_timeout=approval_timeout)
    print(f"{waited}: nobody approves; it gives up after {approval_timeout:g}s")
    outcome = client.wait_for_result(waited, timeout=run.timeout, interval=run.interval)
    status = client.get_workflow_event(waited, EVENT_STATUS, timeout=1).value
    print(f"  outcome={outcome.result['outcome']}, status event={status}")
    check(status == STATUS_TIMED_OUT, f"status {status}")


def example_4_stream_pages(client: TypedWorkflowClient, run: Run) -> None:
    """Streaming: read pages while the stream grows; each read returns at once."""
    wf = run.new_id("pages")
    started = client.start_workflow_with_streaming(wf, 4, step_seconds=run.step_seconds)
    print(f"started {wf}: expecting {started.expected_entries} entries")
    offset, reads = 0, 0
    deadline = time.monotonic() + run.timeout
    while True:
        page: StreamPage = client.read_stream(wf, offset=offset, limit=3)
        reads += 1
        for i, entry in enumerate(page.stream_values, start=page.offset):
            print(f"  [{i:>2}] {describe_entry(entry)}")
        offset = page.next_offset
        if page.closed:
            break
        check(time.monotonic() < deadline, f"stream still open after {run.timeout:g}s")
        if not page.has_more:
            time.sleep(run.interval)  # caught up: nothing new yet
    print(f"  closed after {offset} entries, {reads} reads of at most 3")
    check(offset == started.expected_entries, f"read {offset} entries")
    whole = client.read_stream_all(wf, page_size=5)
    print(f"  read_stream_all: {whole.total_messages} entries in one call, closed={whole.closed}")


def example_5_live_stream(client: TypedWorkflowClient, run: Run) -> None:
    """Streaming pushed over SSE; disconnect on purpose, then resume from the next offset."""
    wf = run.new_id("live")
    started = client.start_workflow_with_streaming(wf, 4, step_seconds=run.step_seconds)
    print(f"started {wf}; try: curl -N {run.base_url}/workflow-stream/{wf}/live")
    seen: list[StreamItem] = []
    for item in client.iter_stream(wf):
        seen.append(item)
        print(f"  [{item.offset:>2}] {describe_entry(item.value)}")
        if len(seen) == 3:
            break  # closes the connection
    print(f"  -- disconnected after offset {seen[-1].offset}; resuming at {seen[-1].offset + 1}")
    # Inside one iter_stream, a dropped connection is resumed the same way (Last-Event-ID).
    for item in client.iter_stream(wf, key=STREAM_PROGRESS, offset=seen[-1].offset + 1):
        seen.append(item)
        print(f"  [{item.offset:>2}] {describe_entry(item.value)}")
    offsets = [item.offset for item in seen]
    print(f"  stream closed: {len(seen)} entries, none missed or repeated")
    check(offsets == list(range(started.expected_entries)), f"offsets {offsets}")


def example_6_watch_events(client: TypedWorkflowClient, run: Run) -> None:
    """Events pushed live: each change of each key, in order, until the workflow ends."""
    wf = run.new_id("watch")
    client.start_workflow_with_events(wf, 3, step_seconds=run.step_seconds)
    print(f"started {wf}; try: curl -N {run.base_url}/workflow-events/{wf}/live")
    last: dict[str, Any] = {}
    for change in client.watch_events(wf):
        print(f"  v{change.version:<3} {change.key:<9} = {short(change.value, 60)}")
        last[change.key] = change.value
    print(f"  workflow finished; final status event: {last.get(EVENT_STATUS)}")
    check(last.get(EVENT_STATUS) == STATUS_COMPLETED, f"last values {last}")


async def _async_examples(run: Run) -> None:
    async with AsyncWorkflowClient(run.base_url, api_key=run.api_key) as client:

        async def events_workflow(n: int) -> str:
            wf = run.new_id(f"async-events-{n}")
            await client.start_workflow_with_events(wf, n, step_seconds=run.step_seconds)
            finished = None
            async for status in client.watch_status(wf):
                finished = status
            if finished is None or finished.status != "SUCCESS":
                raise ExampleFailed(f"{wf} ended as {finished}")
            return f"{wf}: {finished.status}, {finished.result['total_steps']} steps"

        async def streaming_workflow() -> str:
            wf = run.new_id("async-stream")
            started = await client.start_workflow_with_streaming(wf, 3, run.step_seconds)
            values = [value async for value in client.stream_live_updates(wf)]
            check(len(values) == started.expected_entries, f"{wf}: {len(values)} values")
            return f"{wf}: {len(values)} stream entries, last {values[-1]['type']!r}"

        async def messaging_workflow() -> str:
            wf = run.new_id("async-approve")
            await client.start_workflow_with_messaging(wf, 2, step_seconds=run.step_seconds)
            await client.send_approval(wf, message="from asyncio")
            done = await client.wait_for_result(wf, timeout=run.timeout, interval=run.interval)
            check(done.result["outcome"] == STATUS_COMPLETED, f"{wf}: {done.result}")
            return f"{wf}: {done.result['outcome']}"

        began = time.monotonic()
        lines = await asyncio.gather(
            events_workflow(2),
            events_workflow(3),
            streaming_workflow(),
            messaging_workflow(),
        )
        for line in lines:
            print(f"  {line}")
        print(f"  {len(lines)} workflows side by side in {time.monotonic() - began:.2f}s")


def example_7_async_concurrent(client: TypedWorkflowClient, run: Run) -> None:
    """The async client: several workflows of every kind at once with asyncio.gather."""
    asyncio.run(_async_examples(run))


def example_8_combined(client: TypedWorkflowClient, run: Run) -> None:
    """Combined: watch a workflow's events live and approve it the moment it asks."""
    wf = run.new_id("combined")
    client.start_workflow_with_messaging(wf, 3, step_seconds=run.step_seconds)
    print(f"started {wf}; watching its events")
    approved = False
    for change in client.watch_events(wf):
        print(f"  v{change.version:<3} {change.key:<9} = {short(change.value, 60)}")
        if change.key == EVENT_STATUS and change.value == STATUS_WAITING and not approved:
            client.send_approval(wf, message="approved by the watcher")
            approved = True
            print("  -> approval sent")
    final = client.get_workflow(wf)
    print(
        f"  {final.status}: outcome={final.result['outcome']}, "
        f"results={[r['fibonacci'] for r in final.result['results']]}"
    )
    check(final.result["outcome"] == STATUS_COMPLETED, f"result {final.result}")
    workflows = client.list_workflows(kind="messaging", limit=5)
    print(f"  recent messaging workflows: {[w.workflow_id for w in workflows.data][:3]}")


def example_9_original_client(client: TypedWorkflowClient, run: Run) -> None:
    """The original WorkflowClient: plain dicts and lists, progress printed as it goes."""
    original = WorkflowClient(run.base_url, api_key=run.api_key)
    wf = run.new_id("original")
    started = original.start_workflow_with_events(wf, 3)
    print(f"Started: {started['message']}")
    final = original.poll_until_complete(wf, poll_interval=0.5)
    print(f"Final result: {final['total_steps']} steps")
    check(final["total_steps"] == 3, f"result {final}")
    print(f"All events: {sorted(original.get_all_workflow_events(wf))}")

    streamed = run.new_id("original-stream")
    original.start_workflow_with_streaming(streamed, 2)
    original.stream_live_updates(streamed, poll_interval=0.5, max_polls=120)
    stream = original.read_stream(streamed)
    print(f"Received {len(stream)} stream messages; the first is {stream[0]['type']!r}")
    check(len(stream) == 7, f"{len(stream)} stream values")
    original.close()


EXAMPLES: dict[int, Callable[[TypedWorkflowClient, Run], None]] = {
    1: example_1_events_polling,
    2: example_2_messaging_approval,
    3: example_3_messaging_rejection_and_timeout,
    4: example_4_stream_pages,
    5: example_5_live_stream,
    6: example_6_watch_events,
    7: example_7_async_concurrent,
    8: example_8_combined,
    9: example_9_original_client,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--base-url", default="http://localhost:8000", help="the server")
    parser.add_argument(
        "--step-seconds", type=float, default=0.5, help="how long each workflow step takes"
    )
    parser.add_argument(
        "--only",
        type=int,
        action="append",
        choices=sorted(EXAMPLES),
        metavar="N",
        help="run only example N (repeatable)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("COMM_API_KEY"),
        help="a write key, if the server requires API keys (default: $COMM_API_KEY)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args.base_url.rstrip("/"), args.step_seconds, uuid.uuid4().hex[:6], args.api_key)
    chosen = args.only or sorted(EXAMPLES)
    failed: list[int] = []
    with TypedWorkflowClient(run.base_url, api_key=run.api_key) as client:
        try:
            health = client.health()
        except ConnectionFailed as exc:
            print(f"Cannot reach the server at {run.base_url} ({exc}).")
            print("Start it first: python server.py")
            return 2
        print(f"Server {run.base_url}: {health.status}, database {health.database.backend}")
        for number in chosen:
            example = EXAMPLES[number]
            title = (example.__doc__ or "").split("\n")[0]
            print(f"\n=== Example {number}: {title}")
            began = time.monotonic()
            try:
                example(client, run)
            except (ExampleFailed, WorkflowClientError) as exc:
                failed.append(number)
                print(f"--- Example {number} FAILED: {type(exc).__name__}: {exc}")
                if isinstance(exc, Unauthorized | Forbidden):  # every example would fail alike
                    print("The server requires a write key: pass --api-key or set COMM_API_KEY.")
                    return 2
                continue
            print(f"--- Example {number} ok ({time.monotonic() - began:.2f}s)")
    if failed:
        print(f"\n{len(failed)} of {len(chosen)} examples failed: {failed}")
        return 1
    print(f"\nAll {len(chosen)} examples passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
