"""Direct reads of DBOS's tables (dbos_internals.DirectReads) against DBOS's own API.

Each backend gets a fresh database and DBOS launched in this process, with the server's own
configuration (runtime.dbos_config), on an event loop of its own in a background thread. It
runs the server's three workflows and a few of the test's own to reach every state: running,
finished, cancelled, errored, a stream left open, a stream its workflow ended without closing,
an event set to null, and values DBOS stored pickled (which the direct reads leave to DBOS).
Every direct read is then compared with what DBOS's own call answers on the same data.
"""

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
import pytest
from dbos import DBOS, SetWorkflowID, WorkflowSerializationFormat, WorkflowStatus

from tests.support import ThrowawayPostgres, unique_id
from workflow_comm import dbos_internals, names, service
from workflow_comm.dbos_internals import DirectReads, NotPortable
from workflow_comm.runtime import dbos_config
from workflow_comm.settings import Settings
from workflow_comm.workflows import (
    workflow_with_events,
    workflow_with_messaging,
    workflow_with_streaming,
)

T = TypeVar("T")
WAIT = 60.0  # seconds any one step of the setup may take on a loaded machine
OTHER_STREAM = "values"


@DBOS.workflow()
async def reads_open_stream(release_topic: str) -> dict[str, Any]:
    """Writes a stream with awkward values, sets an event to null, then waits to be released;
    ends without closing its stream."""
    for value in (None, {"a": [1, 2]}, "text", 3.5, False):
        await DBOS.write_stream_async(OTHER_STREAM, value)
    await DBOS.set_event_async("nothing", None)
    await DBOS.set_event_async("count", 1)
    await DBOS.set_event_async("count", 2)  # the latest value counts
    await DBOS.recv_async(release_topic, timeout_seconds=3600)
    await DBOS.write_stream_async(OTHER_STREAM, "after release")
    return {"released": True, "empty": [], "nested": {"x": None}}


@DBOS.workflow()
async def reads_fails(message: str) -> None:
    await DBOS.set_event_async("before", "failing")
    await DBOS.write_stream_async(OTHER_STREAM, 1)
    raise ValueError(message)


@DBOS.workflow()
async def reads_writes(workflow_number: int) -> None:
    await DBOS.set_event_async("number", workflow_number)
    await DBOS.write_stream_async(OTHER_STREAM, "first")
    await DBOS.write_stream_async(OTHER_STREAM, "second")
    await DBOS.set_event_async("number", workflow_number + 1)


@DBOS.workflow(serialization_type=WorkflowSerializationFormat.NATIVE)
async def reads_pickled() -> dict[str, Any]:
    """Everything stored pickled (DBOS's native format): the direct reads must not decode it."""
    native = WorkflowSerializationFormat.NATIVE
    await DBOS.set_event_async("pickled", {"a": 1}, serialization_type=native)
    await DBOS.write_stream_async(OTHER_STREAM, ("a", "tuple"), serialization_type=native)
    return {"pickled": True}


