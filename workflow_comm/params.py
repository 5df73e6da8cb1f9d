"""Validated path, query and header parameters: every input has a bound."""

from typing import Annotated

from fastapi import Header, Path, Query

from workflow_comm import names

WorkflowId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=names.WORKFLOW_ID_MAX_LEN,
        pattern=names.WORKFLOW_ID_PATTERN,
        description=f"1 to {names.WORKFLOW_ID_MAX_LEN} {names.WORKFLOW_ID_RULE}.",
        examples=["my-wf-1"],
    ),
]
NSteps = Annotated[
    int, Path(ge=names.N_STEPS_MIN, le=names.N_STEPS_MAX, description="Number of steps to run.")
]
StepSeconds = Annotated[
    float,
    Query(
        ge=0,
        le=names.STEP_SECONDS_MAX,
        description="How long each step takes; 0 for tests, 1 (default) for demos.",
    ),
]
EventKey = Annotated[
    str,
    Path(min_length=1, max_length=names.EVENT_KEY_MAX_LEN, pattern=names.WORKFLOW_ID_PATTERN),
]
EventTimeout = Annotated[
    float,
    Query(
        ge=0,
        le=names.EVENT_TIMEOUT_MAX,
        description="Seconds to wait for the event to be set. The wait blocks only this request.",
    ),
]
ApprovalTimeout = Annotated[
    float,
    Query(
        gt=0,
        le=names.APPROVAL_TIMEOUT_MAX,
        description="Seconds the workflow waits for a message before it times out.",
    ),
]
Topic = Annotated[
    str,
    Query(min_length=1, max_length=names.TOPIC_MAX_LEN, pattern=names.TOPIC_PATTERN),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=names.IDEMPOTENCY_KEY_MAX_LEN,
        description="Repeats of a message with the same key (to the same workflow) are dropped.",
    ),
]
StreamKey = Annotated[
    str,
    Query(min_length=1, max_length=names.EVENT_KEY_MAX_LEN, pattern=names.WORKFLOW_ID_PATTERN),
]
StreamOffset = Annotated[
    int, Query(ge=0, le=names.STREAM_OFFSET_MAX, description="First offset to return.")
]
StreamLimit = Annotated[
    int, Query(ge=1, le=names.STREAM_PAGE_MAX, description="Most values to return.")
]
ListLimit = Annotated[int, Query(ge=1, le=names.WORKFLOW_LIST_MAX)]
AppName = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="Only this DBOS application's workflows (one the server serves: "
        "COMM_SERVE_APPS).",
        examples=["dbos-workflow-communication"],
    ),
]
MailboxLimit = Annotated[
    int, Query(ge=1, le=names.MAILBOX_PAGE_MAX, description="Most messages to return.")
]
PageOffset = Annotated[
    int, Query(ge=0, le=names.PAGE_OFFSET_MAX, description="How many to skip (oldest first).")
]
TimelineLimit = Annotated[
    int, Query(ge=1, le=names.TIMELINE_PAGE_MAX, description="Most entries to return.")
]
TopicFilter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=names.TOPIC_MAX_LEN,
        pattern=names.TOPIC_PATTERN,
        description="Only messages on this topic.",
    ),
]
RequestTimeout = Annotated[
    float,
    Query(
        gt=0,
        le=names.REQUEST_TIMEOUT_MAX,
        description="Seconds to wait for the reply; then 504 (the request stays in the mailbox).",
    ),
]
IdleTimeout = Annotated[
    float,
    Query(
        gt=0,
        le=names.SERVICE_IDLE_TIMEOUT_MAX,
        description="The service workflow ends after this many seconds without a request.",
    ),
]
