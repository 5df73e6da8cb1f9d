"""Workflow operations the routes share: start under an ID, look one up, describe it.

Reads go straight to DBOS's tables (dbos_internals.DirectReads: one statement each, async)
rather than through DBOS's calls, which pass a worker thread and SQLAlchemy each time. What
a finished workflow answers is kept (FinishedCache): once SUCCESS or ERROR, its status,
result and events never change, so reading them again is a dictionary lookup.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, SetWorkflowID, WorkflowStatus
from dbos import error as dbos_error
from fastapi import FastAPI, HTTPException

from workflow_comm import dbos_internals, names
from workflow_comm.auth import stored_id
from workflow_comm.dbos_internals import DirectReads, NotPortable
from workflow_comm.errors import DatabaseUnavailable, unknown_workflow, within_db_timeout
from workflow_comm.metrics import WORKFLOWS_STARTED
from workflow_comm.models import WorkflowPublic
from workflow_comm.names import WorkflowKind
from workflow_comm.settings import Settings
from workflow_comm.workflows import KIND_BY_FUNCTION

# Connections the direct reads keep open to Postgres (besides DBOS's own pool).
DIRECT_READ_CONNECTIONS = 8
# Finished workflows whose answers are kept, and for how long at most. Resume never applies
# to SUCCESS or ERROR (DBOS resumes neither, nor does routes/control.py), so nothing this
# server does changes them; the time bound covers what is done outside it (DBOS's rewind or
# delete from its CLI or another program): seen within FINISHED_CACHE_TTL_SEC.
FINISHED_CACHE_SIZE = 4096
FINISHED_CACHE_TTL_SEC = 60.0
# Streams of finished workflows kept whole (each at most names.STREAM_PAGE_MAX values).
FINISHED_STREAMS_CACHED = 256
FINAL_STATUSES = frozenset({"SUCCESS", "ERROR"})


class FinishedCache:
    """Answers of finished (SUCCESS or ERROR) workflows by stored ID, least recently used out.

    Keyed by the stored ID, never the caller's: each route renders the entry under the
    caller's own ID (describe), so tenants share nothing but the database's truth.
    """

    def __init__(self, size: int, ttl: float, streams_size: int = 0) -> None:
        self.size = size
        self.ttl = ttl
        self.streams_size = streams_size
        # stored ID -> [expires at (monotonic), status, events or None]
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        # (stored ID, key) -> (expires at, every value up to the stream's end)
        self._streams: OrderedDict[tuple[str, str], tuple[float, list[Any]]] = OrderedDict()

    def _entry(self, stored: str) -> list[Any] | None:
        entry = self._entries.get(stored)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[stored]
            return None
        self._entries.move_to_end(stored)
        return entry

    def status(self, stored: str) -> WorkflowStatus | None:
        entry = self._entry(stored)
        return None if entry is None else entry[1]

    def events(self, stored: str) -> dict[str, Any] | None:
        entry = self._entry(stored)
        return None if entry is None else entry[2]

    def put(self, status: WorkflowStatus, events: dict[str, Any] | None = None) -> None:
        """Keep a finished workflow's status (and its events, read after that status)."""
        if status.status not in FINAL_STATUSES:
            return
        stored = status.workflow_id
        entry = self._entries.get(stored)
        if entry is not None and events is None:
            events = entry[2]
        self._entries[stored] = [time.monotonic() + self.ttl, status, events]
        self._entries.move_to_end(stored)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def stream(self, stored: str, key: str) -> list[Any] | None:
        """Every value of a finished workflow's stream `key` (up to its end), if kept."""
        entry = self._streams.get((stored, key))
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._streams[(stored, key)]
            return None
        self._streams.move_to_end((stored, key))
        values: list[Any] = entry[1]
        return values

    def put_stream(self, stored: str, key: str, values: list[Any]) -> None:
        """Keep the whole stream of a SUCCESS or ERROR workflow: its function has returned,
        so nothing more is written. (A CANCELLED one may still be writing.)"""
        self._streams[(stored, key)] = (time.monotonic() + self.ttl, values)
        self._streams.move_to_end((stored, key))
        while len(self._streams) > self.streams_size:
            self._streams.popitem(last=False)

    def forget(self, stored: str) -> None:
        self._entries.pop(stored, None)
        for cached in [k for k in self._streams if k[0] == stored]:
            del self._streams[cached]

    def clear(self) -> None:
        self._entries.clear()
        self._streams.clear()


