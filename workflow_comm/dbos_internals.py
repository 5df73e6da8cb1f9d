"""Every use of DBOS beyond its public API: private calls, table layouts, notification channels.

Checked against dbos==3.4.0, which pyproject.toml pins. Upgrading DBOS means reviewing this
file (and running the tests that cover each piece: tests/test_multi_instance.py for takeover,
tests/test_db_outage.py for the two outage workarounds, tests/test_live.py for the events
history and the wakeups); nothing else in the package reaches into DBOS.

- Tables: `workflow_status` (takeover's PENDING scan; the live hub's batched status reads),
  `workflow_events_history` (every set_event, where the public API shows only the latest
  value), `streams` (the live hub's stream heads). In the `dbos` schema on Postgres;
  unqualified on SQLite. The live hub's queries are in their own section at the end.
- Channels: what DBOS NOTIFYs on after a write, and the payload's shape.
- Tables, for the gateway (service.py): `workflow_status.application_name` (which application a
  workflow belongs to), `streams` (the stream keys a workflow wrote).
- Private state: whether DBOS is launched and the database URL it was given (checked when
  the communication routes start in an app that launched DBOS itself).
- Private calls: `DBOS._recover_pending_workflows` (takeover), the system database's waiter
  registries (re-checked after an outage), `is_serialized_stream_closed_sentinel` (the live
  hub's stream length, for `?tail=`), the system database's `_signal_notification` (wrapped:
  the live hub hears of this process's own writes as they commit).
- Behaviour: which connection errors DBOS treats as a lost connection (and so waits out).
"""

import asyncio
import json
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from dbos import DBOS, WorkflowHandle, WorkflowStatus, _serialization, _sys_db
from dbos import error as dbos_error
from dbos._dbos import _get_dbos_instance
from dbos._sys_db import is_serialized_stream_closed_sentinel
from psycopg_pool import AsyncConnectionPool

from workflow_comm.names import TERMINAL_STATUSES

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


def on_local_writes(written: Callable[[str, str], None]) -> Callable[[], None]:
    """Call `written(channel, workflow_id)` after each set_event and stream write that this
    process's DBOS commits; returns the function that stops it.

    DBOS calls its system database's `_signal_notification(channel, payload)` right after such
    a commit, on both backends (on Postgres it queues the NOTIFY that a background thread sends
    about 10 ms later; on SQLite it does nothing). Wrapping it tells the live hub at once,
    ahead of the NOTIFY or the SQLite poll, which stay for writes made by other processes.
    `written` runs on DBOS's writing thread: it must only hand the news on, never block.
    """
    sys_db = _get_dbos_instance()._sys_db
    signal = sys_db._signal_notification

    def signal_and_tell(channel: str, payload: str) -> None:
        signal(channel, payload)
        written(channel, notified_workflow(payload))

    sys_db._signal_notification = signal_and_tell  # type: ignore[method-assign]

    def stop() -> None:
        if sys_db._signal_notification is signal_and_tell:
            sys_db._signal_notification = signal  # type: ignore[method-assign]

    return stop


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


# == live push: batched reads of every watched workflow (live/database.py) ======================
#
# The live hub reads all the workflows it watches in one statement per kind of data, however
# many there are: `= ANY(:ids)` with a text[] on Postgres, `json_each(:ids)` over a JSON array
# on SQLite (one parameter, whatever the number of IDs). live_batch() builds the parameters.


def _table(is_sqlite: bool, name: str) -> str:
    return name if is_sqlite else f"dbos.{name}"


def _ids_in(is_sqlite: bool, column: str) -> str:
    if is_sqlite:
        return f"{column} IN (SELECT value FROM json_each(:ids))"
    return f"{column} = ANY(CAST(:ids AS text[]))"


def live_batch(is_sqlite: bool, ids: list[str], **lists: list[Any]) -> dict[str, Any]:
    """The parameters of a batched live query: `ids`, and per-ID lists (such as `afters`)."""
    if is_sqlite:
        return {"ids": json.dumps(ids), **{k: json.dumps(v) for k, v in lists.items()}}
    return {"ids": ids, **lists}


def _per_workflow(is_sqlite: bool, *columns: tuple[str, str]) -> str:
    """A derived table w(id, <column>...) of :ids and, per ID, the value at the same position
    in the list parameter of each (name, Postgres type) of `columns` (see live_batch)."""
    if is_sqlite:
        picked = "".join(f", {name}.value AS {name}" for name, _ in columns)
        joined = "".join(
            f" JOIN json_each(:{name}) {name} ON {name}.key = i.key" for name, _ in columns
        )
        return f"(SELECT i.value AS id{picked} FROM json_each(:ids) i{joined}) w"
    arrays = "".join(f", CAST(:{name} AS {kind}[])" for name, kind in columns)
    names = "".join(f", {name}" for name, _ in columns)
    return f"unnest(CAST(:ids AS text[]){arrays}) AS w(id{names})"


