"""The dispatcher: finds what happened in DBOS's records and starts a delivery per webhook.

Why it cannot lose an event. Nothing is kept in memory between "it happened" and "its
delivery is durable": the events are DBOS's own committed rows (a workflow's status row, a
set_event's history row, a close_stream's marker, a message), read by time
(dbos_internals.webhook_scan_queries). Each scan reads every event type from its cursor less
LOOKBACK_MS, matches each event against the webhooks, and starts each delivery workflow under
a deterministic ID (webhook ID + event identity). Only once every start has returned (the
delivery is then a row of DBOS's) is the cursor moved, and saved in `comm_webhook_cursors`.
A crash anywhere in between leaves the cursor behind what was started: the next scan (after
a restart, or on another instance) finds the same events, and starting an existing workflow
ID is a no-op. The cursor may lag; it never runs ahead of a delivery.

The lookback covers rows that commit a little after the time they carry (a transaction
stamps its time before it commits; instances' clocks differ): an event that becomes visible
more than LOOKBACK_MS after its own time, between two scans, is the one thing it could miss.

Every instance runs a dispatcher; they start the same IDs, so each delivery runs once.
"""

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, Queue, SetWorkflowID

from workflow_comm import service
from workflow_comm.auth import TENANT_SEPARATOR
from workflow_comm.dbos_internals import decode_value, webhook_scan_queries
from workflow_comm.metrics import WEBHOOK_ENQUEUED
from workflow_comm.settings import Settings
from workflow_comm.webhooks.delivery import DELIVERY_WORKFLOW, deliver
from workflow_comm.webhooks.models import EVENT_TYPES
from workflow_comm.webhooks.store import Webhook, WebhookStore
from workflow_comm.workflows import KIND_BY_FUNCTION

logger = logging.getLogger("workflow_comm")

LOOKBACK_MS = 5_000
ROWS_PER_SCAN = 1_000
# A cursor is saved once it has moved this far: it may lag (a restart then reads a little
# more again), and an idle server does not write every scan.
CURSOR_SAVE_MS = 10_000
# Every delivery workflow's ID starts so, then the webhook's ID (see delivery_id).
DELIVERY_ID_PREFIX = "whd-"

for _event in EVENT_TYPES:
    WEBHOOK_ENQUEUED.labels(_event)


def delivery_prefix(webhook_id: str) -> str:
    """The workflow-ID prefix of every delivery of one webhook."""
    return f"{DELIVERY_ID_PREFIX}{webhook_id}-"


@dataclass(frozen=True, slots=True)
class Happened:
    """One event, as read from DBOS's records."""

    event: str
    workflow_id: str  # the stored ID
    name: str | None
    at: int  # epoch ms
    identity: str
    data: dict[str, Any]
    app: str | None  # the DBOS application the workflow belongs to (None: unclaimed)


def read_event(event: str, row: tuple[Any, ...]) -> Happened:
    workflow_id, name, at, identity, detail, value, serialization, app = row
    data: dict[str, Any]
    if event == "workflow.started":
        data = {}
    elif event == "workflow.finished":
        data = {"status": detail}
    elif event == "event.set":
        data = {"key": detail, "value": decode_value(value, serialization)}
    elif event == "stream.closed":
        data = {"key": detail}
    else:
        data = {"topic": detail, "message": decode_value(value, serialization)}
    identity = f"{event}|{workflow_id}|{identity}"
    return Happened(event, workflow_id, name, int(at), identity, data, app)


def shown_id(webhook: Webhook, stored: str) -> str | None:
    """The workflow's ID as the webhook's tenant knows it, or None if not theirs."""
    if webhook.tenant is None:
        return stored
    prefix = webhook.tenant + TENANT_SEPARATOR
    return stored.removeprefix(prefix) if stored.startswith(prefix) else None


def matches(webhook: Webhook, happened: Happened) -> str | None:
    """The workflow ID to show if `webhook` wants the event, else None."""
    # From the second it was registered on: DBOS stamps some rows (on SQLite) to the second.
    if happened.event not in webhook.events or happened.at < webhook.created_at // 1000 * 1000:
        return None
    public = shown_id(webhook, happened.workflow_id)
    # Only workflows the routes serve (COMM_SERVE_APPS), as everywhere else.
    if public is None or not service.served.serves(happened.app):
        return None
    if webhook.workflow_id_prefix is not None and not public.startswith(webhook.workflow_id_prefix):
        return None
    kind = KIND_BY_FUNCTION.get(happened.name or "")
    if webhook.kind is not None and kind != webhook.kind:
        return None
    return public