@dataclass(frozen=True)
class ServedApps:
    """The DBOS applications whose workflows the routes serve: the one DBOS runs in this
    process (`own`), and those COMM_SERVE_APPS adds (`others`; None: every application).

    A workflow of another application is answered as unknown (404) and left out of lists.
    A workflow of no application is unclaimed, and DBOS lets any application run it: served.
    """

    own: str | None
    others: frozenset[str] | None = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings, own: str | None) -> "ServedApps":
        if "*" in settings.serve_apps:
            return cls(own, None)
        return cls(own, frozenset(settings.serve_apps) - {own})

    @property
    def everything(self) -> bool:
        return self.others is None

    @property
    def names(self) -> list[str] | None:
        """The served names, own first, for a list query; None for every application."""
        if self.others is None:
            return None
        return [name for name in (self.own, *sorted(self.others)) if name is not None]

    def serves(self, app: str | None) -> bool:
        return app is None or self.others is None or app == self.own or app in self.others


finished = FinishedCache(FINISHED_CACHE_SIZE, FINISHED_CACHE_TTL_SEC, FINISHED_STREAMS_CACHED)
# Set with the direct reads (direct_reads_lifespan), from the settings and DBOS's own name;
# outside it (no routes), no application is left out.
served = ServedApps(None, None)
# Stored ID -> application name, as read with a status (names never change once set): a send
# to a workflow seen before needs no read to tell whether it is served.
OWNERS_KEPT = 4096
_owners: OrderedDict[str, str] = OrderedDict()
# One per process, like DBOS itself: opened by direct_reads_lifespan after DBOS launched.
# None (outside the lifespan): every read goes through DBOS's own calls.
_reads: DirectReads | None = None