def live_statuses_query(is_sqlite: bool) -> sa.TextClause:
    """(workflow_uuid, status) of each workflow in :ids whose status is not its own in :known
    (the same position; "" for none known): while nothing changes, no row at all."""
    wanted = _per_workflow(is_sqlite, ("known", "text"))
    return sa.text(
        f"SELECT s.workflow_uuid, s.status FROM {_table(is_sqlite, 'workflow_status')} s"
        f" JOIN {wanted} ON s.workflow_uuid = w.id WHERE s.status <> w.known"
    )


def live_event_changes_query(is_sqlite: bool) -> sa.TextClause:
    """(workflow_uuid, key, value, serialization, version) of every set_event of each workflow
    in :ids after its own version in :afters (the same position), oldest first.

    `function_id` orders a workflow's set_events and is the version the live endpoints send.
    """
    history = _table(is_sqlite, "workflow_events_history")
    wanted = _per_workflow(is_sqlite, ("afters", "integer"))
    return sa.text(
        "SELECT h.workflow_uuid, h.key, h.value, h.serialization, h.function_id"
        f" FROM {history} h JOIN {wanted}"
        " ON h.workflow_uuid = w.id AND h.function_id > w.afters"
        " ORDER BY h.workflow_uuid, h.function_id"
    )


def live_stream_heads_query(is_sqlite: bool) -> sa.TextClause:
    """(workflow_uuid, key, highest offset written) of every stream of each workflow in :ids.

    The highest row of a closed stream is its close marker (see is_stream_close_marker).
    """
    return sa.text(
        f'SELECT workflow_uuid, key, MAX("offset") FROM {_table(is_sqlite, "streams")}'
        f" WHERE {_ids_in(is_sqlite, 'workflow_uuid')} GROUP BY workflow_uuid, key"
    )


def live_stream_last_query(is_sqlite: bool) -> sa.TextClause:
    """(offset, value, serialization) of the last row of one stream (:workflow_id, :key)."""
    return sa.text(
        f'SELECT "offset", value, serialization FROM {_table(is_sqlite, "streams")}'
        ' WHERE workflow_uuid = :workflow_id AND key = :key ORDER BY "offset" DESC LIMIT 1'
    )


def is_stream_close_marker(value: str | None, serialization: str | None) -> bool:
    """Whether a stored stream row is the marker close_stream writes after the last value."""
    return bool(is_serialized_stream_closed_sentinel(value, serialization))


def live_changed_workflows_query(is_sqlite: bool) -> sa.TextClause:
    """(workflow_uuid, updated_at) of workflows changed (or created) after :since (epoch ms),
    oldest change first, at most :limit. `updated_at` moves on every status change."""
    return sa.text(
        f"SELECT workflow_uuid, updated_at FROM {_table(is_sqlite, 'workflow_status')}"
        " WHERE updated_at > :since ORDER BY updated_at LIMIT :limit"
    )


@dataclass(frozen=True, slots=True)
class LiveTimelineQueries:
    """The live timelines' batched reads (live/timeline.py), each one statement for every
    workflow in :ids. `heads`: (workflow_uuid, the TIMELINE_STATUS columns, the highest
    operation function_id, the number of messages): what moves with any new timeline entry.
    The others read what is new per workflow, after its own position in the per-ID lists
    :ops (operations), :evs (events history), :sts (streams), :sent (messages sent at or after
    this epoch ms, or consumed by an operation after :ops), oldest first, at most :max rows;
    each row starts with its workflow_uuid, then the columns TimelineRows describes."""

    heads: sa.TextClause
    operations: sa.TextClause
    events: sa.TextClause
    streams: sa.TextClause
    messages: sa.TextClause


