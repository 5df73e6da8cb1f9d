"""`python server.py --workers N`: N processes on one port, one supervisor.

Each worker is its own DBOS executor, `<base>-w<index>`. These tests check what a client and
an operator see: every endpoint works through two workers and both answer; a SIGKILLed worker
is replaced by one with the same executor ID and its workflow finishes with every stream
entry once; SIGTERM to the supervisor ends live connections in every worker with `shutdown`
and the whole tree exits; SIGKILL to the supervisor takes its workers with it; SQLite refuses
more than one worker.

Which worker a new connection reaches is the kernel's choice (a hash of the connection's
ports): the tests open fresh connections until each worker has answered, bounded by a number
of attempts that makes a miss practically impossible, not by time.
"""

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect

from tests.support import ROOT, ServerProcess, ThrowawayPostgres, free_port, unique_id, wait_until
from workflow_comm import names
from workflow_comm.settings import Settings
from workflow_comm.workers import WORKER_INDEX_VARIABLE

WORKERS = 2
# Fresh connections tried until every worker has answered one. Each reaches a given one of 2
# workers with a chance of about 1/2, so 200 all missing it has a chance of about 2^-200.
SPREAD_ATTEMPTS = 200
FIBONACCI_3 = [{"n": 1, "fibonacci": 1}, {"n": 2, "fibonacci": 1}, {"n": 3, "fibonacci": 2}]


class WorkerServer(ServerProcess):
    """`python server.py --workers N` as a child process: the supervisor and its workers."""

    def __init__(self, database_url: str | None, workers: int = WORKERS, **options: Any) -> None:
        super().__init__(database_url, **options)
        self.workers = workers

    def command(self) -> list[str]:
        return [*super().command(), "--workers", str(self.workers)]

    def executor(self, index: int) -> str:
        return f"{self.env['COMM_EXECUTOR_ID']}-w{index}"

    @property
    def executors(self) -> set[str]:
        return {self.executor(i) for i in range(self.workers)}

    def worker_pids(self) -> dict[int, int]:
        """{index: pid} of the live workers: the supervisor's children, each with its index
        in its environment (read from /proc)."""
        found: dict[int, int] = {}
        marker = f"{WORKER_INDEX_VARIABLE}=".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent != self.pid:
                    continue
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            for variable in environ:
                if variable.startswith(marker):
                    found[int(variable.removeprefix(marker))] = int(entry.name)
        return found


def spread_client(server: ServerProcess) -> httpx.Client:
    """A client that opens a new connection for every request, so requests reach any worker."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.Client(base_url=server.base_url, timeout=30.0, limits=limits)


def answering(server: WorkerServer, wanted: set[str], attempts: int = SPREAD_ATTEMPTS) -> set[str]:
    """The executor IDs that answered /health over fresh connections, stopping once every
    wanted one did (or after `attempts`)."""
    seen: set[str] = set()
    with spread_client(server) as http:
        for _ in range(attempts):
            try:
                response = http.get("/health")
            except httpx.TransportError:
                continue  # a worker killed or stopping as it was reached
            if response.status_code == 200:
                seen.add(response.json()["executor_id"])
            if wanted <= seen:
                break
    return seen


def wait_all_answer(server: WorkerServer, timeout: float = 120.0) -> None:
    """Until every worker serves (one may still be starting when the first answers)."""
    wait_until(
        lambda: answering(server, server.executors, attempts=20) == server.executors,
        timeout=timeout,
        interval=0.5,
        what=f"workers {sorted(server.executors)} to answer",
    )


def workflow(http: httpx.Client, workflow_id: str) -> Any:
    response = http.get(f"/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_finished(http: httpx.Client, workflow_id: str, timeout: float = 120.0) -> Any:
    """The workflow's status once it has ended (a request that finds no worker is retried)."""

    def ended() -> Any:
        try:
            status = workflow(http, workflow_id)
        except httpx.TransportError:
            return None  # reached a worker as it was killed
        return status if status["status"] not in ("PENDING", "ENQUEUED") else None

    return wait_until(ended, timeout=timeout, interval=0.2, what=f"{workflow_id} to end")


def start(http: httpx.Client, kind: str, workflow_id: str, n_steps: int, **params: Any) -> None:
    response = http.post(f"/start-workflow-{kind}/{workflow_id}/{n_steps}", params=params)
    assert response.status_code == 200, response.text


def read_sse(http: httpx.Client, path: str, into: list[Any]) -> None:
    """Append (event, data) of each SSE event to `into` until the first that is not a value."""
    with connect_sse(http, "GET", path) as source:
        assert source.response.status_code == 200, source.response.status_code
        for sse in source.iter_sse():
            into.append((sse.event, json.loads(sse.data)))
            if sse.event != "message":
                return


