"""One webhook delivery = one DBOS workflow: POST, and on failure sleep and POST again.

Durability, step by step:
- The dispatcher starts each delivery on the `comm_webhooks` queue under a workflow ID made
  of the webhook's ID and the event's identity: starting it twice (a rescan after a crash)
  finds the one already there.
- Each POST is a step without retries: its result (status code or error) is checkpointed, so
  after a crash the attempts already made are not made again, and the one in flight when the
  process died is made again (at-least-once: the receiver dedupes by `webhook-id`).
- The sleep between attempts is DBOS's durable sleep: after a restart it waits only for what
  is left of it.
- The `delivery` event, set in the workflow body after each attempt (so exactly once per
  attempt), is what GET /webhooks/{id}/deliveries shows.

The signing secret is never stored: each attempt signs with the process's COMM_WEBHOOK_SECRET.
The workflow ID is the `webhook-id` of every attempt.
"""

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from dbos import DBOS
from standardwebhooks import Webhook as Signer

from workflow_comm import __version__
from workflow_comm.metrics import (
    WEBHOOK_ATTEMPT_DURATION,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERIES,
)
from workflow_comm.webhooks.targets import TargetRefused, resolve

DELIVERY_WORKFLOW = "comm_webhook_delivery"
DELIVERY_QUEUE = "comm_webhooks"
# The event each delivery workflow keeps its attempts and outcome in.
DELIVERY_EVENT = "delivery"
USER_AGENT = f"dbos-workflow-communication/{__version__} (webhooks)"
# How long a recovered delivery waits for the server to hand it the signing secret.
CONFIGURE_WAIT_SEC = 60.0


class _Config:
    """What every attempt in this process uses: set once the app starts (configure)."""

    signer: Signer | None = None
    allow_private = False
    ready: asyncio.Event | None = None


def configure(secret: str, *, allow_private: bool) -> None:
    _Config.signer = Signer(secret)
    _Config.allow_private = allow_private
    _ready().set()


def _ready() -> asyncio.Event:
    if _Config.ready is None:
        _Config.ready = asyncio.Event()
    return _Config.ready


def backoff(attempt: int, policy: dict[str, Any]) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): doubling, capped."""
    delay: float = policy["retry_base_sec"] * 2 ** (attempt - 1)
    return min(delay, float(policy["retry_max_sec"]))


async def _post(msg_id: str, url: str, body: str, timeout: float) -> int:
    """POST `body` to `url`, signed; the answer's status code. The whole attempt (resolving,
    connecting, sending, the answer's head) is bounded by `timeout`; the answer's body is
    never read."""
    signer = _Config.signer
    assert signer is not None
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(msg_id, now, body),
    }
    async with asyncio.timeout(timeout):
        target = await resolve(url, allow_private=_Config.allow_private)
        extensions = {}
        if target.host_header is not None:
            headers["host"] = target.host_header
        if target.sni_hostname is not None:
            extensions["sni_hostname"] = target.sni_hostname
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream(
                "POST", target.url, content=body.encode(), headers=headers, extensions=extensions
            ) as response,
        ):
            return response.status_code


@DBOS.step(name="comm_webhook_attempt")
async def attempt(msg_id: str, url: str, body: str, timeout: float) -> dict[str, Any]:
    """One POST: its time, result, status code (if answered) and error (if not a 2xx)."""
    if _Config.signer is None:
        await asyncio.wait_for(_ready().wait(), CONFIGURE_WAIT_SEC)
    at = datetime.now(UTC).isoformat()
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    try:
        status_code = await _post(msg_id, url, body, timeout)
        result = "success" if 200 <= status_code < 300 else "http_error"
        if result != "success":
            error = f"the receiver answered {status_code}"
    except TargetRefused as exc:
        result, error = "refused", str(exc)
    except (TimeoutError, httpx.TimeoutException):
        result, error = "timeout", f"no answer within {timeout:g} s"
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        result, error = "connection_error", f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    WEBHOOK_ATTEMPTS.labels(result).inc()
    WEBHOOK_ATTEMPT_DURATION.observe(seconds)
    return {
        "at": at,
        "result": result,
        "status_code": status_code,
        "error": error,
        "duration_ms": round(seconds * 1000, 1),
    }


@DBOS.workflow(name=DELIVERY_WORKFLOW)
async def deliver(delivery: dict[str, Any]) -> dict[str, Any]:
    """Deliver one event to one webhook: up to max_attempts POSTs, with backoff between.

    `delivery`: url, body (the JSON text sent), event (its type), workflow_id (as the
    webhook's tenant knows it) and policy (max_attempts, retry_base_sec, retry_max_sec,
    timeout_sec), fixed when the delivery was started.
    """
    msg_id = DBOS.workflow_id
    assert msg_id is not None
    policy = delivery["policy"]
    record: dict[str, Any] = {
        "event": delivery["event"],
        "workflow_id": delivery["workflow_id"],
        "outcome": "pending",
        "attempts": [],
        "next_attempt_at": None,
    }
    await DBOS.set_event_async(DELIVERY_EVENT, record)
    for number in range(1, policy["max_attempts"] + 1):
        result = await attempt(msg_id, delivery["url"], delivery["body"], policy["timeout_sec"])
        record["attempts"].append(result)
        last = number == policy["max_attempts"]
        if result["result"] == "success" or last:
            record["outcome"] = "delivered" if result["result"] == "success" else "failed"
            record["next_attempt_at"] = None
            # Written in the workflow body: exactly once, even if the process dies here.
            await DBOS.set_event_async(DELIVERY_EVENT, record)
            WEBHOOK_DELIVERIES.labels(record["outcome"]).inc()
            return record
        delay = backoff(number, policy)
        record["outcome"] = "retrying"
        record["next_attempt_at"] = datetime.fromtimestamp(time.time() + delay, UTC).isoformat()
        await DBOS.set_event_async(DELIVERY_EVENT, record)
        # Durable: after a restart, only what is left of the delay is waited.
        await DBOS.sleep_async(delay)
    raise AssertionError("unreachable: the last attempt returns")
