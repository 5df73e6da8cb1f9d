"""What a feed hands its subscribers. Each subscriber gets the same objects, in order.

Every item is encoded at most once per ID it is shown under (frames.py caches the encoding on
the item), however many subscribers receive it.
"""

from dataclasses import dataclass, field
from typing import Any

from workflow_comm.models import WorkflowPublic


def _cache() -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class StreamValue:
    key: str
    offset: int
    value: Any
    encoded: dict[str, Any] = field(default_factory=_cache, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The stream was closed or its workflow finished: nothing follows `next_offset`."""

    key: str
    next_offset: int
    status: str
    encoded: dict[str, Any] = field(default_factory=_cache, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class EventSet:
    """One set_event, as the live feed hands it on (clients receive it as an EventChange)."""

    key: str
    value: Any
    version: int  # the DBOS step ID of the set_event: grows with every change
    decoded: bool = True  # False: stored in a format this server does not read (value None)
    encoded: dict[str, Any] = field(default_factory=_cache, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class EventsEnd:
    """The workflow finished and every change it made has been handed on."""

    status: str
    encoded: dict[str, Any] = field(default_factory=_cache, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StatusChange:
    workflow: WorkflowPublic
    encoded: dict[str, Any] = field(default_factory=_cache, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StatusEnd:
    workflow: WorkflowPublic
    encoded: dict[str, Any] = field(default_factory=_cache, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Overflow:
    """The subscriber fell `live_buffer` items behind and is cut off."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """This server stops serving the subscriber: it is shutting down, or lost a reader."""

    reason: str = "The server is shutting down; reconnect to resume."


@dataclass(frozen=True, slots=True)
class Flush:
    """Nothing more is ready now: write what was gathered before waiting for more."""


FLUSH = Flush()

Item = StreamValue | StreamEnd | EventSet | EventsEnd | StatusChange | StatusEnd
Control = Overflow | Shutdown