def expected_stream(n_steps: int) -> list[tuple[str, int | None]]:
    """(type, step) of each entry of a finished streaming workflow, in order."""
    entries: list[tuple[str, int | None]] = [("start", None)]
    for step in range(1, n_steps + 1):
        entries += [("progress", step), ("result", step)]
    return [*entries, ("summary", None), ("complete", None)]


@pytest.fixture(scope="module")
def database(postgres: ThrowawayPostgres | None, postgres_url: str) -> str:
    """A database of their own: no other test's executors for these workers to take over."""
    if postgres is None:
        return postgres_url
    return postgres.create_database(unique_id("workers").replace("-", "_"))


@pytest.fixture(scope="module")
def workers_server(database: str) -> Iterator[WorkerServer]:
    with WorkerServer(database) as server:
        wait_all_answer(server)
        yield server


@pytest.mark.needs_own_server
def test_two_workers_serve_every_endpoint(workers_server: WorkerServer) -> None:
    server = workers_server
    assert answering(server, server.executors) == server.executors
    assert set(server.worker_pids()) == {0, 1}
    ids = {kind: unique_id(f"workers-{kind}") for kind in ("events", "messaging", "streaming")}
    with spread_client(server) as http:
        start(http, "events", ids["events"], 3, step_seconds=0.05)
        result = http.get(f"/workflow-events/{ids['events']}/result", params={"timeout": 60})
        assert result.status_code == 200, result.text
        assert result.json()["value"] == {"total_steps": 3, "results": FIBONACCI_3}
        assert wait_finished(http, ids["events"])["status"] == "SUCCESS"
        events = http.get(f"/workflow-events/{ids['events']}/all").json()["events"]
        assert events["status"] == names.STATUS_COMPLETED and events["progress"] == 100, events

        start(http, "messaging", ids["messaging"], 3, step_seconds=0.05, approval_timeout=600)
        sent = http.post(
            f"/send-message/{ids['messaging']}",
            json={"approved": True},
            headers={"Idempotency-Key": unique_id("approval")},
        )
        assert sent.status_code == 200, sent.text
        result = http.get(f"/workflow-events/{ids['messaging']}/result", params={"timeout": 60})
        assert result.json()["value"]["outcome"] == names.STATUS_COMPLETED, result.text

        start(http, "streaming", ids["streaming"], 3, step_seconds=0.05)
        live: list[Any] = []
        read_sse(http, f"/workflow-stream/{ids['streaming']}/live", live)
        *values, (last, closed) = live
        assert last == "closed" and closed["next_offset"] == 9, live
        assert [(v["type"], v.get("step")) for _, v in values] == expected_stream(3)
        page = http.get(f"/workflow-stream/{ids['streaming']}", params={"offset": 2, "limit": 3})
        body = page.json()
        assert body["stream_values"] == [v for _, v in values[2:5]], body
        assert (body["next_offset"], body["has_more"]) == (5, True), body

        ws_id = unique_id("workers-ws")
        start(http, "messaging", ws_id, 2, step_seconds=0.05, approval_timeout=600)
        frames: list[Any] = []
        ws_url = server.base_url.replace("http://", "ws://") + f"/ws/workflows/{ws_id}"
        with connect(ws_url, open_timeout=30) as ws:
            send = {
                "type": "send",
                "id": "1",
                "topic": "notification",
                "payload": {"approved": True},
            }
            ws.send(json.dumps(send))
            for frame in ws:
                frames.append(json.loads(frame))
                if frames[-1]["type"] == "closed":
                    break
        assert {"type": "ack", "id": "1", "topic": "notification"} in frames, frames
        assert frames[-1] == {"type": "closed", "status": "SUCCESS"}, frames[-1]

        for workflow_id in [*ids.values(), ws_id]:
            status = wait_finished(http, workflow_id)
            assert status["status"] == "SUCCESS", status
            assert status["executor_id"] in server.executors, status
        listed = http.get("/workflows", params={"kind": "messaging", "limit": 500}).json()
        assert {ids["messaging"], ws_id} <= {w["workflow_id"] for w in listed["data"]}, listed


@pytest.mark.needs_own_server
def test_a_killed_worker_is_replaced_and_its_workflow_finishes(
    workers_server: WorkerServer,
) -> None:
    """SIGKILL the worker running a streaming workflow: a new process of the same index (same
    executor ID) comes up, and the workflow finishes with every stream entry exactly once."""
    server = workers_server
    n_steps, workflow_id = 6, unique_id("workers-kill")
    with spread_client(server) as http:
        # 6 steps of 2 s: the kill comes right after its first entry, with 12 s to go.
        start(http, "streaming", workflow_id, n_steps, step_seconds=2)
        owner = workflow(http, workflow_id)["executor_id"]
        index = next(i for i in range(server.workers) if server.executor(i) == owner)

        def first_page() -> Any:
            body = http.get(f"/workflow-stream/{workflow_id}").json()
            return body if body["stream_values"] else None

        page = wait_until(first_page, timeout=60, what="the first stream entry")
        assert not page["closed"], page
        victim = server.worker_pids()[index]
        os.kill(victim, signal.SIGKILL)

        def replaced() -> int | None:
            pid = server.worker_pids().get(index)
            return pid if pid not in (None, victim) else None

        replacement = wait_until(replaced, timeout=60, what=f"a new worker {index}")
        wait_until(
            lambda: owner in answering(server, {owner}, attempts=20),
            timeout=120,
            interval=0.5,
            what=f"{owner} to answer again",
        )
        status = wait_finished(http, workflow_id)
        assert status["status"] == "SUCCESS", status
        stream = http.get(f"/workflow-stream/{workflow_id}", params={"limit": 100}).json()
    entries = [(v["type"], v.get("step")) for v in stream["stream_values"]]
    assert entries == expected_stream(n_steps), entries
    assert stream["closed"], stream
    assert server.worker_pids().get(index) == replacement, "the replacement was replaced"
    assert f"worker {owner} was killed by SIGKILL" in server.log_path.read_text()


