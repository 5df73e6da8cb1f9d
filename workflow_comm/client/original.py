"""`WorkflowClient`: the original project's client, call for call.

Code written for the original `client_examples.WorkflowClient` runs unchanged: the same
methods, arguments and answers (plain dicts and lists), and the same printed lines from
`poll_until_complete` and `stream_live_updates`:

    client = WorkflowClient("http://localhost:8000")
    result = client.start_workflow_with_events("order-1", 3)
    print(result["workflow_id"], result["message"])
    final = client.poll_until_complete("order-1")      # prints progress, returns the result
    stream = client.read_stream("stream-1")            # a list: len(stream), stream[0]

For typed answers, live push (server-sent events), error classes and asyncio, use
`TypedWorkflowClient` / `AsyncWorkflowClient`; `client.typed` is the typed client this one
sends through (the same connection pool, base URL and API key).
"""

import time
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel

from workflow_comm.client.errors import (
    ClientTimeout,
    ConnectionFailed,
    ServiceUnavailable,
    WorkflowClientError,
)
from workflow_comm.client.typed import DEFAULT_BASE_URL, TypedWorkflowClient
from workflow_comm.names import EVENT_PROGRESS, EVENT_RESULT, EVENT_STATUS, TERMINAL_STATUSES

__all__ = ["WorkflowClient"]

# The stream entry the demo streaming workflow writes last, before it closes the stream.
_COMPLETE = "complete"


def _as_dict(answer: BaseModel) -> dict[str, Any]:
    # The answer's JSON, exactly as the server sent it (the server renders the same model).
    return answer.model_dump(mode="json")


class WorkflowClient:
    """The original client: plain dicts and lists, progress printed to the terminal.

    Errors the server answers with raise the typed client's `WorkflowClientError` subclasses
    (`NotFound`, `Conflict`, ...), except in `get_workflow_event`, which answers None.
    `api_key` and other keyword arguments are passed to `TypedWorkflowClient`.
    """

    def __init__(self, base_url: str = DEFAULT_BASE_URL, **options: Any) -> None:
        self.base_url = base_url.rstrip("/")
        self.typed = TypedWorkflowClient(self.base_url, **options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (also done when the client is garbage-collected)."""
        self.typed.close()

    # -- events ---------------------------------------------------------------------------

    def start_workflow_with_events(self, workflow_id: str, n_steps: int) -> dict[str, Any]:
        """Start a workflow that publishes events; the server's answer as a dict."""
        return _as_dict(self.typed.start_workflow_with_events(workflow_id, n_steps))

    def get_workflow_event(self, workflow_id: str, event_key: str, timeout: float = 5) -> Any:
        """The event's value (the server waits up to `timeout` s for it to be set).

        None when it is not set in time or the request fails for any reason.
        """
        try:
            return self.typed.get_workflow_event(workflow_id, event_key, timeout).value
        except WorkflowClientError:
            return None

    def get_all_workflow_events(self, workflow_id: str) -> dict[str, Any]:
        """Every event the workflow has set: key -> latest value."""
        return self.typed.get_all_workflow_events(workflow_id).events

    def poll_until_complete(self, workflow_id: str, poll_interval: float = 1.0) -> dict[str, Any]:
        """Print the progress every `poll_interval` s until it reaches 100; return the result.

        Returns `{}` when the progress reached 100 without a result. Unlike the original,
        it also returns (the result, or `{}`) when the workflow finished without reaching
        100, e.g. a rejected or cancelled one, instead of polling for ever.
        """
        print(f"Polling workflow {workflow_id}...")
        while True:
            # Status first: once it is final, the events read after it are final too.
            finished = self.typed.get_workflow(workflow_id).status in TERMINAL_STATUSES
            events = self.get_all_workflow_events(workflow_id)
            progress = events.get(EVENT_PROGRESS)
            if progress is not None:
                print(f"  Progress: {progress}% - Status: {events.get(EVENT_STATUS)}")
            if finished:
                result: dict[str, Any] = events.get(EVENT_RESULT) or {}
                return result
            if progress == 100:
                # The result is set just after the last progress: wait a little for it.
                result = self.get_workflow_event(workflow_id, EVENT_RESULT, timeout=5)
                return result if result is not None else {}
            time.sleep(poll_interval)

    # -- messaging ------------------------------------------------------------------------

    def start_workflow_with_messaging(self, workflow_id: str, n_steps: int) -> dict[str, Any]:
        """Start a workflow that waits for an approval message; the answer as a dict."""
        return _as_dict(self.typed.start_workflow_with_messaging(workflow_id, n_steps))

    def send_approval(self, workflow_id: str, approved: bool, message: str = "") -> dict[str, Any]:
        """Send `{"approved", "message", "timestamp"}` to the workflow; the answer as a dict."""
        payload = {"approved": approved, "message": message, "timestamp": time.time()}
        return self.send_custom_message(workflow_id, payload)

    def send_custom_message(self, workflow_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """Send any JSON object on the default topic; the answer as a dict."""
        return _as_dict(self.typed.send_custom_message(workflow_id, message))

    # -- streaming ------------------------------------------------------------------------

    def start_workflow_with_streaming(self, workflow_id: str, n_steps: int) -> dict[str, Any]:
        """Start a workflow that streams its progress; the answer as a dict."""
        return _as_dict(self.typed.start_workflow_with_streaming(workflow_id, n_steps))

    def read_stream(self, workflow_id: str) -> list[Any]:
        """Every value the workflow's stream holds so far, in order (returns at once)."""
        return self.typed.read_stream_all(workflow_id).stream_values

    def stream_live_updates(
        self, workflow_id: str, poll_interval: float = 1.0, max_polls: int = 30
    ) -> None:
        """Print `  [type] message` for each new stream value until the stream is complete.

        Reads the stream at most `max_polls` times, `poll_interval` s apart, so it returns
        after about `poll_interval * max_polls` s at the latest; a read that fails for a
        passing reason (no connection, a timeout, a 503) counts as one. For values pushed the moment
        they are written, iterate `client.typed.iter_stream(workflow_id)` instead.
        """
        print(f"Streaming updates from workflow {workflow_id}...")
        seen = 0
        for _ in range(max_polls):
            try:
                page = self.typed.read_stream_all(workflow_id, offset=seen)
            except (ConnectionFailed, ClientTimeout, ServiceUnavailable):
                time.sleep(poll_interval)  # passing trouble: counts as a poll, as it did
                continue
            for value in page.stream_values:
                kind = value.get("type", "unknown") if isinstance(value, dict) else "unknown"
                text = value.get("message", str(value)) if isinstance(value, dict) else value
                print(f"  [{kind}] {text}")
                if kind == _COMPLETE:
                    print("Workflow completed!")
                    return
            seen = page.next_offset
            if page.closed:
                return
            time.sleep(poll_interval)