def live_timeline_queries(is_sqlite: bool) -> LiveTimelineQueries:
    def table(name: str) -> str:
        return _table(is_sqlite, name)

    def text(sql: str) -> sa.TextClause:
        return sa.text(re.sub(r"%\((\w+)\)s", r":\1", sql))

    ops = table("operation_outputs")
    after = _per_workflow(is_sqlite, ("ops", "integer"), ("evs", "integer"), ("sts", "integer"))
    sent = _per_workflow(is_sqlite, ("sent", "bigint"), ("ops", "integer"))
    return LiveTimelineQueries(
        heads=text(
            f"SELECT s.workflow_uuid, {TIMELINE_STATUS_COLUMNS},"
            f" (SELECT MAX(o.function_id) FROM {ops} o WHERE o.workflow_uuid = s.workflow_uuid),"
            f" (SELECT COUNT(*) FROM {table('notifications')} n"
            " WHERE n.destination_uuid = s.workflow_uuid)"
            f" FROM {table('workflow_status')} s WHERE {_ids_in(is_sqlite, 's.workflow_uuid')}"
        ),
        operations=text(
            f"SELECT o.workflow_uuid, {TIMELINE_OPERATION_COLUMNS} FROM {ops} o JOIN {after}"
            " ON o.workflow_uuid = w.id AND o.function_id > w.ops"
            " ORDER BY o.workflow_uuid, o.function_id LIMIT :max"
        ),
        events=text(
            f"SELECT h.workflow_uuid, {TIMELINE_EVENT_COLUMNS}"
            f" FROM {table('workflow_events_history')} h JOIN {after}"
            " ON h.workflow_uuid = w.id AND h.function_id > w.evs"
            " ORDER BY h.workflow_uuid, h.function_id LIMIT :max"
        ),
        streams=text(
            f"SELECT t.workflow_uuid, {TIMELINE_STREAM_COLUMNS} FROM {table('streams')} t"
            f" JOIN {after} ON t.workflow_uuid = w.id AND t.function_id > w.sts"
            ' ORDER BY t.workflow_uuid, t.function_id, t."offset" LIMIT :max'
        ),
        messages=text(
            f"SELECT n.destination_uuid, {MESSAGE_COLUMNS} FROM {table('notifications')} n"
            f" JOIN {sent} ON n.destination_uuid = w.id"
            " AND (n.created_at_epoch_ms >= w.sent OR n.consumed_by_function_id > w.ops)"
            f" {_message_join(table('operation_outputs'))}"
            " ORDER BY n.destination_uuid, n.created_at_epoch_ms LIMIT :max"
        ),
    )


# What each channel of NOTIFY_CHANNELS wakes: a workflow's events, or its streams.
LIVE_EVENTS_CHANNEL = "dbos_workflow_events_channel"
LIVE_STREAMS_CHANNEL = "dbos_streams_channel"
assert {LIVE_EVENTS_CHANNEL, LIVE_STREAMS_CHANNEL} <= set(NOTIFY_CHANNELS)


# == requests: direct reads of DBOS's tables (service.py) =========================================
#
# What DBOS's get_workflow_status, list_workflows, get_all_events and read_stream read, each in
# one statement, on connections of this server's own and without blocking the event loop:
# psycopg's async pool on Postgres, a few threads with the stdlib sqlite3 on SQLite. DBOS's own
# calls pass a worker thread, SQLAlchemy and (for a stream) several more thread hops per value.
# Values are decoded as DBOS decodes them with this server's serializer (portable JSON; a
# NULL `serialization` means the configured serializer, the same). A row stored another way
# (pickle) raises NotPortable: the caller then asks DBOS, which reads it as it always did.


class NotPortable(Exception):
    """A stored value is not portable JSON: read it through DBOS's own API instead."""


def decode_portable(text: str | None, serialization: str | None) -> Any:
    """A stored value as DBOS's deserialize_value returns it for this server's serializer."""
    if text is None:
        return None
    if serialization is not None and serialization != PORTABLE_JSON:
        raise NotPortable(serialization)
    return json.loads(text)


# The output and error of a workflow are kept in workflow_output (COALESCEd with the older
# columns of workflow_status), and both share workflow_status.serialization.
_STATUS_COLUMNS = (
    "SELECT s.workflow_uuid, s.status, s.name, s.created_at, s.updated_at, s.completed_at,"
    " s.executor_id, s.application_version, COALESCE(o.output, s.output),"
    " COALESCE(o.error, s.error), s.serialization, s.application_name"
    " FROM {schema}workflow_status s"
    " LEFT JOIN {schema}workflow_output o ON o.workflow_uuid = s.workflow_uuid"
)


def _stored_status(row: Sequence[Any]) -> WorkflowStatus:
    """DBOS's WorkflowStatus, as list_workflows(load_input=False) builds it, with the fields
    this server shows: ID, status, name, times, executor, application name and version,
    output and error. `error`
    is DBOS's PortableWorkflowError(message, name, code, data), or, as DBOS's safe_deserialize
    has it, the stored text if that does not decode (so is `output`). The rest are unset."""
    serialization = row[10]
    if serialization is not None and serialization != PORTABLE_JSON:
        raise NotPortable(serialization)
    status = WorkflowStatus()
    status.workflow_id = row[0]
    status.status = row[1]
    status.name = row[2]
    status.created_at = row[3]
    status.updated_at = row[4]
    status.completed_at = row[5]
    status.executor_id = row[6]
    status.app_version = row[7]
    status.application_name = row[11]
    status.output = _or_text(_json, row[8])
    status.error = _or_text(_portable_error, row[9])
    status.input = None
    return status


