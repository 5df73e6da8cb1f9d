"""Outbound webhooks: register a URL for workflow events, list, delete, see deliveries.

The machinery is in workflow_comm/webhooks/ (store, dispatcher, delivery workflow). This
router's lifespan starts it: the store's tables, the delivery queue, the dispatcher.
"""

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from dbos import DBOS
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection

from workflow_comm.auth import current_caller
from workflow_comm.dbos_internals import decode_value, webhook_deliveries_query
from workflow_comm.errors import error_responses
from workflow_comm.settings import Settings, SettingsDep
from workflow_comm.webhooks import delivery
from workflow_comm.webhooks.dispatcher import Dispatcher, delivery_prefix
from workflow_comm.webhooks.models import (
    DELIVERIES_LIST_DEFAULT,
    DELIVERIES_LIST_MAX,
    DeliveriesPublic,
    WebhookCreate,
    WebhookFilter,
    WebhookPublic,
    WebhooksPublic,
    delivery_public,
)
from workflow_comm.webhooks.store import Webhook, WebhookStore, open_store
from workflow_comm.webhooks.targets import TargetRefused, resolve

NOT_ENABLED = "Webhooks are not enabled on this server: set COMM_WEBHOOK_SECRET to enable them."
WEBHOOK_ID_PATTERN = r"^wh_[0-9a-f]{16}$"
# How often the delivery queue is polled for deliveries to run (DBOS's default is 1 s).
QUEUE_POLL_SEC = 0.2

WebhookId = Annotated[str, Path(pattern=WEBHOOK_ID_PATTERN, description="A webhook's ID.")]


@asynccontextmanager
async def webhooks_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """With COMM_WEBHOOK_SECRET set: the store (its tables created if missing), the delivery
    queue, and the dispatcher, from startup to shutdown. Runs once DBOS is launched."""
    settings: Settings = app.state.settings
    app.state.webhook_store = None
    if settings.webhook_secret is None:
        yield
        return
    delivery.configure(
        settings.webhook_secret.get_secret_value(), allow_private=settings.webhook_allow_private
    )
    store = await open_store(settings.system_database_url)
    queue = await DBOS.register_queue_async(
        delivery.DELIVERY_QUEUE,
        worker_concurrency=settings.webhook_concurrency,
        polling_interval_sec=QUEUE_POLL_SEC,
        on_conflict="always_update",
    )
    dispatcher = Dispatcher(settings, store, queue)
    dispatcher.start()
    app.state.webhook_store = store
    try:
        yield
    finally:
        await dispatcher.stop()
        await store.close()


async def webhook_store(connection: HTTPConnection) -> WebhookStore:
    """Dependency: the app's webhook store; 404 if no COMM_WEBHOOK_SECRET is set."""
    # Unset until the lifespan ran, None when webhooks are off.
    store: WebhookStore | None = getattr(connection.app.state, "webhook_store", None)
    if store is None:
        raise HTTPException(404, NOT_ENABLED)
    return store


StoreDep = Annotated[WebhookStore, Depends(webhook_store)]

# Authorization (a write key for POST and DELETE) and the common error answers come where the
# router is included (app.py).
router = APIRouter(
    prefix="/webhooks",
    tags=["webhooks"],
    lifespan=webhooks_lifespan,
    responses=error_responses(
        {
            403: "A read key (registering and deleting need a write key), or a token",
            404: "Unknown webhook, or webhooks are not enabled (COMM_WEBHOOK_SECRET)",
        }
    ),
)


def public(webhook: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=webhook.id,
        url=webhook.url,
        events=list(webhook.events),  # type: ignore[arg-type]  # checked when registered
        filter=WebhookFilter(
            workflow_id_prefix=webhook.workflow_id_prefix,
            kind=webhook.kind,  # type: ignore[arg-type]
        ),
        created_at=datetime.fromtimestamp(webhook.created_at / 1000).astimezone(),
    )


def visible(webhook: Webhook) -> bool:
    """A tenant's key sees its tenant's webhooks; an operator's key sees them all."""
    tenant = current_caller().tenant
    return tenant is None or webhook.tenant == tenant


async def find(store: WebhookStore, webhook_id: str) -> Webhook:
    for webhook in await store.all():
        if webhook.id == webhook_id and visible(webhook):
            return webhook
    raise HTTPException(404, f"No webhook {webhook_id!r}.")


@router.post("", status_code=201, responses=error_responses({409: "Too many webhooks"}))
async def create_webhook(
    body: WebhookCreate, store: StoreDep, settings: SettingsDep
) -> WebhookPublic:
    """Register a URL to be POSTed each event of the given types, signed (Standard Webhooks)."""
    try:
        await resolve(body.url, allow_private=settings.webhook_allow_private)
    except TargetRefused as exc:
        error = {"type": "value_error", "loc": ("body", "url"), "msg": str(exc), "input": body.url}
        raise RequestValidationError([error]) from None
    tenant = current_caller().tenant
    owned = [w for w in await store.all() if w.tenant == tenant]
    if len(owned) >= settings.webhook_max_per_tenant:
        raise HTTPException(
            409,
            f"At most {settings.webhook_max_per_tenant} webhooks per tenant "
            "(COMM_WEBHOOK_MAX_PER_TENANT): delete one first.",
        )
    webhook = Webhook(
        id=f"wh_{secrets.token_hex(8)}",
        tenant=tenant,
        url=body.url,
        events=tuple(body.events),
        workflow_id_prefix=body.filter.workflow_id_prefix,
        kind=body.filter.kind,
        created_at=int(time.time() * 1000),
    )
    await store.add(webhook)
    return public(webhook)


@router.get("")
async def list_webhooks(store: StoreDep) -> WebhooksPublic:
    """The webhooks the caller's key may see, oldest first."""
    found = [public(w) for w in await store.all() if visible(w)]
    return WebhooksPublic(data=found, count=len(found))


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: WebhookId, store: StoreDep) -> Response:
    """Stop sending to a webhook; its deliveries not yet finished are cancelled."""
    webhook = await find(store, webhook_id)
    await store.remove(webhook.id)
    unfinished = await DBOS.list_workflows_async(
        workflow_id_prefix=delivery_prefix(webhook.id),
        status=["ENQUEUED", "PENDING"],
        load_input=False,
        load_output=False,
    )
    for status in unfinished:
        await DBOS.cancel_workflow_async(status.workflow_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries")
async def list_deliveries(
    webhook_id: WebhookId,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=DELIVERIES_LIST_MAX)] = DELIVERIES_LIST_DEFAULT,
) -> DeliveriesPublic:
    """A webhook's deliveries, newest first: each one's attempts and outcome."""
    webhook = await find(store, webhook_id)
    params = {"prefix": delivery_prefix(webhook.id), "key": delivery.DELIVERY_EVENT}
    rows = await store.rows(webhook_deliveries_query(store.is_sqlite), {**params, "limit": limit})
    found = [
        delivery_public(workflow_id, int(created_at), decode_value(value, serialization))
        for workflow_id, _, created_at, value, serialization in rows
    ]
    return DeliveriesPublic(data=found, count=len(found))
