"""Validated path, query and header parameters: every input has a bound."""

from typing import Annotated

from fastapi import Header, Path, Query

from workflow_comm import keys

WorkflowId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=keys.WORKFLOW_ID_MAX_LEN,
        pattern=keys.WORKFLOW_ID_PATTERN,
        description=f"1 to {keys.WORKFLOW_ID_MAX_LEN} {keys.WORKFLOW_ID_RULE}.",
        examples=["my-wf-1"],
    ),
]
NSteps = Annotated[
    int, Path(ge=keys.N_STEPS_MIN, le=keys.N_STEPS_MAX, description="Number of steps to run.")
]
StepSeconds = Annotated[
    float,
    Query(
        ge=0,
        le=keys.STEP_SECONDS_MAX,
        description="How long each step takes; 0 for tests, 1 (default) for demos.",
    ),
]
EventKey = Annotated[
    str,
    Path(min_length=1, max_length=keys.EVENT_KEY_MAX_LEN, pattern=keys.WORKFLOW_ID_PATTERN),
]
EventTimeout = Annotated[
    float,
    Query(
        ge=0,
        le=keys.EVENT_TIMEOUT_MAX,
        description="Seconds to wait for the event to be set. The wait blocks only this request.",
    ),
]
ApprovalTimeout = Annotated[
    float,
    Query(
        gt=0,
        le=keys.APPROVAL_TIMEOUT_MAX,
        description="Seconds the workflow waits for a message before it times out.",
    ),
]
Topic = Annotated[
    str,
    Query(min_length=1, max_length=keys.TOPIC_MAX_LEN, pattern=keys.TOPIC_PATTERN),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=keys.IDEMPOTENCY_KEY_MAX_LEN,
        description="Repeats of a message with the same key (to the same workflow) are dropped.",
    ),
]
StreamKey = Annotated[
    str,
    Query(min_length=1, max_length=keys.EVENT_KEY_MAX_LEN, pattern=keys.WORKFLOW_ID_PATTERN),
]
StreamOffset = Annotated[
    int, Query(ge=0, le=keys.STREAM_OFFSET_MAX, description="First offset to return.")
]
StreamLimit = Annotated[
    int, Query(ge=1, le=keys.STREAM_PAGE_MAX, description="Most values to return.")
]
ListLimit = Annotated[int, Query(ge=1, le=keys.WORKFLOW_LIST_MAX)]