def _json(text: str) -> Any:
    return json.loads(text)


def _portable_error(text: str) -> Exception:
    """DBOS's deserialize_exception for portable JSON."""
    data = json.loads(text)
    return _serialization.PortableWorkflowError(
        data["message"], data["name"], data.get("code"), data.get("data")
    )


def _or_text(decode: Callable[[str], Any], text: str | None) -> Any:
    """DBOS's safe_deserialize: what does not decode is shown as the stored text."""
    if text is None:
        return None
    try:
        return decode(text)
    except Exception:  # noqa: BLE001 - as DBOS: any failure shows the text
        return text


def stream_page(
    status: str, rows: Iterable[Sequence[Any]], offset: int, limit: int
) -> tuple[list[Any], bool, bool]:
    """(values, has_more, closed) as DBOS's read_stream(timeout_seconds=0) gives them, read
    for `limit` values and one more: `rows` are (value, serialization, offset) from `offset`.

    DBOS yields values up to the first offset with nothing written or the close marker. There
    it ends (closed) if the marker is there or the workflow is no longer active; else it
    raises DBOSStreamTimeoutError (still open). A value past `limit` means has_more.
    """
    values: list[Any] = []
    expected = offset
    for text, serialization, at in rows:
        if at != expected:  # NULL (nothing from offset on) or a gap
            break
        expected += 1
        value = decode_portable(text, serialization)
        if _sys_db.is_stream_closed_sentinel(value):
            return values, False, True
        if len(values) == limit:
            return values, True, False
        values.append(value)
    return values, False, not _sys_db.workflow_is_active(status)


def dbos_app_name() -> str | None:
    """The application name DBOS scopes its workflow lists to (rows of no application too)."""
    name: str | None = _get_dbos_instance()._sys_db.app_name
    return name


def dbos_launched() -> bool:
    """Whether DBOS was created and launched in this process."""
    try:
        return bool(_get_dbos_instance()._launched)
    except dbos_error.DBOSException:
        return False


def dbos_system_database_url() -> str | None:
    """The system database URL DBOS was configured with (as given to it)."""
    url: str | None = _get_dbos_instance()._config.get("system_database_url")
    return url


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (ESCAPE '/') for IDs that start with `prefix`, as SQLAlchemy's
    startswith(autoescape=True), which DBOS's workflow_id_prefix uses, writes it."""
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"


# How DBOS stores the topic None.
NULL_TOPIC = _sys_db._dbos_null_topic


@dataclass(frozen=True, slots=True)
class StoredMessage:
    message_id: str
    topic: str | None
    payload: Any
    sent_at: int
    consumed: bool
    consumed_at: int | None
    consumed_by: int | None
    idempotency_key: str | None


def stored_message(workflow_id: str, row: Sequence[Any]) -> StoredMessage:
    """A row of MESSAGE_COLUMNS as the mailbox shows it (to `workflow_id`)."""
    message_id, topic, text, serialization, sent_at, consumed, consumed_by, consumed_at = row
    try:
        payload = decode_portable(text, serialization)
    except (NotPortable, ValueError):
        payload = None  # pickled (never unpickled here), or not JSON
    suffix = f"::{workflow_id}"
    key = message_id.removesuffix(suffix) if message_id.endswith(suffix) else None
    return StoredMessage(
        message_id=message_id,
        topic=None if topic == NULL_TOPIC else topic,
        payload=payload,
        sent_at=int(sent_at),
        consumed=bool(consumed),
        consumed_at=None if consumed_at is None else int(consumed_at),
        consumed_by=None if consumed_by is None else int(consumed_by),
        idempotency_key=key,
    )


@dataclass(frozen=True, slots=True)
class TimelineRows:
    """Rows as read: status (created_at, executor_id, status, updated_at, completed_at,
    recovery_attempts, started_at_epoch_ms); operations (function_id, function_name, started,
    completed, output, output length, error, serialization, child workflow); events
    (function_id, key, value, length, serialization); streams (function_id, key, offset,
    value, length, serialization)."""

    status: Sequence[Any] | None
    operations: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    streams: list[tuple[Any, ...]]
    messages: list[StoredMessage]


