"""Every use of DBOS beyond its public API: private calls, table layouts, notification channels.

Checked against dbos==3.4.0, which pyproject.toml pins. Upgrading DBOS means reviewing this
file (and running the tests that cover each piece: tests/test_multi_instance.py for takeover,
tests/test_db_outage.py for the two outage workarounds, tests/test_live.py for the events
history and the wakeups); nothing else in the package reaches into DBOS.

- Tables: `workflow_status` (takeover's PENDING scan), `workflow_events_history` (every
  set_event, where the public API shows only the latest value). In the `dbos` schema on
  Postgres; unqualified on SQLite.
- Channels: what DBOS NOTIFYs on after a write, and the payload's shape.
- Private calls: `DBOS._recover_pending_workflows` (takeover), the system database's waiter
  registries (re-checked after an outage).
- Behaviour: which connection errors DBOS treats as a lost connection (and so waits out).
"""

import json
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from dbos import DBOS, WorkflowHandle
from dbos._dbos import _get_dbos_instance

DBOS_VERSION_CHECKED = "3.4.0"

# -- tables ---------------------------------------------------------------------------------

# Executors that own PENDING workflows of this application and version: the rows DBOS's own
# recovery (get_pending_workflows) would pick up. Only the small set of PENDING rows is read
# (partial index idx_workflow_status_pending). psycopg parameters.
PENDING_EXECUTORS_SQL = """
SELECT DISTINCT executor_id FROM dbos.workflow_status
WHERE status = 'PENDING' AND application_version = %(version)s AND executor_id <> %(self)s
  AND (application_name = %(app)s OR application_name IS NULL)
"""

# How a value is stored when written with DBOSPortableJSONSerializer (this server's).
PORTABLE_JSON = "portable_json"


def events_history_query(is_sqlite: bool) -> sa.TextClause:
    """(key, value, serialization, version) of a workflow's set_events after a version.

    DBOS keeps every set_event in `workflow_events_history`; `function_id` orders them and is
    the per-workflow version the live endpoints send.
    """
    schema = "" if is_sqlite else "dbos."
    return sa.text(
        f"SELECT key, value, serialization, function_id FROM {schema}workflow_events_history"
        " WHERE workflow_uuid = :workflow_id AND function_id > :after ORDER BY function_id"
    )


def decode_value(text: str | None, serialization: str | None) -> Any:
    """A stored value, decoded. Only JSON is: a pickled row is never unpickled here."""
    if text is None or serialization != PORTABLE_JSON:
        return None
    return json.loads(text)


# -- notification channels ----------------------------------------------------------------------

# The channels DBOS NOTIFYs on (Postgres) after writing an event, a stream value or a message.
NOTIFY_CHANNELS = (
    "dbos_workflow_events_channel",
    "dbos_streams_channel",
    "dbos_notifications_channel",
)


def notified_workflow(payload: str) -> str:
    """The workflow a NOTIFY payload is about: payloads are "<workflow id>::<key or topic>"."""
    return payload.split("::", 1)[0]


# -- private calls --------------------------------------------------------------------------------


def recover_pending_workflows(executor_id: str) -> list[WorkflowHandle[Any]]:
    """Hand a dead executor's PENDING workflows of this version to DBOS's recovery (blocking).

    It moves them to DBOS's internal queue only while they still name that executor (so a
    repeat, or the owner restarting, recovers nothing twice), and any live instance's queue
    worker then runs each one, skipping what was already checkpointed.
    `resume_workflow_async` would not check the executor: it could re-run a workflow a
    restarted owner is running.
    """
    return DBOS._recover_pending_workflows([executor_id])


def recheck_waiters() -> None:
    """Run DBOS's own checks on every waiting recv and get_event (blocking).

    Each waiter is woken only if its message or event is there. For after an outage: dbos
    3.4.0 drops the NOTIFYs it could not send while the database was away, and looks at the
    database on its own only every 60 s.
    """
    sys_db = _get_dbos_instance()._sys_db
    for _, (workflow_id, topic, _), signal in sys_db.notifications_map.snapshot():
        sys_db.recv_check(workflow_id, topic, cast(Any, signal))  # sets each waiter's event
    for _, (workflow_id, key, _), signal in sys_db.workflow_events_map.snapshot():
        sys_db.get_event_check(workflow_id, key, cast(Any, signal))


# -- behaviour ----------------------------------------------------------------------------------


def wait_out_refused_connections() -> None:
    """Make a workflow wait for the database when it refuses connections, not die.

    DBOS retries a workflow's database calls until the database is back, but dbos 3.4.0 spots
    a failed connection attempt by psycopg's words "connection failed". An attempt refused at
    once (the socket file is gone or the local port closed while Postgres restarts) reads
    "connection is bad", escapes, and kills the workflow's coroutine, leaving the workflow
    PENDING until the process restarts. Marked as a lost connection, DBOS waits it out.
    Outside workflows (requests) the error still surfaces at once, as a 503.
    """
    if not sa.event.contains(sa.engine.Engine, "handle_error", _refused_in_workflow):
        sa.event.listen(sa.engine.Engine, "handle_error", _refused_in_workflow)


def _refused_in_workflow(context: sa.engine.ExceptionContext) -> None:
    if (
        context.connection is None  # failed while connecting
        and isinstance(context.original_exception, psycopg.OperationalError)
        and DBOS.workflow_id is not None
    ):
        context.is_disconnect = True
