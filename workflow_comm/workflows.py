"""The demo workflows: one per communication mechanism, and a request/reply service. No HTTP.

Every set_event, write_stream and close_stream call sits in a workflow body, never in a step:
DBOS checkpoints each one, so after a crash the recovered workflow skips the ones already
done and each event and stream entry is written exactly once. (Inside a step they would be
at-least-once: a retried step writes again.)
"""

import asyncio
from datetime import UTC, datetime
from typing import Any

from dbos import DBOS

from workflow_comm.metrics import count_finished
from workflow_comm.names import (
    CORRELATION_ID_MAX_LEN,
    EVENT_MESSAGE,
    EVENT_PROGRESS,
    EVENT_REQUESTS_SERVED,
    EVENT_RESULT,
    EVENT_STATUS,
    FIBONACCI_N_MAX,
    REQUEST_BODY,
    REQUEST_CORRELATION,
    SERVICE_MAX_REQUESTS,
    STATUS_APPROVED,
    STATUS_COMPLETED,
    STATUS_REJECTED,
    STATUS_STARTED,
    STATUS_TIMED_OUT,
    STATUS_WAITING,
    STREAM_PROGRESS,
    TOPIC_NOTIFICATION,
    TOPIC_REQUEST,
    WorkflowKind,
    reply_event,
    status_processing,
)