def delivery_id(webhook: Webhook, happened: Happened) -> str:
    digest = hashlib.sha256(happened.identity.encode()).hexdigest()[:32]
    return f"{delivery_prefix(webhook.id)}{digest}"


def payload(happened: Happened, public_id: str) -> str:
    """The JSON body POSTed for an event: its type, time and data."""
    body = {
        "type": happened.event,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(happened.at / 1000))
        + f".{happened.at % 1000:03d}Z",
        "data": {
            "workflow_id": public_id,
            "kind": KIND_BY_FUNCTION.get(happened.name or ""),
            **happened.data,
        },
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


class Dispatcher:
    def __init__(self, settings: Settings, store: WebhookStore, queue: Queue) -> None:
        self._settings = settings
        self._store = store
        self._queue = queue
        self._queries = webhook_scan_queries(store.is_sqlite)
        self._cursors: dict[str, int] = {}
        self._saved: dict[str, int] | None = None  # as in the database; None: not read yet
        # Deliveries started lately (ID -> the event's time): overlapping scans skip them.
        self._started: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be away: scan again later
                logger.warning("webhook scan failed; retrying", exc_info=True)
            await asyncio.sleep(self._settings.webhook_scan_interval_sec)

    async def scan(self) -> None:
        """Start a delivery for every new event and every webhook that wants it."""
        now = int(time.time() * 1000)
        if self._saved is None:
            self._saved = await self._store.cursors()
            self._cursors = dict(self._saved)
        webhooks = await self._store.all()
        for event, sql in self._queries.items():
            cursor = self._cursors.get(event)
            if cursor is None:
                # A first start: from now on, not the whole history.
                cursor = now
            wanting = [w for w in webhooks if event in w.events]
            if wanting:
                since = cursor - LOOKBACK_MS
                rows = await self._store.rows(
                    sql, {"since": since, "skip_name": DELIVERY_WORKFLOW, "limit": ROWS_PER_SCAN}
                )
                for row in rows:
                    await self._dispatch(read_event(event, row), wanting)
                if len(rows) == ROWS_PER_SCAN:
                    # More than a page: go on from the last one seen (itself read again).
                    now_for_event = int(rows[-1][2]) + LOOKBACK_MS
                else:
                    now_for_event = now
            else:
                now_for_event = now
            moved = max(cursor, now_for_event)
            self._cursors[event] = moved
            # Saved only after every delivery up to it was started: it never runs ahead.
            if moved - self._saved.get(event, 0) >= CURSOR_SAVE_MS:
                await self._store.save_cursor(event, moved)
                self._saved[event] = moved
        horizon = min(self._cursors.values(), default=now) - 2 * LOOKBACK_MS
        for key in [k for k, at in self._started.items() if at < horizon]:
            del self._started[key]

    async def _dispatch(self, happened: Happened, webhooks: list[Webhook]) -> None:
        for webhook in webhooks:
            public = matches(webhook, happened)
            if public is None:
                continue
            workflow_id = delivery_id(webhook, happened)
            if workflow_id in self._started:
                continue
            settings = self._settings
            delivery = {
                "webhook_id": webhook.id,
                "url": webhook.url,
                "event": happened.event,
                "workflow_id": public,
                "body": payload(happened, public),
                "policy": {
                    "max_attempts": settings.webhook_max_attempts,
                    "retry_base_sec": settings.webhook_retry_base_sec,
                    "retry_max_sec": settings.webhook_retry_max_sec,
                    "timeout_sec": settings.webhook_timeout_sec,
                },
            }
            # The same ID for the same webhook and event: a repeat finds the existing one.
            with SetWorkflowID(workflow_id):
                await self._queue.enqueue_async(deliver, delivery)
            self._started[workflow_id] = happened.at
            WEBHOOK_ENQUEUED.labels(happened.event).inc()
            DBOS.logger.debug("webhook delivery %s started", workflow_id)
