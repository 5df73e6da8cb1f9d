"""One WebSocket per workflow: stream values, event changes and status out; messages in."""

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from dbos import DBOS
from fastapi import APIRouter, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from pydantic import ValidationError

from workflow_comm import names
from workflow_comm.auth import (
    admit_token,
    current_caller,
    identify,
    socket_key,
    stored_id,
)
from workflow_comm.errors import DatabaseUnavailable, within_db_timeout
from workflow_comm.live.feed import Interest, Subscriber
from workflow_comm.live.frames import compact_json, encode
from workflow_comm.live.hub import LiveCapacityExceeded, LiveHub
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
from workflow_comm.logs import bind_workflow_id_now
from workflow_comm.metrics import LIVE_PUSHED, MESSAGES_SENT
from workflow_comm.models import SocketSend
from workflow_comm.params import WorkflowId
from workflow_comm.service import find_status
from workflow_comm.settings import Settings

router = APIRouter(tags=["live"])
PUSHED_STREAM = LIVE_PUSHED.labels("websocket", "stream")
PUSHED_EVENT = LIVE_PUSHED.labels("websocket", "event")
PUSHED_STATUS = LIVE_PUSHED.labels("websocket", "status")

# Close codes: 1000 done, 1001 server going away, 1008 fell behind, 1009 frame over the hard
# cap, 1013 full, 4404 unknown (or beyond the client's token), 4401 no valid API key (keys are
# configured; see auth.py) or an expired or forged token, 4422 a path or query parameter out
# of bounds (the WebSocket's 422).
CLOSE_UNKNOWN_WORKFLOW = 4404
CLOSE_UNAUTHORIZED = 4401
CLOSE_BY_STATUS = {401: CLOSE_UNAUTHORIZED, 404: CLOSE_UNKNOWN_WORKFLOW}
CLOSE_INVALID_PARAMETER = 4422
CLOSE_FRAME_TOO_BIG = 1009