# The columns of each kind of TimelineRows, by alias: workflow_status s, operation_outputs o,
# workflow_events_history h, streams t; values cut to %(chars)s characters.
TIMELINE_STATUS_COLUMNS = (
    "s.created_at, s.executor_id, s.status, s.updated_at, s.completed_at, s.recovery_attempts,"
    " s.started_at_epoch_ms"
)
TIMELINE_OPERATION_COLUMNS = (
    "o.function_id, o.function_name, o.started_at_epoch_ms, o.completed_at_epoch_ms,"
    " substr(o.output, 1, %(chars)s), length(o.output), substr(o.error, 1, %(chars)s),"
    " o.serialization, o.child_workflow_id"
)
TIMELINE_EVENT_COLUMNS = (
    "h.function_id, h.key, substr(h.value, 1, %(chars)s), length(h.value), h.serialization"
)
TIMELINE_STREAM_COLUMNS = (
    't.function_id, t.key, t."offset", substr(t.value, 1, %(chars)s), length(t.value),'
    " t.serialization"
)
# A message (notifications n) with when its recv took it (operation_outputs o): stored_message.
MESSAGE_COLUMNS = (
    "n.message_uuid, n.topic, n.message, n.serialization, n.created_at_epoch_ms, n.consumed,"
    " n.consumed_by_function_id, o.completed_at_epoch_ms"
)


def _message_join(operations: str) -> str:
    return (
        f"LEFT JOIN {operations} o ON o.workflow_uuid = n.destination_uuid"
        " AND o.function_id = n.consumed_by_function_id"
    )


# DBOS's names for the operations it records in operation_outputs (function_name).
OP_SET_EVENT = "DBOS.setEvent"
OP_WRITE_STREAM = "DBOS.writeStream"
OP_CLOSE_STREAM = "DBOS.closeStream"
OP_RECV = "DBOS.recv"
OP_SEND = "DBOS.send"
DBOS_OPERATION_PREFIX = "DBOS."


