"""One workflow's timeline, built from what DBOS records (dbos_internals.TimelineRows). No HTTP.

What DBOS 3.4.0 keeps, and so what a timeline can truthfully show:
- `workflow_status`: when the workflow was created and by which executor, its current status
  (no history of statuses: only the latest, with `updated_at`), when it completed, its result
  or error, and `recovery_attempts` (a count: when each attempt began is not kept).
- `operation_outputs`: every step and DBOS operation the workflow made, in order (function_id),
  each with its start and end time and its output or error. Sends record no destination.
- `workflow_events_history`: each set_event (key, value), joined to its operation's times.
- `streams`: each value written (key, offset) and the close marker, joined the same way.
- `notifications`: each message sent to the workflow (when), and which recv took it.

Entries are in the workflow's own order (its operations by function_id), with each message
sent to it placed by when it was sent; `created` comes first and the status or `end` last.
On SQLite, DBOS records the workflow's and the messages' times to the second (operations to
the millisecond): there a message may sort a little early.
"""

import json
from typing import Any, Literal

from workflow_comm import dbos_internals as di
from workflow_comm.models import WorkflowPublic
from workflow_comm.models_mailbox import TimelineEntry
from workflow_comm.names import TERMINAL_STATUSES


def shown(
    text: str | None, length: int | None, serialization: str | None, chars: int
) -> dict[str, Any]:
    """A stored value as a timeline shows it: `value` if short and JSON, else a `preview`."""
    if text is None:
        return {}
    if length is not None and length > chars:
        return {"preview": text[:chars]}
    try:
        return {"value": di.decode_portable(text, serialization)}
    except (di.NotPortable, ValueError):
        return {}  # pickled: never unpickled here


def error_text(text: str | None, chars: int) -> str | None:
    """A recorded error as "Name: message" (portable JSON), else its stored text, bounded."""
    if text is None:
        return None
    try:
        data = json.loads(text)
        return f"{data['name']}: {data['message']}"[:chars]
    except (ValueError, KeyError, TypeError):
        return text[:chars]


def build_timeline(
    rows: di.TimelineRows, status: WorkflowPublic, chars: int
) -> list[TimelineEntry]:
    """Every entry of the workflow's timeline, in order."""
    keyed: list[tuple[tuple[int, int, int, int], TimelineEntry]] = []
    if rows.status is None:
        return []
    created_at, executor, state, updated_at, completed_at, attempts, _ = rows.status
    created = int(created_at)
    keyed.append(
        (
            (0, created, 0, -1),
            TimelineEntry(type="created", at=created, id="created", executor_id=executor),
        )
    )
    if attempts is not None and int(attempts) > 1:
        # DBOS counts each start and each recovery of the workflow; it keeps no time for them.
        keyed.append(
            (
                (0, created, 1, -1),
                TimelineEntry(type="recovery", at=None, id="recovery", attempts=int(attempts) - 1),
            )
        )

    previous = created
    events = {int(r[0]): r for r in rows.events}
    streams: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows.streams:
        streams.setdefault(int(row[0]), []).append(row)
    received = {m.consumed_by: m for m in rows.messages if m.consumed_by is not None}

    for (
        fid,
        name,
        started,
        completed,
        output,
        out_len,
        error,
        serialization,
        child,
    ) in rows.operations:
        fid = int(fid)
        start = None if started is None else int(started)
        end = None if completed is None else int(completed)
        # The workflow's own order (function_id), placed in time by when each began (a recv:
        # when it took its message), never before the operation ahead of it.
        began = end if name == di.OP_RECV else start
        recorded = previous = max(previous, began if began is not None else previous)
        base: dict[str, Any] = {
            "at": start if start is not None else end,
            "step_id": fid,
            "id": f"op-{fid}",
        }
        if name == di.OP_SET_EVENT and fid in events:
            _, key, value, length, ser = events[fid]
            entry = TimelineEntry(
                type="event", key=key, version=fid, **base, **shown(value, length, ser, chars)
            )
            keyed.append(((1, recorded, 2, fid), entry))
        elif name in (di.OP_WRITE_STREAM, di.OP_CLOSE_STREAM) and fid in streams:
            for _, key, offset, value, length, ser in streams[fid]:
                if di.is_stream_close_marker(value, ser):
                    entry = TimelineEntry(type="stream_close", key=key, offset=int(offset), **base)
                else:
                    entry = TimelineEntry(
                        type="stream_write",
                        key=key,
                        offset=int(offset),
                        **base,
                        **shown(value, length, ser, chars),
                    )
                keyed.append(((1, recorded, 2, fid), entry))
        elif name == di.OP_RECV:
            message = received.get(fid)
            if message is None:
                keyed.append(
                    (
                        (1, recorded, 2, fid),
                        TimelineEntry(type="recv_timeout", **{**base, "at": end}),
                    )
                )
            else:
                entry = TimelineEntry(
                    type="message_received",
                    topic=message.topic,
                    message_id=message.message_id,
                    **{**base, "at": end},
                )
                keyed.append(((1, recorded, 2, fid), entry))
        elif name == di.OP_SEND:
            keyed.append(((1, recorded, 2, fid), TimelineEntry(type="send", name=name, **base)))
        else:
            kind: Literal["operation", "step"]
            kind = "operation" if name.startswith(di.DBOS_OPERATION_PREFIX) or child else "step"
            entry = TimelineEntry(
                type=kind,
                name=name,
                end=end,
                duration_ms=None if start is None or end is None else end - start,
                error=error_text(error, chars),
                **base,
                **(
                    {}
                    if error is not None
                    else _output(shown(output, out_len, serialization, chars))
                ),
            )
            keyed.append(((1, recorded, 2, fid), entry))

    for message in rows.messages:
        sent = json.dumps(message.payload)
        entry = TimelineEntry(
            type="message_sent",
            at=message.sent_at,
            id=f"msg-{message.message_id}",
            topic=message.topic,
            message_id=message.message_id,
            **shown(sent, len(sent), None, chars),
        )
        keyed.append(((1, message.sent_at, 2, -1), entry))

    if state in TERMINAL_STATUSES:
        at = int(completed_at if completed_at is not None else updated_at)
        error = status.error
        entry = TimelineEntry(
            type="end",
            at=at,
            id="end",
            status=state,
            output=status.result,
            error=None if error is None else error[:chars],
        )
        keyed.append(((2, at, 3, 0), entry))
    else:
        at = int(updated_at)
        keyed.append(
            ((2, at, 3, 0), TimelineEntry(type="status", at=at, id="status", status=state))
        )
    keyed.sort(key=lambda pair: pair[0])
    return [entry for _, entry in keyed]


def _output(value: dict[str, Any]) -> dict[str, Any]:
    """A step's output under `output` (a long one as a `preview`)."""
    if "value" in value:
        return {"output": value["value"]}
    return value