class Socket:
    """Serialises sends: the pump and the acks write to one connection from two tasks."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self._lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.send_text(compact_json(frame))

    async def send_text(self, text: str) -> None:
        async with self._lock:
            await self.ws.send_text(text)

    async def error(self, detail: Any, frame_id: Any = None) -> None:
        await self.send({"type": "error", "id": frame_id, "detail": detail})

    async def close(self, code: int, reason: str = "") -> None:
        async with self._lock:
            await self.ws.close(code=code, reason=reason)


async def refuse_invalid_parameters(websocket: WebSocket, exc: Exception) -> None:
    """App handler for a WebSocket whose path or query parameters fail validation.

    FastAPI would refuse the handshake, which a client sees as a bare HTTP 403, the same as
    an auth refusal. Instead the socket is accepted, told which field is wrong in an `error`
    frame, and closed with 4422.
    """
    assert isinstance(exc, WebSocketRequestValidationError)
    await websocket.accept()
    await _refuse_invalid(Socket(websocket), exc.errors())


async def _refuse_invalid(socket: Socket, errors: Sequence[Any]) -> None:
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors)
    await socket.error(f"Invalid parameter: {problems}")
    await socket.close(CLOSE_INVALID_PARAMETER)


@router.websocket("/ws/workflows/{workflow_id}")
async def workflow_socket(
    websocket: WebSocket,
    workflow_id: WorkflowId,
    stream_key: Annotated[
        str,
        Query(min_length=1, max_length=names.EVENT_KEY_MAX_LEN, pattern=names.WORKFLOW_ID_PATTERN),
    ] = names.STREAM_PROGRESS,
    stream_offset: Annotated[int, Query(ge=0, le=names.STREAM_OFFSET_MAX)] = 0,
    stream_from: Annotated[Literal["latest"] | None, Query()] = None,
    stream_tail: Annotated[int | None, Query(ge=0, le=names.STREAM_TAIL_MAX)] = None,
) -> None:
    """Frames out: stream, event, status, ack, error, closed. Frames in: {"type": "send", ...}.

    The stream starts at `stream_offset`, or with its last `stream_tail` values written, or
    (`stream_from=latest`) with the last one; then every new value.
    """
    await websocket.accept()
    socket = Socket(websocket)
    hub: LiveHub = websocket.app.state.live_hub
    bind_workflow_id_now(workflow_id)
    try:
        tail = _tail_wanted(websocket, stream_offset, stream_from, stream_tail)
        # A browser cannot set headers on a WebSocket: the key may come as ?api_key=, a token
        # as ?token=.
        caller = identify(websocket, socket_key(websocket), query_allowed=True)
        admit_token(websocket, caller, "read")  # sends are checked frame by frame
        watched = stored_id(workflow_id)
    except RequestValidationError as exc:  # contradicting options; a tenant's ID too long
        await _refuse_invalid(socket, exc.errors())
        return
    except HTTPException as exc:
        await socket.error(exc.detail)
        await websocket.close(code=CLOSE_BY_STATUS.get(exc.status_code, 1008))
        return
    try:
        known = await find_status(workflow_id)
    except DatabaseUnavailable:
        await socket.error("The database is unavailable; retry shortly.")
        await websocket.close(code=1013)
        return
    if known is None:
        await socket.error(f"Workflow '{workflow_id}' does not exist.")
        await websocket.close(code=CLOSE_UNKNOWN_WORKFLOW)
        return
    if tail is not None:
        try:
            length = await within_db_timeout(hub.db.stream_length(watched, stream_key))
        except DatabaseUnavailable:
            await socket.error("The database is unavailable; retry shortly.")
            await websocket.close(code=1013)
            return
        stream_offset = max(0, length - tail)
    try:
        hub.acquire()
    except LiveCapacityExceeded:
        await socket.error(f"Too many live connections (limit {hub.max_connections}).")
        await websocket.close(code=1013)
        return
    interest = Interest(
        status=True, events=True, stream_key=stream_key, stream_offset=stream_offset
    )
    sub = hub.subscribe(watched, interest, known)
    pump = asyncio.create_task(_pump(socket, sub, workflow_id, hub.heartbeat))
    listen = asyncio.create_task(_listen(socket, workflow_id))
    try:
        try:
            await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, listen):
                task.cancel()
            await asyncio.gather(pump, listen, return_exceptions=True)
            hub.unsubscribe(sub)
        if pump.done() and not pump.cancelled() and pump.exception() is None:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=pump.result())
    finally:
        # After the close: at shutdown the server waits for this count to reach zero before
        # uvicorn closes what is left (server.py).
        hub.release()


def _tail_wanted(
    websocket: WebSocket, offset: int, start_from: str | None, tail: int | None
) -> int | None:
    """The SSE route's rule (routes/live.py tail_wanted) under the WebSocket's names."""
    if start_from is not None and tail is not None:
        problem = "Use either stream_from=latest or stream_tail=N, not both"
        raise _invalid("stream_tail", problem, tail)
    if start_from is not None:
        tail = 1
    if tail is not None and "stream_offset" in websocket.query_params:
        problem = "Use either stream_offset or stream_tail / stream_from=latest, not both"
        raise _invalid("stream_offset", problem, offset)
    return tail


def _invalid(field: str, problem: str, given: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": problem, "input": given}]
    )


class _Frames:
    """How one socket shows the items its subscriber is handed, and what it has shown."""

    def __init__(self, sub: Subscriber, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.next_offset = sub.interest.stream_offset  # where to resume the stream
        self.status = "PENDING"
        # Status and events come from two readers; the final status frame waits for the last
        # event change, so a client that stops at SUCCESS has seen every event.
        self.final_status: str | None = None
        self.events_done = False

    def render(self, item: Item) -> str | None:
        """The frame of a stream value, event change or status change (or None: not now).
        The feed calls this too, to write the frame itself (Subscriber.attach)."""
        if isinstance(item, StreamValue):
            self.next_offset = item.offset + 1
            PUSHED_STREAM.inc()
            return encode(item, self.workflow_id).ws
        if isinstance(item, EventSet):
            PUSHED_EVENT.inc()
            return encode(item, self.workflow_id).ws
        if isinstance(item, StatusChange):
            self.status = item.workflow.status
            PUSHED_STATUS.inc()
            frame = encode(item, self.workflow_id).ws  # under the ID this client uses
            if self.status in names.TERMINAL_STATUSES and not self.events_done:
                self.final_status = frame
                return None
            return frame
        return None


async def _pump(socket: Socket, sub: Subscriber, workflow_id: str, heartbeat: float) -> int:
    """Send what the hub hands the subscriber; returns the close code to use."""
    shown = _Frames(sub, workflow_id)

    async def write(frames: list[str]) -> None:
        for frame in frames:
            await socket.send_text(frame)

    sub.attach(shown.render, write)
    try:
        async for item in sub.items(workflow_id, heartbeat):
            if item is None:
                continue  # idle: a WebSocket needs no heartbeat of ours
            if isinstance(item, (StreamValue, EventSet, StatusChange)):
                frame = shown.render(item)
                if frame is not None:
                    await socket.send_text(frame)
            elif isinstance(item, StatusEnd):
                shown.status = item.workflow.status
            elif isinstance(item, StreamEnd):
                await socket.send_text(encode(item, workflow_id).ws)
            elif isinstance(item, Overflow):
                await socket.send({"type": "overflow", "resume_offset": shown.next_offset})
                return 1008
            elif isinstance(item, Shutdown):
                await socket.send({"type": "shutdown", "resume_offset": shown.next_offset})
                return 1001
            elif isinstance(item, EventsEnd):
                shown.status, shown.events_done = item.status, True
                if shown.final_status is not None:
                    await socket.send_text(shown.final_status)
        await socket.send({"type": "closed", "status": shown.status})
        return 1000
    finally:
        sub.detach()


async def _listen(socket: Socket, workflow_id: str) -> None:
    """Turn each client frame into a message to the workflow, acknowledged or refused."""
    settings: Settings = socket.ws.app.state.settings
    limit, cap = settings.max_message_bytes, settings.ws_max_frame_bytes
    while True:
        message = await socket.ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await socket.error("Send JSON text frames, not binary.")
            continue
        size = len(text.encode())
        if size > cap:
            # python server.py's transport closes such a frame with 1009 before it gets here;
            # uvicorn's own CLI reads frames up to its --ws-max-size (16 MiB): close alike.
            await socket.close(CLOSE_FRAME_TOO_BIG, f"Frame exceeds the limit of {cap} bytes.")
            return
        if size > limit:
            await socket.error(f"Frame too large: the limit is {limit} bytes.")
            continue
        try:
            frame = SocketSend.model_validate_json(text)
        except ValidationError as exc:
            await socket.error(_describe(exc), _frame_id(text))
            continue
        caller = current_caller()
        if not caller.can_send:
            refusal = (
                "This token lacks the send scope."
                if caller.grant is not None
                else "This key may only read: sending needs a write key."
            )
            await socket.error(refusal, frame.id)
            continue
        try:
            await within_db_timeout(
                DBOS.send_async(
                    stored_id(workflow_id),
                    frame.payload,
                    frame.topic,
                    idempotency_key=frame.idempotency_key,
                )
            )
        except DatabaseUnavailable:
            await socket.error("The database is unavailable; the message was not sent.", frame.id)
            continue
        MESSAGES_SENT.labels("websocket").inc()
        await socket.send({"type": "ack", "id": frame.id, "topic": frame.topic})


def _describe(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'frame'}: {err['msg']}" for err in exc.errors()
    ]
    return 'Expected {"type": "send", "topic": ..., "payload": {...}}. ' + "; ".join(problems)


def _frame_id(text: str) -> Any:
    with contextlib.suppress(ValueError, AttributeError):
        frame_id = json.loads(text).get("id")
        if isinstance(frame_id, (str, int)):
            return frame_id
    return None