def fibonacci(n: int) -> int:
    """F(n), iteratively: real work, cheap enough to never hold the event loop."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def percent_done(step: int, n_steps: int) -> int:
    return step * 100 // n_steps


def is_approval(message: Any) -> bool:
    """Only `{"approved": true}` approves; anything else is a rejection."""
    return isinstance(message, dict) and message.get("approved") is True


def _now() -> str:
    return datetime.now(UTC).isoformat()


@DBOS.step()
async def compute_step(n: int, step_seconds: float) -> int:
    """One step of work: wait `step_seconds` (without blocking the loop), then F(n).

    A step is checkpointed: after a crash, finished steps are not run again.
    """
    await asyncio.sleep(step_seconds)
    return fibonacci(n)


async def _run_steps(n_steps: int, step_seconds: float) -> list[dict[str, int]]:
    """Run the steps, publishing `status` and `progress` events from the workflow body."""
    results = []
    for step in range(1, n_steps + 1):
        await DBOS.set_event_async(EVENT_STATUS, status_processing(step))
        value = await compute_step(step, step_seconds)
        results.append({"n": step, "fibonacci": value})
        await DBOS.set_event_async(EVENT_PROGRESS, percent_done(step, n_steps))
    return results


@DBOS.workflow()
@count_finished("events")
async def workflow_with_events(n_steps: int, step_seconds: float) -> dict[str, Any]:
    """Events: publish `status`, `progress` (0..100) and finally `result`."""
    await DBOS.set_event_async(EVENT_STATUS, STATUS_STARTED)
    await DBOS.set_event_async(EVENT_PROGRESS, 0)
    results = await _run_steps(n_steps, step_seconds)
    result = {"total_steps": n_steps, "results": results}
    # `result` before the final `status`, so whoever sees "completed" can read the result.
    await DBOS.set_event_async(EVENT_RESULT, result)
    await DBOS.set_event_async(EVENT_STATUS, STATUS_COMPLETED)
    return result


@DBOS.workflow()
@count_finished("messaging")
async def workflow_with_messaging(
    n_steps: int, step_seconds: float, approval_timeout: float
) -> dict[str, Any]:
    """Messaging: wait for a message on `notification`; run the steps only if approved.

    The message may arrive before recv is called: DBOS keeps it in the workflow's mailbox.
    The recv deadline is durable: after a crash and a late restart it times out, not waits anew.
    """
    await DBOS.set_event_async(EVENT_STATUS, STATUS_WAITING)
    message = await DBOS.recv_async(TOPIC_NOTIFICATION, timeout_seconds=approval_timeout)
    if message is None:
        result: dict[str, Any] = {"outcome": STATUS_TIMED_OUT, "approved": False, "message": None}
        await DBOS.set_event_async(EVENT_RESULT, result)
        await DBOS.set_event_async(EVENT_STATUS, STATUS_TIMED_OUT)
        return result
    # Published so a client can see that its message arrived, and what it said.
    await DBOS.set_event_async(EVENT_MESSAGE, message)
    if not is_approval(message):
        result = {"outcome": STATUS_REJECTED, "approved": False, "message": message}
        await DBOS.set_event_async(EVENT_RESULT, result)
        await DBOS.set_event_async(EVENT_STATUS, STATUS_REJECTED)
        return result
    await DBOS.set_event_async(EVENT_STATUS, STATUS_APPROVED)
    await DBOS.set_event_async(EVENT_PROGRESS, 0)
    results = await _run_steps(n_steps, step_seconds)
    result = {
        "outcome": STATUS_COMPLETED,
        "approved": True,
        "message": message,
        "total_steps": n_steps,
        "results": results,
    }
    await DBOS.set_event_async(EVENT_RESULT, result)
    await DBOS.set_event_async(EVENT_STATUS, STATUS_COMPLETED)
    return result


def stream_entry_count(n_steps: int) -> int:
    """start + (progress, result) per step + summary + complete."""
    return 3 + 2 * n_steps


@DBOS.workflow()
@count_finished("streaming")
async def workflow_with_streaming(n_steps: int, step_seconds: float) -> dict[str, Any]:
    """Streaming: append an ordered log to `progress_stream`, then close it."""
    await DBOS.write_stream_async(
        STREAM_PROGRESS,
        {"type": "start", "total_steps": n_steps, "message": "Starting", "timestamp": _now()},
    )
    results = []
    for step in range(1, n_steps + 1):
        await DBOS.write_stream_async(
            STREAM_PROGRESS,
            {
                "type": "progress",
                "step": step,
                "total_steps": n_steps,
                "percent": percent_done(step - 1, n_steps),
                "message": f"Processing step {step}/{n_steps}",
                "timestamp": _now(),
            },
        )
        value = await compute_step(step, step_seconds)
        results.append({"n": step, "fibonacci": value})
        await DBOS.write_stream_async(
            STREAM_PROGRESS,
            {"type": "result", "step": step, "n": step, "fibonacci": value, "timestamp": _now()},
        )
    await DBOS.write_stream_async(
        STREAM_PROGRESS,
        {"type": "summary", "total_steps": n_steps, "results": results, "timestamp": _now()},
    )
    await DBOS.write_stream_async(
        STREAM_PROGRESS, {"type": "complete", "message": "Done", "timestamp": _now()}
    )
    await DBOS.close_stream_async(STREAM_PROGRESS)
    return {
        "total_steps": n_steps,
        "results": results,
        "stream_entries": stream_entry_count(n_steps),
    }


# The service's reply to anything but {"n": k}.
REQUEST_ERROR = f'a request is {{"n": k}} with k an integer from 0 to {FIBONACCI_N_MAX}'


def requested_n(body: Any) -> int | None:
    """k of a valid request {"n": k}; None for anything else."""
    n = body.get("n") if isinstance(body, dict) else None
    if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= FIBONACCI_N_MAX:
        return n
    return None


@DBOS.workflow()
@count_finished("service")
async def workflow_with_service(idle_timeout: float, step_seconds: float) -> dict[str, Any]:
    """Request/reply: answer each request on `request` until idle for `idle_timeout` seconds.

    A request is {"correlation_id": c, "body": {"n": k}}; its reply {"n": k, "fibonacci": F(k)}
    is set as event `reply:<c>`, and `requests_served` counts the replies. recv consumes each
    message once (DBOS records which recv took it), and the reply is set in the workflow body,
    so after a crash the recovered run neither takes a request again nor replies twice.
    """
    served = 0
    await DBOS.set_event_async(EVENT_REQUESTS_SERVED, served)
    while served < SERVICE_MAX_REQUESTS:
        request = await DBOS.recv_async(TOPIC_REQUEST, timeout_seconds=idle_timeout)
        if request is None:
            break  # idle: the service ends
        correlation = request.get(REQUEST_CORRELATION) if isinstance(request, dict) else None
        if not isinstance(correlation, str) or len(correlation) > CORRELATION_ID_MAX_LEN:
            continue  # not a request envelope: nobody waits for a reply
        n = requested_n(request.get(REQUEST_BODY))
        reply: dict[str, Any] = {"error": REQUEST_ERROR}
        if n is not None and step_seconds > 0:
            # Slow work is a step: checkpointed, so a recovered run does not do it again.
            reply = {"n": n, "fibonacci": await compute_step(n, step_seconds)}
        elif n is not None:
            # Quick and deterministic: in the body, one database write fewer per request.
            reply = {"n": n, "fibonacci": fibonacci(n)}
        served += 1
        # The count before the reply, so whoever has the reply sees it counted.
        await DBOS.set_event_async(EVENT_REQUESTS_SERVED, served)
        await DBOS.set_event_async(reply_event(correlation), reply)
    return {EVENT_REQUESTS_SERVED: served}


# DBOS records a workflow by its function's name; this maps it back to the URL's kind.
KIND_BY_FUNCTION: dict[str, WorkflowKind] = {
    workflow_with_events.__name__: "events",
    workflow_with_messaging.__name__: "messaging",
    workflow_with_streaming.__name__: "streaming",
    workflow_with_service.__name__: "service",
}
FUNCTION_BY_KIND: dict[WorkflowKind, str] = {kind: fn for fn, kind in KIND_BY_FUNCTION.items()}
