"""The bodies of the /webhooks routes, and the event types a webhook may ask for."""

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workflow_comm.names import WORKFLOW_ID_MAX_LEN, WORKFLOW_ID_PATTERN, WorkflowKind
from workflow_comm.webhooks.targets import URL_MAX_LEN, TargetRefused, check_url

WebhookEvent = Literal[
    "workflow.started", "workflow.finished", "event.set", "stream.closed", "message.received"
]
EVENT_TYPES: tuple[str, ...] = get_args(WebhookEvent)
DeliveryOutcome = Literal["pending", "retrying", "delivered", "failed"]
# The most deliveries GET /webhooks/{id}/deliveries returns at once.
DELIVERIES_LIST_DEFAULT = 50
DELIVERIES_LIST_MAX = 500


class WebhookFilter(BaseModel):
    """Which workflows' events: by ID prefix (as the caller knows the IDs) and kind."""

    model_config = ConfigDict(extra="forbid")

    workflow_id_prefix: str | None = Field(
        default=None, min_length=1, max_length=WORKFLOW_ID_MAX_LEN, pattern=WORKFLOW_ID_PATTERN
    )
    kind: WorkflowKind | None = None


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=URL_MAX_LEN,
        description="An http:// or https:// URL without credentials, on a public address.",
    )
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(EVENT_TYPES))
    filter: WebhookFilter = Field(default_factory=WebhookFilter)

    @field_validator("url")
    @classmethod
    def _url_form(cls, url: str) -> str:
        try:
            check_url(url)
        except TargetRefused as exc:
            raise ValueError(str(exc)) from None
        return url

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[WebhookEvent]) -> list[WebhookEvent]:
        return list(dict.fromkeys(events))


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[WebhookEvent]
    filter: WebhookFilter
    created_at: datetime


class WebhooksPublic(BaseModel):
    data: list[WebhookPublic]
    count: int


class AttemptPublic(BaseModel):
    at: datetime
    result: Literal["success", "http_error", "timeout", "connection_error", "refused"]
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryPublic(BaseModel):
    """One event sent to one webhook: its `webhook-id` header, attempts and outcome."""

    id: str = Field(description="The delivery's webhook-id header (the same on every attempt).")
    event: WebhookEvent | None
    workflow_id: str | None = Field(description="The workflow the event is about.")
    outcome: DeliveryOutcome
    attempts: list[AttemptPublic]
    next_attempt_at: datetime | None
    created_at: datetime


class DeliveriesPublic(BaseModel):
    data: list[DeliveryPublic]
    count: int


def delivery_public(
    delivery_id: str, created_at: int, record: dict[str, Any] | None
) -> DeliveryPublic:
    """A delivery as its webhook's owner sees it, from its `delivery` event (None: not
    started yet, still on the queue)."""
    record = record or {}
    return DeliveryPublic(
        id=delivery_id,
        event=record.get("event"),
        workflow_id=record.get("workflow_id"),
        outcome=record.get("outcome", "pending"),
        attempts=record.get("attempts", []),
        next_attempt_at=record.get("next_attempt_at"),
        created_at=datetime.fromtimestamp(created_at / 1000).astimezone(),
    )
