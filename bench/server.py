"""The server under benchmark: the project's app plus two start routes for bench workflows.

    python -m bench.server --host 127.0.0.1 --port 8200
    python -m bench.server --port 8200 --workers 2   # as server.py --workers: each worker
                                                      # runs this module again, bench routes too

Everything measured goes through the app's own routes (send-message, workflow-events,
workflow-stream, the live endpoints, start-workflow-*); only starting the benchmark's
time-stamping workflows, and counting the SQL statements the process sends (to report
database queries per streamed value), need the routes added here. Statements are counted
as SQLAlchemy sends them (DBOS) and as psycopg sends them outside SQLAlchemy (the server's
direct reads, connection pings); the stdlib sqlite3 reads of a SQLite server are not.
"""

import argparse
import functools
import inspect
import os
import threading
from collections import Counter
from typing import Annotated, Any

import psycopg
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID
from fastapi import APIRouter, FastAPI, Query

from bench.timed_workflows import bench_event_ticks, bench_stream_ticks
from workflow_comm.app import create_app
from workflow_comm.params import WorkflowId
from workflow_comm.settings import Settings

router = APIRouter(prefix="/bench", tags=["benchmark"])
_statements: Counter[str] = Counter()
_by_shape: Counter[str] = Counter()
_by_source: dict[str, Counter[str]] = {}
_rows_by_shape: Counter[str] = Counter()  # rows SELECTs returned, through SQLAlchemy
_statements_lock = threading.Lock()


# Counting must cost the server little: what it measures includes it. Statements come from
# SQLAlchemy's compiled cache and the server's constant queries, so the few distinct texts
# are classified once each.
@functools.lru_cache(maxsize=4096)
def _shape(statement: str) -> str:
    """A statement's first 100 characters, whitespace collapsed: its kind, not its values."""
    return " ".join(statement.split())[:100]


@functools.lru_cache(maxsize=4096)
def _reads_stream(statement: str) -> bool:
    return statement.lstrip()[:6].upper() == "SELECT" and "streams" in statement


def _thread_source() -> str:
    return _source_of(threading.current_thread().name)


@functools.lru_cache(maxsize=1024)
def _source_of(name: str) -> str:
    """The sending thread's name without its counters: `Thread-7 (queue_thread)` is
    `queue_thread`, `live-db_3` is `live-db`: DBOS's background threads are told apart from
    the threads serving requests."""
    if name.endswith(")") and "(" in name:
        name = name[name.index("(") + 1 : -1]
    base, _, index = name.rpartition("_")
    return base.rstrip("-_") if base and index.isdigit() else name


def _count(statement: str, source: str | None = None) -> None:
    reads_stream = _reads_stream(statement)
    shape = _shape(statement)
    source = source or _thread_source()
    with _statements_lock:  # DBOS sends its statements from many threads
        _statements["all"] += 1
        _by_shape[shape] += 1
        _by_source.setdefault(source, Counter())[shape] += 1
        if reads_stream:
            _statements["stream_reads"] += 1


# Set while SQLAlchemy executes a statement on this thread: psycopg's execute under it is
# the same statement, counted once.
_in_sqlalchemy = threading.local()


@sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
def _count_statement(_conn: object, _cursor: object, statement: str, *_: object) -> None:
    """Every SQL statement of every SQLAlchemy engine in this process (DBOS's own)."""
    _in_sqlalchemy.active = True
    _count(statement)


@sa.event.listens_for(sa.engine.Engine, "after_cursor_execute")
def _statement_done(_conn: object, cursor: Any, statement: str, *_: object) -> None:
    _in_sqlalchemy.active = False
    if cursor.rowcount > 0 and _shape(statement).startswith(("SELECT", "select")):
        with _statements_lock:
            _rows_by_shape[_shape(statement)] += cursor.rowcount


@sa.event.listens_for(sa.engine.Engine, "handle_error")
def _statement_failed(*_: object) -> None:
    _in_sqlalchemy.active = False


def _text(query: object) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode(errors="replace")
    return repr(query)  # a psycopg.sql.Composed


def _connection_source(cursor: Any) -> str | None:
    """`takeover-scan` for a connection the server opened as `workflow-comm takeover-scan
    <executor>` (takeover.py names its connections so), None for any other."""
    name = cursor.connection.info.parameter_status("application_name") or ""
    parts = name.split()
    return parts[1] if len(parts) > 1 and parts[0] == "workflow-comm" else None


