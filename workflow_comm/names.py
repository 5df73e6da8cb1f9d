"""Names and bounds shared by the workflows, the routes, the client and the tests.

One source of truth: change a key or a limit here and every user of it follows.
"""

from typing import Final, Literal

# Event keys a workflow publishes with set_event.
EVENT_STATUS: Final = "status"
EVENT_PROGRESS: Final = "progress"
EVENT_RESULT: Final = "result"
EVENT_MESSAGE: Final = "message"  # the message a messaging workflow received

# Topic a messaging workflow waits on.
TOPIC_NOTIFICATION: Final = "notification"

# Stream a streaming workflow appends to.
STREAM_PROGRESS: Final = "progress_stream"

# Workflow kinds, as named in URLs and responses.
WorkflowKind = Literal["events", "messaging", "streaming", "service"]

# DBOS workflow statuses after which a workflow does nothing more.
TERMINAL_STATUSES: Final = frozenset(
    {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}
)

# Values of the `status` event.
STATUS_STARTED: Final = "started"
STATUS_COMPLETED: Final = "completed"
STATUS_WAITING: Final = "waiting_for_approval"
STATUS_APPROVED: Final = "approved"
STATUS_REJECTED: Final = "rejected"
STATUS_TIMED_OUT: Final = "timed_out"


def status_processing(step: int) -> str:
    """The `status` event value while step `step` (1-based) runs."""
    return f"processing_step_{step}"


# Bounds on every input. Documented in README.md; tested in test_communication.py.
WORKFLOW_ID_MAX_LEN: Final = 128
# Letters, digits and . _ - : only, starting with a letter or digit: safe in URLs, logs and SQL.
WORKFLOW_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
# The pattern in words, for people (the API's description, the dashboard's messages).
WORKFLOW_ID_RULE: Final = "letters, digits and . _ - :, starting with a letter or digit"
TOPIC_MAX_LEN: Final = 128
TOPIC_PATTERN: Final = WORKFLOW_ID_PATTERN
EVENT_KEY_MAX_LEN: Final = 128
IDEMPOTENCY_KEY_MAX_LEN: Final = 256
N_STEPS_MIN: Final = 1
N_STEPS_MAX: Final = 1000
STEP_SECONDS_DEFAULT: Final = 1.0
STEP_SECONDS_MAX: Final = 60.0
EVENT_TIMEOUT_DEFAULT: Final = 5.0
EVENT_TIMEOUT_MAX: Final = 120.0
APPROVAL_TIMEOUT_DEFAULT: Final = 60.0
APPROVAL_TIMEOUT_MAX: Final = 86_400.0
MESSAGE_MAX_BYTES_DEFAULT: Final = 64 * 1024
# The longest stream our workflows write is 3 + 2 * N_STEPS_MAX entries, so the default
# page returns every stream this server writes in one response.
STREAM_PAGE_MAX: Final = 5000
# DBOS reads 100 values ahead of an offset into a 32-bit column: keep well clear of 2^31.
STREAM_OFFSET_MAX: Final = 2**30
# The most values a live stream may start with (`?tail=N`): what the replay buffer holds by default.
STREAM_TAIL_MAX: Final = 1000
WORKFLOW_LIST_DEFAULT: Final = 50
WORKFLOW_LIST_MAX: Final = 500
# Tokens (POST /tokens): how long one is valid, in seconds.
TOKEN_TTL_MIN: Final = 1
TOKEN_TTL_DEFAULT: Final = 3600
TOKEN_TTL_MAX: Final = 86_400


# What a token may do with the workflows it reaches (POST /tokens `scopes`).
TokenScope = Literal["read", "send"]


# -- request/reply (the "service" demo kind; POST /workflows/{id}/request) -----------------
# A request is a message on TOPIC_REQUEST: {"correlation_id": ..., "body": {...}}. The workflow
# answers it with set_event(reply_event(correlation_id), reply), from its body: exactly once,
# durable, and readable by any process (the live hub wakes whoever waits for the key).
TOPIC_REQUEST: Final = "request"
REQUEST_CORRELATION: Final = "correlation_id"
REQUEST_BODY: Final = "body"
REPLY_EVENT_PREFIX: Final = "reply:"
# A longer correlation ID is not a request (its reply's key must stay an event key's length).
CORRELATION_ID_MAX_LEN: Final = EVENT_KEY_MAX_LEN - len(REPLY_EVENT_PREFIX)
EVENT_REQUESTS_SERVED: Final = "requests_served"
# A service workflow ends once idle this long (seconds), or after this many requests.
SERVICE_IDLE_TIMEOUT_DEFAULT: Final = 300.0
SERVICE_IDLE_TIMEOUT_MAX: Final = 86_400.0
SERVICE_MAX_REQUESTS: Final = 10_000
# The largest n a service computes F(n) for.
FIBONACCI_N_MAX: Final = 1000
# How long POST /workflows/{id}/request waits for the reply (seconds).
REQUEST_TIMEOUT_DEFAULT: Final = 10.0
REQUEST_TIMEOUT_MAX: Final = 120.0


def reply_event(correlation_id: str) -> str:
    """The event key a request's reply is set under."""
    return f"{REPLY_EVENT_PREFIX}{correlation_id}"


# -- mailbox and timeline (GET /workflows/{id}/messages, /timeline) -------------------------
MailboxState = Literal["pending", "consumed", "all"]
MAILBOX_PAGE_DEFAULT: Final = 100
MAILBOX_PAGE_MAX: Final = 1000
# Rows read per page offset: offsets beyond this are refused (422), not scanned.
PAGE_OFFSET_MAX: Final = 1_000_000
TIMELINE_PAGE_DEFAULT: Final = 500
TIMELINE_PAGE_MAX: Final = 5000
# Stored JSON longer than this is shown as a preview (its first characters), not decoded.
TIMELINE_VALUE_MAX_CHARS: Final = 1000
# The most entries of each kind one timeline read builds (a long-running service may have
# many more); a timeline cut there says so (`truncated`).
TIMELINE_READ_MAX: Final = 20_000
