"""Each item encoded once: its SSE frame (bytes) and its WebSocket frame (text).

`encode(item, workflow_id)` builds both from one JSON payload the first time a subscriber
needs them and caches them on the item, which every subscriber of the feed shares: a value
pushed to a thousand subscribers is encoded once. Items that name their workflow (status,
the end items) are cached per ID they are shown under, since a tenant's client knows a
workflow by a shorter ID than an operator's.

The wire format: SSE frames are `event:` (if named), `data:` and `id:` lines, then a blank
line, as FastAPI's EventSourceResponse wrote them; WebSocket frames are compact JSON objects
with a `type`.
"""

import json
from dataclasses import dataclass
from typing import Any

from workflow_comm.live.items import (
    EventsEnd,
    EventSet,
    Item,
    Overflow,
    Shutdown,
    StatusChange,
    StatusEnd,
    StreamEnd,
    StreamValue,
)
from workflow_comm.models import WorkflowPublic

PING = b": ping\n\n"  # the SSE heartbeat: a comment line
OVERFLOW_REASON = "This client fell too far behind; reconnect to resume."


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sse_frame(data: str, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One server-sent event. `data` is compact JSON, so it is one line."""
    lines = [] if event is None else [f"event: {event}"]
    lines.append(f"data: {data}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True, slots=True)
class Frames:
    sse: bytes
    ws: str  # "" for an item the WebSocket does not send as a frame of its own


def workflow_json(workflow: WorkflowPublic, workflow_id: str) -> str:
    """The workflow as `GET /workflows/{id}` shows it, under the ID its reader knows it by."""
    return compact_json(workflow.model_dump(mode="json") | {"workflow_id": workflow_id})


def encode(item: Item, workflow_id: str) -> Frames:
    """The frames of `item` for a subscriber that knows the workflow as `workflow_id`."""
    # Stream values and event changes do not name the workflow: one encoding serves all IDs.
    view = "" if isinstance(item, (StreamValue, EventSet)) else workflow_id
    frames: Frames | None = item.encoded.get(view)
    if frames is None:
        frames = item.encoded[view] = _build(item, workflow_id)
    return frames


def _build(item: Item, workflow_id: str) -> Frames:
    """The one place each item's payload is built; SSE and WebSocket differ in framing only."""
    if isinstance(item, StreamValue):
        value = compact_json(item.value)
        return Frames(
            sse_frame(value, event_id=str(item.offset)),
            f'{{"type":"stream","key":{compact_json(item.key)},"offset":{item.offset},'
            f'"value":{value}}}',
        )
    if isinstance(item, EventSet):
        change = compact_json({"key": item.key, "value": item.value, "version": item.version})
        return Frames(
            sse_frame(change, event_id=str(item.version)), '{"type":"event",' + change[1:]
        )
    if isinstance(item, StatusChange):
        workflow = workflow_json(item.workflow, workflow_id)
        return Frames(sse_frame(workflow), f'{{"type":"status","workflow":{workflow}}}')
    if isinstance(item, StatusEnd):
        return Frames(sse_frame(workflow_json(item.workflow, workflow_id), event="closed"), "")
    if isinstance(item, StreamEnd):
        closed = {
            "workflow_id": workflow_id,
            "key": item.key,
            "status": item.status,
            "next_offset": item.next_offset,
        }
        ws = {"type": "stream_closed", "key": item.key, "next_offset": item.next_offset}
        return Frames(sse_frame(compact_json(closed), event="closed"), compact_json(ws))
    assert isinstance(item, EventsEnd)
    closed = {"workflow_id": workflow_id, "status": item.status}
    return Frames(sse_frame(compact_json(closed), event="closed"), "")


def cut_off_sse(why: Overflow | Shutdown, resume: dict[str, Any]) -> bytes:
    """The last SSE frame of a subscriber cut off: where to resume, and why."""
    if isinstance(why, Overflow):
        return sse_frame(compact_json({**resume, "reason": OVERFLOW_REASON}), event="overflow")
    return sse_frame(compact_json({**resume, "reason": why.reason}), event="shutdown")