@asynccontextmanager
async def direct_reads_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The direct reads live as long as the app (a router lifespan, after DBOS's)."""
    global _reads, served
    settings: Settings = app.state.settings
    served = ServedApps.from_settings(settings, dbos_internals.dbos_app_name())
    _owners.clear()
    _reads = await dbos_internals.open_direct_reads(
        settings.sqlalchemy_url,
        max_connections=DIRECT_READ_CONNECTIONS,
        timeout=settings.db_timeout_sec,
    )
    finished.clear()
    try:
        yield
    finally:
        reads, _reads = _reads, None
        await reads.close()


async def _read_status(stored: str) -> WorkflowStatus | None:
    if _reads is not None:
        try:
            return await _reads.status(stored)
        except NotPortable:
            pass
    return await DBOS.get_workflow_status_async(stored)


async def find_stored(stored: str) -> WorkflowStatus | None:
    """The status of the workflow stored as `stored`, or None if there is none (or it
    belongs to an application this server does not serve)."""
    found = finished.status(stored)
    if found is None:
        found = await within_db_timeout(_read_status(stored))
        if found is not None:
            finished.put(found)
    if found is None:
        return None
    owner = application_of(found)
    if owner is not None:
        _owners[stored] = owner
        _owners.move_to_end(stored)
        while len(_owners) > OWNERS_KEPT:
            _owners.popitem(last=False)
    return found if served.serves(owner) else None


def application_of(status: WorkflowStatus) -> str | None:
    """The application a workflow belongs to (None: unclaimed)."""
    owner: str | None = getattr(status, "application_name", None)
    return owner


async def require_served(workflow_id: str) -> None:
    """A 404 unless the workflow exists and is served; no database read when every
    application is served, or for a workflow whose application was read before."""
    if served.everything:
        return
    owner = _owners.get(stored_id(workflow_id))
    if owner is not None and served.serves(owner):
        return
    if owner is not None or await find_status(workflow_id) is None:
        raise unknown_workflow(workflow_id)


async def find_status(workflow_id: str) -> WorkflowStatus | None:
    # IDs here are the client's; stored_id adds the caller's tenant prefix, if any (auth.py).
    return await find_stored(stored_id(workflow_id))


async def require_status(workflow_id: str) -> WorkflowStatus:
    """The workflow's status, or a 404 that says the workflow does not exist."""
    status = await find_status(workflow_id)
    if status is None:
        raise unknown_workflow(workflow_id)
    return status


async def _read_events(stored: str) -> dict[str, Any]:
    if _reads is not None:
        try:
            return await _reads.events(stored)
        except NotPortable:
            pass
    return await DBOS.get_all_events_async(stored)


async def read_events(status: WorkflowStatus) -> dict[str, Any]:
    """Every event's latest value of the workflow `status` describes, read after it.

    Read after a finished status, the events are final too, and are kept with it.
    The dictionary may be shared: never change it.
    """
    stored = status.workflow_id
    events = finished.events(stored)
    if events is None:
        events = await within_db_timeout(_read_events(stored))
        finished.put(status, events)
    return events


async def list_statuses(
    *,
    status: str | None,
    name: str | None,
    id_prefix: str | None,
    limit: int,
    app: str | None = None,
) -> list[WorkflowStatus]:
    """Recent workflows of the served applications, unclaimed ones included (or of `app`
    only, if served), newest first (DBOS's list_workflows with these filters)."""
    if app is not None and not served.serves(app):
        return []
    apps = [app] if app is not None else served.names
    if _reads is not None:
        try:
            return list(
                await within_db_timeout(
                    _reads.workflows(
                        app_name=apps,
                        status=status,
                        name=name,
                        id_prefix=id_prefix,
                        limit=limit,
                        unclaimed=app is None,
                    )
                )
            )
        except NotPortable:
            pass
    found = await within_db_timeout(
        DBOS.list_workflows_async(
            status=status,
            name=name,
            # None would be DBOS's own application only; [] is every application.
            application_name=[] if apps is None else apps,
            limit=limit,
            sort_desc=True,
            load_input=False,
            workflow_id_prefix=id_prefix,
        )
    )
    # DBOS lists unclaimed workflows under every application name; `app` asks for its own.
    return [s for s in found if app is None or application_of(s) == app]


@dataclass(frozen=True)
class Started:
    """What a start did: whether it created the workflow, and the arguments it runs with."""

    workflow_id: str
    kind: WorkflowKind
    created: bool
    args: list[Any]

    def answer(self, started_message: str) -> dict[str, Any]:
        """The fields of every start's answer (models.StartedWorkflow)."""
        wf = self.workflow_id
        return {
            "workflow_id": wf,
            "kind": self.kind,
            "created": self.created,
            "message": (
                started_message
                if self.created
                else f"Workflow {wf} already exists; returning it unchanged"
            ),
            "status_endpoint": f"/workflows/{wf}",
        }


async def start_once(
    kind: WorkflowKind,
    workflow: Callable[..., Coroutine[Any, Any, Any]],
    workflow_id: str,
    *args: Any,
) -> Started:
    """Start `workflow` under `workflow_id` (with `args`), or find the one started before.

    created is False if one of the same kind already has the ID; a repeat's arguments are
    ignored, as the existing workflow goes on as it was started, so its own are returned.
    A workflow of another kind with that ID is a 409.
    """
    try:
        with SetWorkflowID(stored_id(workflow_id), workflow_id_reuse_policy="reject"):
            # Shielded: a start cut off by the timeout would leave its workflow recorded but
            # never run. It completes; the client got a 503, retries, and finds it running.
            await within_db_timeout(asyncio.shield(DBOS.start_workflow_async(workflow, *args)))
        WORKFLOWS_STARTED.labels(kind).inc()
        return Started(workflow_id, kind, True, list(args))
    except dbos_error.DBOSWorkflowIDInUseError:
        # DBOS's own read: the workflow's arguments are wanted too.
        existing = await within_db_timeout(DBOS.get_workflow_status_async(stored_id(workflow_id)))
        if existing is None:
            raise unknown_workflow(workflow_id) from None
        existing_kind = KIND_BY_FUNCTION.get(existing.name)
        if existing_kind != kind:
            raise HTTPException(
                409,
                f"Workflow '{workflow_id}' already exists as "
                f"{with_article(existing_kind or existing.name)} workflow; choose another ID "
                f"to start {with_article(kind)} workflow.",
            ) from None
        runs_with = list(existing.input["args"]) if existing.input else list(args)
        return Started(workflow_id, kind, False, runs_with)


def with_article(word: str) -> str:
    """ "an events", "a messaging": the indefinite article a word takes, then the word."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def describe(status: WorkflowStatus, workflow_id: str) -> WorkflowPublic:
    """The workflow as clients see it, under `workflow_id`: the ID its reader knows it by."""
    error = status.error
    return WorkflowPublic(
        workflow_id=workflow_id,
        kind=KIND_BY_FUNCTION.get(status.name),
        status=status.status,
        name=status.name,
        created_at=status.created_at,
        updated_at=status.updated_at,
        completed_at=status.completed_at,
        executor_id=status.executor_id,
        application_version=status.app_version,
        result=status.output,
        error=None if error is None else f"{type(error).__name__}: {error}",
        application_name=application_of(status),
    )


async def read_stream_page(
    workflow_id: str, key: str, offset: int, limit: int
) -> tuple[list[Any], bool, bool] | None:
    """Values from `offset` written so far, at most `limit`: (values, has_more, closed), or
    None if the workflow does not exist (or is not served). One statement, status and
    values together; none for a finished workflow's stream read before (FinishedCache)."""
    stored = stored_id(workflow_id)
    whole = finished.stream(stored, key)  # kept only once read as served
    if whole is not None and offset <= len(whole):
        return _page_of(whole, offset, limit)
    if _reads is not None:
        try:
            return await _direct_page(_reads, stored, key, offset, limit)
        except NotPortable:
            pass
    if not served.everything and await find_stored(stored) is None:
        return None
    try:
        return await _dbos_read_page(stored, key, offset, limit)
    except dbos_error.DBOSNonExistentWorkflowError:
        return None


async def stream_keys(status: WorkflowStatus) -> list[tuple[str, int, bool]]:
    """(key, length, closed) of every stream of the workflow `status` describes, by key;
    closed once close_stream ended it or the workflow finished."""
    if _reads is None:
        raise DatabaseUnavailable("the direct reads are not open")
    found = await within_db_timeout(_reads.stream_keys(status.workflow_id))
    ended = status.status in names.TERMINAL_STATUSES
    return [(key, length, closed or ended) for key, length, closed in found]


def _page_of(whole: list[Any], offset: int, limit: int) -> tuple[list[Any], bool, bool]:
    """A page of a finished stream kept whole: as DBOS reads it, closed at its end."""
    values = whole[offset : offset + limit]
    has_more = offset + limit < len(whole)
    return values, has_more, not has_more


async def _direct_page(
    reads: DirectReads, stored: str, key: str, offset: int, limit: int
) -> tuple[list[Any], bool, bool] | None:
    """A page read directly; the whole stream kept once its workflow is SUCCESS or ERROR."""
    read = await reads.stream_with_owner(stored, key, offset, limit)
    if read is None or not served.serves(read[1]):
        return None
    status, _, page = read
    if status in FINAL_STATUSES and finished.streams_size:
        if offset == 0 and page[2]:  # the page is the whole stream
            finished.put_stream(stored, key, page[0])
        else:
            whole = await reads.stream_with_status(stored, key, 0, names.STREAM_PAGE_MAX)
            if whole is not None and whole[1][2]:  # ends within a page: kept
                finished.put_stream(stored, key, whole[1][0])
    return page


async def read_page(
    workflow_id: str, key: str, offset: int, limit: int
) -> tuple[list[Any], bool, bool]:
    """Values from `offset` written so far, at most `limit`: (values, has_more, closed).

    An unknown workflow raises DBOSNonExistentWorkflowError, as DBOS's read_stream does.
    """
    page = await read_stream_page(workflow_id, key, offset, limit)
    if page is None:
        raise dbos_error.DBOSNonExistentWorkflowError("target", stored_id(workflow_id))
    return page


async def _dbos_read_page(
    stored: str, key: str, offset: int, limit: int
) -> tuple[list[Any], bool, bool]:
    """read_stream_page through DBOS's own read_stream.

    timeout_seconds=0 makes DBOS yield what is there and then either end (the stream is
    closed or its workflow finished) or raise DBOSStreamTimeoutError (still open).
    """
    values: list[Any] = []
    reader = DBOS.read_stream_async(stored, key, offset=offset, timeout_seconds=0)
    try:
        async for value in reader:
            if len(values) == limit:
                return values, True, False  # one more exists: this page is full
            values.append(value)
        return values, False, True
    except dbos_error.DBOSStreamTimeoutError:
        return values, False, False
    finally:
        await reader.aclose()


def direct_reads() -> DirectReads:
    """The direct reads, for what only they read (the mailbox, the timeline)."""
    if _reads is None:
        raise DatabaseUnavailable("the direct reads are not open")
    return _reads
