"""Request and response bodies. Field names of the original API are kept; new ones are added."""

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workflow_comm.names import (
    IDEMPOTENCY_KEY_MAX_LEN,
    TOKEN_TTL_DEFAULT,
    TOKEN_TTL_MAX,
    TOKEN_TTL_MIN,
    TOPIC_MAX_LEN,
    TOPIC_NOTIFICATION,
    TOPIC_PATTERN,
    WORKFLOW_ID_MAX_LEN,
    WORKFLOW_ID_PATTERN,
    TokenScope,
    WorkflowKind,
)


class ErrorPublic(BaseModel):
    """Every 4xx/5xx answer: a JSON object with a readable `detail`."""

    detail: str | list[dict[str, Any]] = Field(
        description="What went wrong; a list of field errors for a 422."
    )


class StartedWorkflow(BaseModel):
    """Fields every start endpoint returns."""

    workflow_id: str
    message: str
    kind: WorkflowKind
    created: bool = Field(
        description="False when a workflow of the same kind already had this ID; "
        "the response then describes that existing workflow."
    )
    status_endpoint: str = Field(description="GET it for the workflow's status and result.")


class EventEndpoints(BaseModel):
    progress: str
    status: str
    result: str
    all_events: str


class EventsWorkflowStarted(StartedWorkflow):
    query_endpoints: EventEndpoints


class MessagingWorkflowStarted(StartedWorkflow):
    send_approval: str = Field(description="Where to POST the approval message.")
    note: str
    topic: str
    approval_timeout: float


class StreamingWorkflowStarted(StartedWorkflow):
    read_stream: str
    stream_key: str
    expected_entries: int = Field(description="3 + 2 * n_steps: the stream's length once closed.")


class EventPublic(BaseModel):
    workflow_id: str
    event_key: str
    value: Any


class EventsPublic(BaseModel):
    workflow_id: str
    events: dict[str, Any]


class MessageSent(BaseModel):
    workflow_id: str
    message: str
    payload: dict[str, Any]
    topic: str
    idempotency_key: str | None = None


class StreamPage(BaseModel):
    workflow_id: str
    stream_key: str
    stream_values: list[Any]
    total_messages: int = Field(description="Number of values in this response.")
    offset: int = Field(description="Offset of the first value in this response.")
    next_offset: int = Field(
        description="Offset to ask for next: always offset + total_messages. An offset past "
        "the end of the stream returns no values and next_offset = offset; the stream's "
        "length is not reported."
    )
    has_more: bool = Field(description="More values are already written past this page.")
    closed: bool = Field(
        description="True when this page ends the stream: it was closed, or its workflow "
        "finished, so no value will ever follow next_offset."
    )


WorkflowStatusName = Literal[
    "PENDING",
    "ENQUEUED",
    "DELAYED",
    "SUCCESS",
    "ERROR",
    "CANCELLED",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
]


class WorkflowPublic(BaseModel):
    workflow_id: str
    kind: WorkflowKind | None = Field(description="None for a workflow this server did not define.")
    status: WorkflowStatusName
    name: str
    created_at: int | None = Field(description="Unix epoch milliseconds.")
    updated_at: int | None
    completed_at: int | None
    executor_id: str | None
    application_version: str | None
    result: Any = None
    error: str | None = None
    application_name: str | None = Field(
        default=None,
        description="The DBOS application the workflow belongs to (None: unclaimed, any "
        "application's). See COMM_SERVE_APPS.",
    )


class WorkflowsPublic(BaseModel):
    data: list[WorkflowPublic]
    count: int


class EventKeysPublic(BaseModel):
    """The event keys a workflow has set so far, sorted."""

    workflow_id: str
    data: list[str]
    count: int


class StreamKeyPublic(BaseModel):
    key: str
    length: int = Field(description="Values written so far (offsets 0 to length - 1).")
    closed: bool = Field(
        description="No value will follow: the workflow closed the stream, or it finished."
    )


class StreamKeysPublic(BaseModel):
    """The streams a workflow has written to so far, by key."""

    workflow_id: str
    data: list[StreamKeyPublic]
    count: int


class WorkflowAction(BaseModel):
    workflow_id: str
    message: str
    status: WorkflowStatusName


class DatabaseHealth(BaseModel):
    backend: Literal["postgres", "sqlite"]
    reachable: bool
    latency_ms: float | None


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    memory_mb: float
    threads: int
    uptime_seconds: float
    database: DatabaseHealth
    executor_id: str
    application_version: str
    version: str


class SocketSend(BaseModel):
    """A WebSocket frame from the client: send `payload` to the workflow on `topic`."""

    type: Literal["send"]
    id: str | int | None = Field(default=None, description="Echoed in the ack or error.")
    topic: str = Field(
        default=TOPIC_NOTIFICATION, min_length=1, max_length=TOPIC_MAX_LEN, pattern=TOPIC_PATTERN
    )
    payload: dict[str, Any]
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LEN
    )


class TokenCreate(BaseModel):
    """POST /tokens: a token for one workflow, or for every workflow whose ID has a prefix."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=WORKFLOW_ID_MAX_LEN,
        pattern=WORKFLOW_ID_PATTERN,
        description="The one workflow the token reaches (it need not exist yet).",
        examples=["my-wf-1"],
    )
    workflow_id_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=WORKFLOW_ID_MAX_LEN,
        pattern=WORKFLOW_ID_PATTERN,
        description="Instead of workflow_id: every workflow whose ID starts with this.",
    )
    scopes: list[TokenScope] = Field(
        default=["read"],
        min_length=1,
        max_length=2,
        description='["read"], or ["read", "send"] to send messages too.',
    )
    ttl_seconds: int = Field(
        default=TOKEN_TTL_DEFAULT,
        ge=TOKEN_TTL_MIN,
        le=TOKEN_TTL_MAX,
        description="How long the token is valid.",
    )

    @field_validator("scopes")
    @classmethod
    def _read_and_no_repeats(cls, scopes: list[TokenScope]) -> list[TokenScope]:
        if "read" not in scopes or len(set(scopes)) != len(scopes):
            raise ValueError('scopes must be ["read"] or ["read", "send"]')
        return scopes

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.workflow_id is None) == (self.workflow_id_prefix is None):
            raise ValueError("Give exactly one of workflow_id and workflow_id_prefix")
        return self


class TokenPublic(BaseModel):
    token: str = Field(
        description="Send it as `Authorization: Bearer <token>`, or `?token=` on a live endpoint."
    )
    expires_at: datetime = Field(description="When the token stops being accepted (UTC).")