class DirectReads(ABC):
    """One workflow's status, events or stream page, or a list, each in one statement."""

    def __init__(self, is_sqlite: bool) -> None:
        schema = "" if is_sqlite else "dbos."
        self._sqlite = is_sqlite
        self._schema = schema
        status_columns = _STATUS_COLUMNS.format(schema=schema)
        self._status_sql = self._sql(f"{status_columns} WHERE s.workflow_uuid = %(id)s")
        self._list_base = status_columns
        self._events_sql = self._sql(
            f"SELECT key, value, serialization FROM {schema}workflow_events"
            " WHERE workflow_uuid = %(id)s"
        )
        # DBOS's read_stream_values: the workflow's status and its stream from `start`, in one
        # statement (so one snapshot), LEFT JOINed so that a stream with nothing there still
        # tells the status.
        self._stream_sql = self._sql(
            f'SELECT s.status, s.application_name, t.value, t.serialization, t."offset"'
            f" FROM {schema}workflow_status s LEFT JOIN {schema}streams t"
            " ON t.workflow_uuid = s.workflow_uuid AND t.key = %(key)s"
            ' AND t."offset" >= %(start)s AND t."offset" < %(end)s'
            ' WHERE s.workflow_uuid = %(id)s ORDER BY t."offset"'
        )

        # The last row of each of the workflow's streams (the primary key's index finds each).
        self._stream_keys_sql = self._sql(
            f'SELECT t.key, t."offset", t.value, t.serialization FROM {schema}streams t'
            ' WHERE t.workflow_uuid = %(id)s AND t."offset" = (SELECT MAX(u."offset")'
            f" FROM {schema}streams u WHERE u.workflow_uuid = t.workflow_uuid AND u.key = t.key)"
            " ORDER BY t.key"
        )

    def _sql(self, text: str) -> str:
        """psycopg's %(name)s parameters, or sqlite3's :name."""
        return re.sub(r"%\((\w+)\)s", r":\1", text) if self._sqlite else text

    @abstractmethod
    async def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def ping(self) -> None:
        await self._rows("SELECT 1", {})

    async def status(self, workflow_id: str) -> WorkflowStatus | None:
        rows = await self._rows(self._status_sql, {"id": workflow_id})
        return _stored_status(rows[0]) if rows else None

    async def events(self, workflow_id: str) -> dict[str, Any]:
        """Every event's latest value, in the order DBOS's get_all_events has them (the
        same statement)."""
        rows = await self._rows(self._events_sql, {"id": workflow_id})
        return {key: decode_portable(value, fmt) for key, value, fmt in rows}

    async def stream(
        self, workflow_id: str, key: str, offset: int, limit: int
    ) -> tuple[list[Any], bool, bool] | None:
        """A stream page (see stream_page); None if the workflow does not exist."""
        read = await self.stream_with_status(workflow_id, key, offset, limit)
        return None if read is None else read[1]

    async def stream_with_status(
        self, workflow_id: str, key: str, offset: int, limit: int
    ) -> tuple[str, tuple[list[Any], bool, bool]] | None:
        """The workflow's status and a stream page, read together; None if no workflow."""
        read = await self.stream_with_owner(workflow_id, key, offset, limit)
        return None if read is None else (read[0], read[2])

    async def stream_with_owner(
        self, workflow_id: str, key: str, offset: int, limit: int
    ) -> tuple[str, str | None, tuple[list[Any], bool, bool]] | None:
        """The workflow's status, its application's name and a stream page, read together;
        None if no workflow."""
        params = {"id": workflow_id, "key": key, "start": offset, "end": offset + limit + 1}
        rows = await self._rows(self._stream_sql, params)
        if not rows:
            return None
        status: str = rows[0][0]
        owner: str | None = rows[0][1]
        return status, owner, stream_page(status, (row[2:] for row in rows), offset, limit)

    async def stream_keys(self, workflow_id: str) -> list[tuple[str, int, bool]]:
        """(key, number of values, closed by close_stream) of every stream of the workflow,
        by key: the last row of each stream, which is its close marker once closed."""
        found = []
        for key, offset, value, serialization in await self._rows(
            self._stream_keys_sql, {"id": workflow_id}
        ):
            closed = is_stream_close_marker(value, serialization)
            found.append((key, int(offset) if closed else int(offset) + 1, closed))
        return found

    async def workflows(
        self,
        *,
        app_name: str | Sequence[str] | None,
        status: str | None,
        name: str | None,
        id_prefix: str | None,
        limit: int,
        unclaimed: bool = True,
    ) -> list[WorkflowStatus]:
        """DBOS's list_workflows(sort_desc=True, load_input=False) with these filters.

        `app_name`: one application or several, each with the rows of no application, as
        DBOS's own application filter has them (with `unclaimed` False: without those);
        None or empty: every application.

        The ID prefix is compared case-sensitively on both backends (DBOS's LIKE is not, on
        SQLite: there a tenant "acme" would see tenant "ACME"'s workflows).
        """
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        apps = [app_name] if isinstance(app_name, str) else list(app_name or ())
        if apps:
            names = ", ".join(f"%(app{i})s" for i in range(len(apps)))
            or_unclaimed = " OR s.application_name IS NULL" if unclaimed else ""
            where.append(f"(s.application_name IN ({names}){or_unclaimed})")
            params.update({f"app{i}": app for i, app in enumerate(apps)})
        if name is not None:
            where.append("s.name = %(name)s")
            params["name"] = name
        if status is not None:
            where.append("s.status = %(status)s")
            params["status"] = status
        if id_prefix is not None:
            if self._sqlite:
                where.append("substr(s.workflow_uuid, 1, length(%(prefix)s)) = %(prefix)s")
                params["prefix"] = id_prefix
            else:
                where.append("s.workflow_uuid LIKE %(prefix)s ESCAPE '/'")
                params["prefix"] = like_prefix(id_prefix)
        sql = self._list_base
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.created_at DESC LIMIT %(limit)s"
        rows = await self._rows(self._sql(sql), params)
        return [_stored_status(row) for row in rows]

    # -- the mailbox and the timeline (routes/mailbox.py, routes/timeline.py) ----------------
    #
    # DBOS 3.4.0 keeps every message in `notifications` after a recv takes it: `consumed` is
    # set and `consumed_by_function_id` names the recv (its row in `operation_outputs`, with
    # the time it was recorded, in the same transaction). `message_uuid` is
    # "<idempotency key>::<destination>" for a send with a key, else a random UUID. A topic of
    # None is stored as NULL_TOPIC. Only DBOS's rewind deletes messages.

    async def messages(
        self,
        workflow_id: str,
        *,
        topic: str | None,
        consumed: bool | None,
        limit: int,
        offset: int,
    ) -> list[StoredMessage]:
        """The workflow's messages, oldest first (the order recv takes them in, per topic)."""
        where = ["n.destination_uuid = %(id)s"]
        params: dict[str, Any] = {"id": workflow_id, "limit": limit, "offset": offset}
        if topic is not None:
            where.append("n.topic = %(topic)s")
            params["topic"] = topic
        if consumed is not None:
            where.append("n.consumed = %(consumed)s")
            params["consumed"] = consumed
        sql = self._messages_sql(" AND ".join(where)) + " LIMIT %(limit)s OFFSET %(offset)s"
        rows = await self._rows(self._sql(sql), params)
        return [stored_message(workflow_id, row) for row in rows]

    def _messages_sql(self, where: str) -> str:
        return (
            f"SELECT {MESSAGE_COLUMNS} FROM {self._schema}notifications n"
            f" {_message_join(self._schema + 'operation_outputs')}"
            f" WHERE {where} ORDER BY n.created_at_epoch_ms,"
            # Sent in the same millisecond (the same second, on SQLite): consumed ones in the
            # order their recvs took them, then in the order written (SQLite's rowid).
            " n.consumed_by_function_id IS NULL, n.consumed_by_function_id,"
            f" {'n.rowid' if self._sqlite else 'n.message_uuid'}"
        )

    async def timeline_rows(self, workflow_id: str, *, max_rows: int, chars: int) -> TimelineRows:
        """What DBOS keeps of one workflow's history, each kind in one statement (at most
        `max_rows` of each, oldest first; stored values cut to `chars` + 1 characters)."""
        schema = self._schema
        params = {"id": workflow_id, "max": max_rows, "chars": chars + 1}
        status_sql = (
            f"SELECT {TIMELINE_STATUS_COLUMNS} FROM {schema}workflow_status s"
            " WHERE s.workflow_uuid = %(id)s"
        )
        operations_sql = (
            f"SELECT {TIMELINE_OPERATION_COLUMNS} FROM {schema}operation_outputs o"
            " WHERE o.workflow_uuid = %(id)s ORDER BY o.function_id LIMIT %(max)s"
        )
        events_sql = (
            f"SELECT {TIMELINE_EVENT_COLUMNS} FROM {schema}workflow_events_history h"
            " WHERE h.workflow_uuid = %(id)s ORDER BY h.function_id LIMIT %(max)s"
        )
        streams_sql = (
            f"SELECT {TIMELINE_STREAM_COLUMNS} FROM {schema}streams t"
            ' WHERE t.workflow_uuid = %(id)s ORDER BY t.function_id, t."offset" LIMIT %(max)s'
        )
        reads = [
            self._rows(self._sql(sql), params)
            for sql in (status_sql, operations_sql, events_sql, streams_sql)
        ]
        messages_sql = self._messages_sql("n.destination_uuid = %(id)s") + " LIMIT %(max)s"
        reads.append(self._rows(self._sql(messages_sql), params))
        status, operations, events, streams, messages = await asyncio.gather(*reads)
        return TimelineRows(
            status=status[0] if status else None,
            operations=operations,
            events=events,
            streams=streams,
            messages=[stored_message(workflow_id, row) for row in messages],
        )


