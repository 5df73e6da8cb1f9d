"""What a feed hands its subscribers. Each subscriber gets the same objects, in order."""

from dataclasses import dataclass
from typing import Any

from workflow_comm.models import WorkflowPublic


@dataclass(frozen=True, slots=True)
class StreamValue:
    key: str
    offset: int
    value: Any


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The stream was closed or its workflow finished: nothing follows `next_offset`."""

    key: str
    next_offset: int
    status: str


@dataclass(frozen=True, slots=True)
class EventSet:
    """One set_event, as the live feed hands it on (clients receive it as an EventChange)."""

    key: str
    value: Any
    version: int  # the DBOS step ID of the set_event: grows with every change


@dataclass(frozen=True, slots=True)
class EventsEnd:
    """The workflow finished and every change it made has been handed on."""

    status: str


@dataclass(frozen=True, slots=True)
class StatusChange:
    workflow: WorkflowPublic


@dataclass(frozen=True, slots=True)
class StatusEnd:
    workflow: WorkflowPublic


@dataclass(frozen=True, slots=True)
class Overflow:
    """The subscriber fell `live_buffer` items behind and is cut off."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """This server stops serving the subscriber: it is shutting down, or lost a reader."""

    reason: str = "The server is shutting down; reconnect to resume."


Item = StreamValue | StreamEnd | EventSet | EventsEnd | StatusChange | StatusEnd
Control = Overflow | Shutdown