class Loop:
    """An event loop in a thread of its own, for DBOS and the reads: tests submit to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class World:
    """DBOS launched on one backend, the direct reads, and the workflows made for the tests."""

    backend: str
    loop: Loop
    reads: DirectReads
    url: str  # the system database
    ids: dict[str, str] = field(default_factory=dict)  # role -> stored workflow ID
    streams: dict[str, str] = field(default_factory=dict)  # role -> stream key

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)


async def _until(probe: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _status_is(workflow_id: str, *wanted: str) -> bool:
    found = await DBOS.get_workflow_status_async(workflow_id)
    return found is not None and found.status in wanted


async def _event_is(workflow_id: str, key: str, value: Any) -> bool:
    events = await DBOS.get_all_events_async(workflow_id)
    return key in events and events[key] == value


async def _start(workflow_id: str, workflow: Any, *args: Any) -> None:
    with SetWorkflowID(workflow_id):
        await DBOS.start_workflow_async(workflow, *args)


async def _make_workflows(world: World) -> None:
    """Workflows in every state this server shows; each left where it stays."""
    ids = world.ids
    for role in (
        "events_done",
        "stream_done",
        "waiting",
        "cancelled",
        "approved",
        "open",
        "ended_open",
        "failed",
        "pickled",
    ):
        ids[role] = unique_id(f"reads-{role.replace('_', '-')}")
    ids["tenant"] = "acme--" + unique_id("reads-tenant")
    await _start(ids["events_done"], workflow_with_events, 2, 0)
    await _start(ids["tenant"], workflow_with_events, 1, 0)
    await _start(ids["stream_done"], workflow_with_streaming, 3, 0)
    for role in ("waiting", "cancelled", "approved"):
        await _start(ids[role], workflow_with_messaging, 1, 0, 3600)
    await _start(ids["open"], reads_open_stream, "release")
    await _start(ids["ended_open"], reads_open_stream, "release")
    await _start(ids["failed"], reads_fails, "it broke")
    await _start(ids["pickled"], reads_pickled)

    for role in ("waiting", "cancelled", "approved"):
        await _until(
            lambda r=role: _event_is(ids[r], names.EVENT_STATUS, names.STATUS_WAITING),
            f"{role} waiting for approval",
        )
    await DBOS.cancel_workflow_async(ids["cancelled"])
    await DBOS.send_async(ids["approved"], {"approved": True}, names.TOPIC_NOTIFICATION)
    for role in ("open", "ended_open"):
        await _until(lambda r=role: _event_is(ids[r], "count", 2), f"{role} to wait")
    await DBOS.send_async(ids["ended_open"], "go", "release")
    finals = {
        "events_done": "SUCCESS",
        "tenant": "SUCCESS",
        "stream_done": "SUCCESS",
        "cancelled": "CANCELLED",
        "approved": "SUCCESS",
        "ended_open": "SUCCESS",
        "failed": "ERROR",
        "pickled": "SUCCESS",
    }
    for role, final in finals.items():
        await _until(lambda r=role, f=final: _status_is(ids[r], f), f"{role} {final}")
    world.streams = {
        "stream_done": names.STREAM_PROGRESS,
        "open": OTHER_STREAM,
        "ended_open": OTHER_STREAM,
        "failed": OTHER_STREAM,
        "pickled": OTHER_STREAM,
        "waiting": names.STREAM_PROGRESS,  # no stream at all
    }


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    if request.param == "postgres":
        postgres: ThrowawayPostgres | None = request.getfixturevalue("postgres")
        if postgres is None:
            pytest.skip("needs the throwaway Postgres: a fresh database of its own")
        url = postgres.create_database(unique_id("reads").replace("-", "_"))
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('reads') / 'reads.sqlite'}"
    # By its environment name (the field is read from DBOS_SYSTEM_DATABASE_URL), and from
    # nothing but these values: model_validate reads no environment.
    settings = Settings.model_validate(
        {"DBOS_SYSTEM_DATABASE_URL": url, "executor_id": unique_id("reads-executor")}
    )
    assert settings.system_database_url == url
    loop = Loop()

    async def launch() -> DirectReads:
        # On the loop's thread, as the server's lifespan does.
        DBOS(config=dbos_config(settings))
        DBOS.launch()
        return await dbos_internals.open_direct_reads(
            settings.sqlalchemy_url, max_connections=4, timeout=10.0
        )

    reads = loop.run(launch())
    world = World(request.param, loop, reads, url)
    try:
        loop.run(_make_workflows(world), timeout=4 * WAIT)
        yield world
    finally:

        async def shut_down() -> None:
            await reads.close()
            DBOS.destroy(workflow_completion_timeout_sec=0)
            # The workflows still waiting end here, on their own loop, not when collected.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        loop.run(shut_down())
        loop.stop()


# -- comparisons ----------------------------------------------------------------------------------

STATUS_FIELDS = (
    "workflow_id",
    "status",
    "name",
    "created_at",
    "updated_at",
    "completed_at",
    "executor_id",
    "app_version",
    "output",
)


def fields_of(status: WorkflowStatus) -> dict[str, Any]:
    shown = {name: getattr(status, name) for name in STATUS_FIELDS}
    error = status.error
    shown["error"] = None if error is None else (type(error).__name__, str(error))
    return shown


def assert_same_status(direct: WorkflowStatus | None, dbos: WorkflowStatus | None) -> None:
    assert (direct is None) == (dbos is None), (direct, dbos)
    if direct is None or dbos is None:
        return
    assert fields_of(direct) == fields_of(dbos)
    # What a client is shown, byte for byte.
    shown_direct = service.describe(direct, "as-shown").model_dump_json()
    assert shown_direct == service.describe(dbos, "as-shown").model_dump_json()


def roles(world: World) -> list[str]:
    return [role for role in world.ids if role != "pickled"]


def test_status_of_every_kind_and_state(world: World) -> None:
    for role in roles(world):
        workflow_id = world.ids[role]
        direct = world.run(world.reads.status(workflow_id))
        assert direct is not None, role
        assert_same_status(direct, world.run(DBOS.get_workflow_status_async(workflow_id)))
    failed = world.run(world.reads.status(world.ids["failed"]))
    assert failed is not None and failed.status == "ERROR"
    assert str(failed.error) == "it broke"
    waiting = world.run(world.reads.status(world.ids["waiting"]))
    assert waiting is not None and waiting.status == "PENDING" and waiting.completed_at is None


def test_status_of_an_unknown_workflow_is_none(world: World) -> None:
    assert world.run(world.reads.status("reads-never-started")) is None
    assert world.run(DBOS.get_workflow_status_async("reads-never-started")) is None


def test_events_of_every_kind_and_state(world: World) -> None:
    for role in [*roles(world), "never-started"]:
        workflow_id = world.ids.get(role, "reads-never-started")
        direct = world.run(world.reads.events(workflow_id))
        dbos = world.run(DBOS.get_all_events_async(workflow_id))
        assert list(direct.items()) == list(dbos.items()), role  # the same order too
    opened = world.run(world.reads.events(world.ids["open"]))
    assert "nothing" in opened and opened["nothing"] is None  # set to null is set
    assert opened["count"] == 2


async def _dbos_page(workflow_id: str, key: str, offset: int, limit: int) -> Any:
    try:
        return await service._dbos_read_page(workflow_id, key, offset, limit)
    except Exception as exc:  # noqa: BLE001 - compared by type
        return type(exc).__name__


async def _direct_page(reads: DirectReads, workflow_id: str, key: str, offset: int, limit: int):
    page = await reads.stream(workflow_id, key, offset, limit)
    return "DBOSNonExistentWorkflowError" if page is None else page


def test_stream_pages_at_every_offset_and_limit(world: World) -> None:
    compared = 0
    for role, key in world.streams.items():
        if role == "pickled":
            continue
        workflow_id = world.ids[role]
        length = len(world.run(_dbos_page(workflow_id, key, 0, names.STREAM_PAGE_MAX))[0])
        for offset in sorted({0, 1, 2, length - 1, length, length + 1, 1000}):
            if offset < 0:
                continue
            for limit in (1, 2, 3, length, names.STREAM_PAGE_MAX):
                if limit < 1:
                    continue
                direct = world.run(_direct_page(world.reads, workflow_id, key, offset, limit))
                dbos = world.run(_dbos_page(workflow_id, key, offset, limit))
                assert direct == dbos, (role, key, offset, limit)
                compared += 1
    # Open (a running writer), closed, ended without a close: each as DBOS tells it.
    first = world.run(world.reads.stream(world.ids["open"], OTHER_STREAM, 0, 2))
    assert first == ([None, {"a": [1, 2]}], True, False)
    assert world.run(world.reads.stream(world.ids["open"], OTHER_STREAM, 5, 10)) == (
        [],
        False,
        False,
    )
    ended = world.run(world.reads.stream(world.ids["ended_open"], OTHER_STREAM, 5, 10))
    assert ended == (["after release"], False, True)
    done = world.run(world.reads.stream(world.ids["stream_done"], names.STREAM_PROGRESS, 0, 5000))
    assert done is not None and len(done[0]) == 3 + 2 * 3 and done[2] is True
    assert compared > 100


def test_stream_of_an_unknown_workflow(world: World) -> None:
    direct = world.run(_direct_page(world.reads, "reads-never-started", "k", 0, 10))
    assert direct == world.run(_dbos_page("reads-never-started", "k", 0, 10))


def same_listing(direct: list[WorkflowStatus], dbos: list[WorkflowStatus]) -> None:
    """The same rows in the same order; rows created in the same millisecond (the same
    second on SQLite under Python 3.11) may come in either order, and a page cut by its
    limit inside such a group may hold different ones of them."""
    assert [s.created_at for s in direct] == [s.created_at for s in dbos]
    groups: dict[Any, tuple[set[str], set[str]]] = {}
    for a, b in zip(direct, dbos, strict=True):
        group = groups.setdefault(a.created_at, (set(), set()))
        group[0].add(a.workflow_id)
        group[1].add(b.workflow_id)
    last = direct[-1].created_at if direct else None
    for created_at, (ours, theirs) in groups.items():
        if created_at != last:
            assert ours == theirs, created_at
    by_id = {s.workflow_id: s for s in dbos}
    for status in direct:
        if status.workflow_id in by_id:
            assert_same_status(status, by_id[status.workflow_id])


def test_list_with_every_filter(world: World) -> None:
    app_name = world.run(_app_name())
    functions = sorted(
        {s.name for s in world.run(DBOS.list_workflows_async(load_input=False, load_output=False))}
    )
    assert len(functions) >= 5, functions
    compared = fell_back = 0
    for status in (None, "PENDING", "SUCCESS", "ERROR", "CANCELLED", "ENQUEUED"):
        for name in (None, *functions):
            for prefix in (None, "acme--", "reads-", "nothing-starts-so-"):
                for limit in (1, 2, 500):
                    dbos = world.run(
                        DBOS.list_workflows_async(
                            status=status,
                            name=name,
                            limit=limit,
                            sort_desc=True,
                            load_input=False,
                            workflow_id_prefix=prefix,
                        )
                    )
                    reading = world.reads.workflows(
                        app_name=app_name,
                        status=status,
                        name=name,
                        id_prefix=prefix,
                        limit=limit,
                    )
                    if world.ids["pickled"] in {s.workflow_id for s in dbos}:
                        # A pickled row in the page: the service lists through DBOS then.
                        with pytest.raises(NotPortable):
                            world.run(reading)
                        fell_back += 1
                        continue
                    direct = world.run(reading)
                    same_listing(direct, dbos)
                    compared += 1
    assert compared + fell_back == 6 * (len(functions) + 1) * 4 * 3
    assert compared > 5 * fell_back, (compared, fell_back)


async def _app_name() -> str | None:
    return dbos_internals.dbos_app_name()


def test_list_prefix_is_case_sensitive(world: World) -> None:
    """A tenant's list never shows another tenant's workflows whose name differs in case.
    (DBOS's own LIKE on SQLite would: this is where the direct read differs, on purpose.)"""
    lower, upper = "zeta--" + unique_id("case"), "ZETA--" + unique_id("case")

    async def make() -> None:
        for workflow_id in (lower, upper):
            await _start(workflow_id, workflow_with_events, 1, 0)
        for workflow_id in (lower, upper):
            await _until(lambda w=workflow_id: _status_is(w, "SUCCESS"), workflow_id)

    world.run(make())
    app_name = world.run(_app_name())
    for prefix, expected in (("zeta--", lower), ("ZETA--", upper)):
        found = world.run(
            world.reads.workflows(
                app_name=app_name, status=None, name=None, id_prefix=prefix, limit=500
            )
        )
        assert [s.workflow_id for s in found] == [expected]


def test_pickled_values_are_left_to_dbos(world: World) -> None:
    """Rows DBOS stored pickled are never decoded here: NotPortable, and the service's reads
    fall back to DBOS's own calls, answering exactly what DBOS does."""
    workflow_id = world.ids["pickled"]
    for read in (
        world.reads.status(workflow_id),
        world.reads.stream(workflow_id, OTHER_STREAM, 0, 10),
        world.reads.events(workflow_id),
    ):
        with pytest.raises(NotPortable):
            world.run(read)

    async def through_the_service() -> tuple[Any, ...]:
        previous, service._reads = service._reads, world.reads
        service.finished.clear()
        try:
            status = await service.find_stored(workflow_id)
            assert status is not None
            events = await service.read_events(status)
            page = await service.read_page(workflow_id, OTHER_STREAM, 0, 10)
            listed = await service.list_statuses(
                status=None, name=None, id_prefix=workflow_id, limit=10
            )
            return status, events, page, listed
        finally:
            service._reads = previous
            service.finished.clear()

    status, events, page, listed = world.run(through_the_service())
    assert_same_status(status, world.run(DBOS.get_workflow_status_async(workflow_id)))
    assert events == {"pickled": {"a": 1}} == world.run(DBOS.get_all_events_async(workflow_id))
    assert page == world.run(_dbos_page(workflow_id, OTHER_STREAM, 0, 10))
    assert [s.workflow_id for s in listed] == [workflow_id]


def test_the_service_keeps_finished_answers_only(world: World) -> None:
    """Through service.py: a finished workflow's status and events are kept (and rendered
    per caller); a running one's are read each time."""

    async def look() -> tuple[Any, ...]:
        previous, service._reads = service._reads, world.reads
        service.finished.clear()
        try:
            done = await service.find_stored(world.ids["events_done"])
            assert done is not None
            events = await service.read_events(done)
            waiting = await service.find_stored(world.ids["waiting"])
            assert waiting is not None
            await service.read_events(waiting)
            return (
                service.finished.status(world.ids["events_done"]) is done,
                service.finished.events(world.ids["events_done"]) is events,
                service.finished.status(world.ids["waiting"]),
                service.finished.events(world.ids["waiting"]),
            )
        finally:
            service._reads = previous
            service.finished.clear()

    assert world.run(look()) == (True, True, None, None)


def test_finished_cache_bounds() -> None:
    cache = service.FinishedCache(size=2, ttl=3600)

    def status(workflow_id: str, state: Any) -> WorkflowStatus:
        made = WorkflowStatus()
        made.workflow_id, made.status = workflow_id, state
        return made

    for workflow_id, state in (("a", "SUCCESS"), ("b", "PENDING"), ("c", "CANCELLED")):
        cache.put(status(workflow_id, state))
    assert cache.status("b") is None and cache.status("c") is None  # may still change
    cache.put(status("b", "ERROR"), {"k": None})
    assert cache.status("a") is not None  # a used last: so d pushes b out
    cache.put(status("d", "SUCCESS"))
    assert cache.status("b") is None and cache.status("a") is not None
    expired = service.FinishedCache(size=2, ttl=-1.0)
    expired.put(status("a", "SUCCESS"))
    assert expired.status("a") is None


def test_app_name_is_the_servers(world: World) -> None:
    assert world.run(_app_name()) == "dbos-workflow-communication"


def test_service_stream_pages_from_kept_streams(world: World) -> None:
    """Pages of finished workflows' streams served from FinishedCache (after the first read)
    are the pages DBOS reads, at every offset and limit; open and cancelled ones are not kept."""

    async def pages() -> tuple[list[Any], list[Any], dict[str, bool]]:
        previous, service._reads = service._reads, world.reads
        service.finished.clear()
        ours, theirs = [], []
        try:
            for role, key in world.streams.items():
                if role == "pickled":
                    continue
                workflow_id = world.ids[role]
                for offset in (3, 0, 1, 2, 8, 9, 10, 11, 500):  # 3 first: not from the start
                    for limit in (1, 2, 5, names.STREAM_PAGE_MAX):
                        ours.append(await service.read_stream_page(workflow_id, key, offset, limit))
                        theirs.append(await _dbos_page(workflow_id, key, offset, limit))
            kept = {
                role: service.finished.stream(world.ids[role], key) is not None
                for role, key in world.streams.items()
            }
            return ours, theirs, kept
        finally:
            service._reads = previous
            service.finished.clear()

    ours, theirs, kept = world.run(pages())
    assert [o if o is not None else "DBOSNonExistentWorkflowError" for o in ours] == theirs
    assert kept == {
        "stream_done": True,
        "open": False,  # PENDING
        "ended_open": True,
        "failed": True,  # ERROR: its function has returned too
        "pickled": False,  # never read here
        "waiting": False,
    }


def _stored_writes(world: World, workflow_id: str) -> tuple[int, int]:
    """(set_events, stream values) stored for the workflow, read on a connection of its own."""
    sqlite = world.backend == "sqlite"
    history = "workflow_events_history" if sqlite else "dbos.workflow_events_history"
    streams = "streams" if sqlite else "dbos.streams"
    queries = [
        f"SELECT COUNT(*) FROM {history} WHERE workflow_uuid = '{workflow_id}'",
        f"SELECT COUNT(*) FROM {streams} WHERE workflow_uuid = '{workflow_id}'",
    ]
    if sqlite:
        with contextlib.closing(sqlite3.connect(world.url.removeprefix("sqlite:///"))) as conn:
            counts = [conn.execute(query).fetchone()[0] for query in queries]
    else:
        with psycopg.connect(world.url.replace("+psycopg", "")) as pg:
            counts = [pg.execute(query).fetchone()[0] for query in queries]  # type: ignore[index]
    return counts[0], counts[1]


def test_local_writes_are_reported_after_commit(world: World) -> None:
    """on_local_writes: each set_event and stream write of this process's DBOS is reported
    with its channel and workflow, once it is stored (a reader elsewhere sees it); after
    stop(), nothing more."""
    seen: list[tuple[str, str, tuple[int, int]]] = []

    def written(channel: str, workflow_id: str) -> None:
        if workflow_id.startswith("reads-local-"):
            seen.append((channel, workflow_id, _stored_writes(world, workflow_id)))

    reported, unreported = unique_id("reads-local-on"), unique_id("reads-local-off")

    async def run(workflow_id: str, number: int) -> None:
        await _start(workflow_id, reads_writes, number)
        await _until(lambda: _status_is(workflow_id, "SUCCESS"), f"{workflow_id} to end")

    async def on_then_off() -> None:
        stop = dbos_internals.on_local_writes(written)
        try:
            await run(reported, 1)
        finally:
            stop()
        await run(unreported, 5)

    world.run(on_then_off())
    events, streams = dbos_internals.LIVE_EVENTS_CHANNEL, dbos_internals.LIVE_STREAMS_CHANNEL
    assert seen == [
        (events, reported, (1, 0)),
        (streams, reported, (1, 1)),
        (streams, reported, (1, 2)),
        (events, reported, (2, 2)),
    ]