@pytest.mark.needs_own_server
def test_sigterm_ends_live_connections_in_every_worker_and_the_tree_exits(database: str) -> None:
    """A live SSE response open on each worker ends with `shutdown`; every process exits."""
    server = WorkerServer(database).start()
    clients: list[httpx.Client] = []
    try:
        wait_all_answer(server)
        workers = server.worker_pids()
        # Waiting for an approval that never comes: its live events stay open until the stop.
        workflow_id = unique_id("workers-term")
        with spread_client(server) as http:
            start(http, "messaging", workflow_id, 1, approval_timeout=600)
        readers: list[threading.Thread] = []
        seen: dict[int, list[Any]] = {index: [] for index in range(server.workers)}
        for index in range(server.workers):
            clients.append(keep_alive_client_of(server, server.executor(index)))
            path = f"/workflow-events/{workflow_id}/live"
            readers.append(threading.Thread(target=read_sse, args=(clients[-1], path, seen[index])))
            readers[-1].start()
        wait_until(lambda: all(seen.values()), timeout=60, what="every worker's live events")
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == -signal.SIGTERM, server.log()
        for reader in readers:
            reader.join(timeout=30)
            assert not reader.is_alive(), f"a live response outlived the server: {seen}"
        for index, events in seen.items():
            event, data = events[-1]
            assert event == "shutdown" and "last_event_id" in data, (index, events[-1])
        for pid in workers.values():
            assert not alive(pid), f"worker {pid} outlived the supervisor"
    finally:
        server.stop()
        for http in clients:
            http.close()


def keep_alive_client_of(server: WorkerServer, executor: str) -> httpx.Client:
    """A client whose one keep-alive connection reached the worker `executor`: its next
    request goes over that connection, so to that worker."""
    for _ in range(SPREAD_ATTEMPTS):
        http = httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(30.0, read=120.0))
        if http.get("/health").json()["executor_id"] == executor:
            return http
        http.close()
    raise AssertionError(f"no connection reached {executor} in {SPREAD_ATTEMPTS} attempts")


@pytest.mark.needs_own_server
def test_workers_exit_when_the_supervisor_is_killed(database: str) -> None:
    """SIGKILL gives the supervisor no chance to stop its workers: the kernel signals them."""
    server = WorkerServer(database).start()
    workers: dict[int, int] = {}
    try:
        wait_all_answer(server)
        workers = server.worker_pids()
        assert set(workers) == {0, 1}
        server.kill()
        wait_until(
            lambda: not any(alive(pid) for pid in workers.values()),
            timeout=60,
            what=f"workers {workers} to exit",
        )
    finally:
        for pid in workers.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (reparented workers are reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["--workers", "COMM_WORKERS"])
def test_sqlite_refuses_several_workers(how: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMM_")}
    env.pop("DBOS_SYSTEM_DATABASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, str(ROOT / "server.py"), "--port", str(free_port())]
    if how == "--workers":
        command += ["--workers", "2"]
    else:
        env["COMM_WORKERS"] = "2"
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "2 workers need Postgres, and the database is SQLite" in stderr, stderr
    assert "DBOS_SYSTEM_DATABASE_URL" in stderr, stderr
    assert not list(tmp_path.iterdir()), "nothing should have started"


@pytest.mark.parametrize(
    ("given", "count"), [("auto", len(os.sched_getaffinity(0))), (" 3 ", 3), (1, 1)]
)
def test_workers_setting(given: object, count: int) -> None:
    # model_validate: these values only, no environment.
    settings = Settings.model_validate({"workers": given, "executor_id": "base"})
    assert settings.worker_count == count
    assert settings.for_worker(1).resolved_executor_id == "base-w1"


@pytest.mark.parametrize("given", ["0", "-1", "two", "257", True, 0])
def test_workers_setting_out_of_bounds(given: object) -> None:
    with pytest.raises(ValueError, match="COMM_WORKERS must be a number from 1 to 256, or auto"):
        Settings.model_validate({"workers": given})