def _count_psycopg_directly() -> None:
    """Also count what the process sends with psycopg itself, outside SQLAlchemy: the
    server's direct reads (an async pool), SQLAlchemy's connection pings, DBOS's LISTEN."""
    for cls in (psycopg.Cursor, psycopg.AsyncCursor):
        for name in ("execute", "executemany"):
            original = getattr(cls, name)
            if inspect.iscoroutinefunction(original):

                async def counted_async(
                    self: Any, query: Any, *args: Any, _original: Any = original, **kw: Any
                ) -> Any:
                    if not getattr(_in_sqlalchemy, "active", False):
                        _count(_text(query), _connection_source(self))
                    return await _original(self, query, *args, **kw)

                setattr(cls, name, counted_async)
            else:

                def counted(
                    self: Any, query: Any, *args: Any, _original: Any = original, **kw: Any
                ) -> Any:
                    if not getattr(_in_sqlalchemy, "active", False):
                        _count(_text(query), _connection_source(self))
                    return _original(self, query, *args, **kw)

                setattr(cls, name, counted)


_count_psycopg_directly()


@router.get("/db-statements")
async def db_statements() -> dict[str, int]:
    """SQL statements this process has sent so far: all, and SELECTs on the streams table."""
    return {"statements": _statements["all"], "stream_reads": _statements["stream_reads"]}


@router.get("/db-statements/by-shape")
async def db_statements_by_shape() -> dict[str, int]:
    """Statements sent so far, counted by their first 100 characters."""
    with _statements_lock:
        return dict(_by_shape)


@router.get("/db-statements/by-source")
async def db_statements_by_source() -> dict[str, dict[str, int]]:
    """Statements sent so far by where they come from (the sending thread, or the purpose a
    connection of the server's own is named for), then by their first 100 characters."""
    with _statements_lock:
        return {source: dict(shapes) for source, shapes in _by_source.items()}


@router.get("/db-rows/by-shape")
async def db_rows_by_shape() -> dict[str, int]:
    """Rows the SELECTs sent through SQLAlchemy (DBOS's, the live hub's) have returned so
    far, by the statements' first 100 characters (Postgres; SQLite's are not counted)."""
    with _statements_lock:
        return dict(_rows_by_shape)


@router.post("/event-ticks/{workflow_id}")
async def start_event_ticks(
    workflow_id: WorkflowId, n_ticks: Annotated[int, Query(ge=1, le=10_000)]
) -> dict[str, str]:
    """Start bench_event_ticks: one `tick-<i>` event per "go" message."""
    with SetWorkflowID(workflow_id, workflow_id_reuse_policy="reject"):
        await DBOS.start_workflow_async(bench_event_ticks, n_ticks)
    return {"workflow_id": workflow_id}


@router.post("/stream-ticks/{workflow_id}")
async def start_stream_ticks(
    workflow_id: WorkflowId,
    n_values: Annotated[int, Query(ge=1, le=100_000)],
    interval_sec: Annotated[float, Query(ge=0, le=10)],
) -> dict[str, str]:
    """Start bench_stream_ticks: after one "go" message, a stamped value every interval."""
    with SetWorkflowID(workflow_id, workflow_id_reuse_policy="reject"):
        await DBOS.start_workflow_async(bench_stream_ticks, n_values, interval_sec)
    return {"workflow_id": workflow_id}


def create_bench_app(settings: Settings | None = None) -> FastAPI:
    app = create_app(settings)
    app.include_router(router)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    # The rest (--workers N) is server.main()'s, which reads the same command line.
    args, _ = parser.parse_known_args()
    # Before importing server.py: it builds its module-level app (and reads the settings).
    os.environ["COMM_HOST"], os.environ["COMM_PORT"] = args.host, str(args.port)
    import server

    # server.main() itself, so the benchmark runs the same uvicorn setup (uvloop, httptools,
    # the live hub's shutdown hook), with the bench routes added to the app it builds.
    server.create_app = create_bench_app  # type: ignore[attr-defined]  # server.py's import
    server.main()


if __name__ == "__main__":
    main()
