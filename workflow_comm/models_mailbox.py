"""Bodies of the mailbox, timeline and request/reply routes (added beside models.py)."""

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from workflow_comm.models import StartedWorkflow


class MessagePublic(BaseModel):
    """One message sent to a workflow, as DBOS keeps it in its `notifications` table."""

    message_id: str = Field(
        description="DBOS's message_uuid: the key plus '::<workflow>', or random."
    )
    topic: str | None = Field(description="None: sent without a topic (DBOS's own null topic).")
    payload: Any = Field(description="The message; None if not stored as JSON this server reads.")
    sent_at: int = Field(description="Unix epoch milliseconds (DBOS's created_at_epoch_ms).")
    consumed: bool = Field(description="A recv of the workflow has taken it.")
    consumed_at: int | None = Field(
        description="When the recv that took it was recorded (epoch ms), if DBOS recorded which "
        "recv it was (consumed_by_function_id; not for messages consumed before DBOS kept it)."
    )
    consumed_by_step: int | None = Field(
        description="The function ID of the recv that took it (DBOS's consumed_by_function_id)."
    )
    idempotency_key: str | None = Field(
        description="The Idempotency-Key it was sent with; None if sent without one."
    )


class MessagesPublic(BaseModel):
    """A page of a workflow's mailbox, oldest first."""

    workflow_id: str
    data: list[MessagePublic]
    count: int = Field(description="Messages in this page.")
    offset: int
    has_more: bool = Field(description="More messages match past this page.")


class TimelineEntry(BaseModel):
    """One thing that happened to a workflow. `type` says which fields are set."""

    type: Literal[
        "created",
        "step",
        "event",
        "message_sent",
        "message_received",
        "recv_timeout",
        "send",
        "stream_write",
        "stream_close",
        "operation",
        "recovery",
        "status",
        "end",
    ]
    at: int | None = Field(description="Unix epoch milliseconds; None if DBOS keeps no time.")
    id: str = Field(description="Stable within the workflow: the live endpoint's resume point.")
    name: str | None = None
    step_id: int | None = Field(default=None, description="DBOS's function_id of the operation.")
    end: int | None = Field(default=None, description="When the step was recorded done (ms).")
    duration_ms: int | None = None
    output: Any = None
    error: str | None = None
    key: str | None = Field(default=None, description="Event key or stream key.")
    value: Any = Field(default=None, description="Event value or stream value (if short).")
    preview: str | None = Field(
        default=None, description="The stored JSON's first characters, when too long to show."
    )
    version: int | None = Field(default=None, description="An event change's version.")
    offset: int | None = Field(default=None, description="A stream write's offset.")
    topic: str | None = None
    message_id: str | None = None
    executor_id: str | None = None
    status: str | None = None
    attempts: int | None = Field(default=None, description="DBOS's recovery_attempts.")

    @model_serializer(mode="wrap")
    # No return annotation on purpose: pydantic then keeps the model's own schema for the
    # OpenAPI description (an annotated dict or Any would replace it with a bare object).
    def _fields_of_its_type(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """Each entry carries the fields its type has; other fields (None) are left out.
        `at` is always there (null when DBOS keeps no time, as for `recovery`), and so is a
        value or output that is null: an event set to None still says `"value": null`."""
        kept = {"type", "at", "id"}
        if self.type in ("event", "message_sent", "stream_write") and self.preview is None:
            kept.add("value")
        if self.type in ("step", "end") and self.error is None:
            kept.add("output")
        dumped: dict[str, Any] = handler(self)
        return {k: v for k, v in dumped.items() if v is not None or k in kept}


class TimelinePublic(BaseModel):
    """A page of a workflow's timeline, in order."""

    workflow_id: str
    data: list[TimelineEntry]
    count: int = Field(description="Entries in this page.")
    offset: int
    has_more: bool
    truncated: bool = Field(
        description="The workflow has more operations than one timeline read builds "
        "(names.TIMELINE_READ_MAX of each kind): the latest are left out."
    )


class ServiceWorkflowStarted(StartedWorkflow):
    request_endpoint: str = Field(description='Where to POST a request {"n": k}.')
    topic: str
    idle_timeout: float = Field(description="The workflow ends after this long without requests.")
    note: str


class RequestReplied(BaseModel):
    """The workflow's reply to one request."""

    workflow_id: str
    correlation_id: str = Field(description="The reply's event key is `reply:<correlation_id>`.")
    topic: str
    reply: Any
    idempotency_key: str | None = None