class PostgresReads(DirectReads):
    """Direct reads on a psycopg AsyncConnectionPool of this server's own (autocommit: one
    round trip per read)."""

    def __init__(self, url: str, *, max_connections: int, timeout: float) -> None:
        super().__init__(is_sqlite=False)
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_connections,
            timeout=timeout,  # waiting for a free connection: PoolTimeout, a 503
            open=False,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout))},
            name="direct-reads",
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        # A connection cut while the database was away is noticed when used: try the next
        # (every broken one is dropped from the pool as it is returned).
        attempts = self._pool.max_size + 1
        for attempt in range(attempts):
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(sql, params)
                    return await cursor.fetchall()
            except psycopg.OperationalError:
                if conn is None or not conn.broken or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._pool.close()


class SqliteReads(DirectReads):
    """Direct reads with the stdlib sqlite3, on threads of their own (one connection each)."""

    def __init__(self, path: str, *, threads: int = 2) -> None:
        super().__init__(is_sqlite=True)
        self._path = path
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="direct-reads")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit: each SELECT is its own read transaction.
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            self._connections.append(conn)
        return conn

    def _fetch(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, params).fetchall()

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._fetch, sql, params)

    async def close(self) -> None:
        await asyncio.to_thread(self._threads.shutdown, wait=True, cancel_futures=True)
        for conn in self._connections:
            conn.close()


async def open_direct_reads(url: str, *, max_connections: int, timeout: float) -> DirectReads:
    """Direct reads of the system database at `url` (a SQLAlchemy URL, as DBOS takes it)."""
    if url.startswith("sqlite:"):
        path = sa.engine.make_url(url).database or ""
        return SqliteReads(path, threads=min(max_connections, 4))
    reads = PostgresReads(url, max_connections=max_connections, timeout=timeout)
    await reads.open()
    return reads


# == webhooks: what happened since a point in time (webhooks/dispatcher.py) ======================
#
# The dispatcher derives every webhook event from DBOS's own records, each with the time it was
# recorded (epoch ms) and what identifies it for good, so a rescan finds the same events again:
# - workflow.started: workflow_status.created_at (indexed), the workflow's ID;
# - workflow.finished: workflow_status.updated_at of a terminal row, the ID and the status;
# - event.set / stream.closed: the operation_outputs row DBOS records in the same transaction
#   as a set_event or close_stream made in a workflow body (function_name "DBOS.setEvent" /
#   "DBOS.closeStream"; completed_at_epoch_ms, indexed with function_name), joined to the
#   events history / streams row of the same function_id; the ID and the function_id.
#   A set_event or close_stream made inside a step records no such row: not seen.
# - message.received: notifications.created_at_epoch_ms (stamped by the database), the
#   message's message_uuid.
# Rows of `skip_name` (the delivery workflow itself) are left out. Named parameters
# (:since, :skip_name, :limit): psycopg's %(name)s on Postgres (see webhook_sql).

WEBHOOK_SET_EVENT = "DBOS.setEvent"
WEBHOOK_CLOSE_STREAM = "DBOS.closeStream"


def webhook_sql(is_sqlite: bool, text: str) -> str:
    """`text` with {s} as the schema prefix and :name parameters in the driver's style."""
    text = text.replace("{s}", "" if is_sqlite else "dbos.")
    return text if is_sqlite else re.sub(r":(\w+)", r"%(\1)s", text)


def webhook_scan_queries(is_sqlite: bool) -> dict[str, str]:
    """Per event type, a query of (workflow_uuid, name, time, identity, detail, value,
    serialization, application_name) from :since on (inclusive), oldest first, at most
    :limit rows."""
    terminal = ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
    queries = {
        "workflow.started": (
            "SELECT workflow_uuid, name, created_at, '', status, NULL, NULL, application_name"
            " FROM {s}workflow_status WHERE created_at >= :since AND name <> :skip_name"
            " ORDER BY created_at LIMIT :limit"
        ),
        "workflow.finished": (
            "SELECT workflow_uuid, name, updated_at, status, status, NULL, NULL, application_name"
            f" FROM {{s}}workflow_status WHERE updated_at >= :since AND status IN ({terminal})"
            " AND name <> :skip_name ORDER BY updated_at LIMIT :limit"
        ),
        "event.set": (
            "SELECT o.workflow_uuid, w.name, o.completed_at_epoch_ms, o.function_id, h.key,"
            " h.value, h.serialization, w.application_name FROM {s}operation_outputs o"
            " JOIN {s}workflow_events_history h"
            " ON h.workflow_uuid = o.workflow_uuid AND h.function_id = o.function_id"
            " JOIN {s}workflow_status w ON w.workflow_uuid = o.workflow_uuid"
            f" WHERE o.completed_at_epoch_ms >= :since AND o.function_name = '{WEBHOOK_SET_EVENT}'"
            " AND w.name <> :skip_name ORDER BY o.completed_at_epoch_ms LIMIT :limit"
        ),
        "stream.closed": (
            "SELECT o.workflow_uuid, w.name, o.completed_at_epoch_ms, o.function_id, t.key,"
            " NULL, NULL, w.application_name FROM {s}operation_outputs o JOIN {s}streams t"
            " ON t.workflow_uuid = o.workflow_uuid AND t.function_id = o.function_id"
            " JOIN {s}workflow_status w ON w.workflow_uuid = o.workflow_uuid"
            " WHERE o.completed_at_epoch_ms >= :since"
            f" AND o.function_name = '{WEBHOOK_CLOSE_STREAM}'"
            " AND w.name <> :skip_name ORDER BY o.completed_at_epoch_ms LIMIT :limit"
        ),
        "message.received": (
            "SELECT n.destination_uuid, w.name, n.created_at_epoch_ms, n.message_uuid, n.topic,"
            " n.message, n.serialization, w.application_name FROM {s}notifications n"
            " JOIN {s}workflow_status w ON w.workflow_uuid = n.destination_uuid"
            " WHERE n.created_at_epoch_ms >= :since AND w.name <> :skip_name"
            " ORDER BY n.created_at_epoch_ms LIMIT :limit"
        ),
    }
    return {event: webhook_sql(is_sqlite, sql) for event, sql in queries.items()}


def webhook_deliveries_query(is_sqlite: bool) -> str:
    """(workflow_uuid, status, created_at, value, serialization of the `key` event) of the
    delivery workflows whose IDs start with :prefix (no LIKE wildcards in it), newest first."""
    return webhook_sql(
        is_sqlite,
        "SELECT s.workflow_uuid, s.status, s.created_at, e.value, e.serialization"
        " FROM {s}workflow_status s LEFT JOIN {s}workflow_events e"
        " ON e.workflow_uuid = s.workflow_uuid AND e.key = :key"
        " WHERE substr(s.workflow_uuid, 1, length(:prefix)) = :prefix"
        " ORDER BY s.created_at DESC LIMIT :limit",
    )
