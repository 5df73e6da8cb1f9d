"""The benchmark run: start Postgres and servers, measure everything, write the results.

Processes: this driver (HTTP clients, the NOTIFY floor, the monitor thread), the server
(`python -m bench.server`, a separate process), the in-process DBOS baseline (`python -m
bench.inprocess`, a separate process run while no server runs), and Postgres.
"""

import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Self

import aiohttp
import psutil  # type: ignore[import-untyped]

from bench import capacity, load, profile, scenarios
from bench.floor import notify_floor
from bench.http import HTTPTransport, new_session
from bench.meter import Meter, tree_cpu_seconds
from bench.scales import Scale
from bench.stats import ratio, summarize, thin
from tests.support import ROOT, ServerProcess, ThrowawayPostgres, process_env, unique_id

logger = logging.getLogger("bench")

# Room for the concurrency and fan-out scenarios' live connections.
# The load scenarios' clients all come from 127.0.0.1, so the per-client cap on waiting
# requests is raised with the others.
# 5,000 fan-out subscribers per transport, 1,000 waiters and 1,000 idle watchers.
BENCH_SERVER_ENV = {"COMM_MAX_LIVE_CONNECTIONS": "12000", "COMM_MAX_WAITS_PER_CLIENT": "12000"}
# What --only can choose; "sqlite" runs message/event/stream/poll on the SQLite server too.
PHASE_GROUPS = (
    "floor",
    "baseline",
    "message",
    "event",
    "stream",
    "poll",
    "throughput",
    "fanout",
    "concurrency",
    "idle",
    "waiters",
    "requests",
    "workers",
    "sqlite",
)


class BenchServer(ServerProcess):
    """tests.support.ServerProcess, running bench.server: the app plus the bench routes;
    with `workers` > 1 as `--workers N` (a supervisor and N worker processes)."""

    def __init__(self, *args: Any, workers: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers = workers

    def command(self) -> list[str]:
        extra = ["--workers", str(self.workers)] if self.workers > 1 else []
        return [sys.executable, "-m", "bench.server", "--port", str(self.port), *extra]

    def start(self, ready_timeout: float = 60.0) -> Self:
        super().start(ready_timeout)
        if self.workers > 1:
            self._wait_for_listeners(ready_timeout)
        return self

    def _wait_for_listeners(self, timeout: float) -> None:
        """Until every worker listens on the port (the first one answering /health says
        nothing of the others)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listening = 0
            for child in psutil.Process(self.pid).children():
                with contextlib.suppress(psutil.Error):
                    listening += any(
                        c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                        for c in child.net_connections(kind="tcp")
                    )
            if listening >= self.workers:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.workers} workers did not all listen within {timeout}s")


def raise_open_files_limit() -> None:
    """Thousands of connections: the driver's and the server's (which inherits it) limit on
    open files as high as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def missing_routes(http: HTTPTransport, routes: list[str]) -> str | None:
    """None if the server's OpenAPI lists every "METHOD /path", else which it lacks."""
    spec = await http.request("GET", "/openapi.json")
    offered = {f"{m.upper()} {p}" for p, ops in spec.get("paths", {}).items() for m in ops}
    lacking = [route for route in routes if route not in offered]
    return f"the server has no {', '.join(lacking)}" if lacking else None


async def missing_websocket(http: HTTPTransport) -> str | None:
    """None if `WS /ws/workflows/{id}` accepts a connection (not in the OpenAPI)."""
    url = http.base_url.replace("http", "ws", 1) + "/ws/workflows/bench-no-such-workflow"
    try:
        async with http.session.ws_connect(url) as ws:
            await ws.receive(timeout=10)
    except aiohttp.WSServerHandshakeError as exc:
        return f"WS /ws/workflows/{{id}} refused the handshake ({exc.status})"
    return None


class Run:
    """Collects measurements; a failing phase is recorded and the others still run."""

    def __init__(
        self, scale: Scale, profile_dir: Path | None = None, only: set[str] | None = None
    ) -> None:
        self.scale = scale
        self.only = only
        # With a profile_dir, every phase run while a server is up is recorded by py-spy.
        self.profile_dir = profile_dir
        self.server_pid: int | None = None
        self.latency: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {"errors": []}

    def add_latency(self, key: str, label: str, backend: str, samples: list[float]) -> None:
        self.latency[key] = {
            "label": label,
            "backend": backend,
            "summary": summarize(samples),
            "samples": thin(samples),
        }
        summary = self.latency[key]["summary"]
        logger.info(
            "%-28s n=%-5s p50=%-8s p99=%-8s max=%s ms",
            key,
            summary["n"],
            summary["p50"],
            summary["p99"],
            summary["max"],
        )

    async def phase(
        self, name: str, call: Callable[[], Awaitable[None]], group: str | None = None
    ) -> None:
        """Run one measurement; `group` names it for --only (None: always runs)."""
        if group is not None and not self.wants(group):
            return
        logger.info("== %s", name)
        started = time.monotonic()
        profiling = (
            group is not None and self.profile_dir is not None and self.server_pid is not None
        )
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        raw = (self.profile_dir or Path()) / f"{slug}.raw"
        try:
            if profiling:
                assert self.server_pid is not None
                with profile.recording(self.server_pid, raw):
                    await call()
            else:
                await call()
        except Exception as exc:
            logger.error("phase %s failed: %s", name, exc)
            self.results["errors"].append(
                {
                    "phase": name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            )
        logger.info("   %s took %.1fs", name, time.monotonic() - started)
        if profiling and raw.exists():
            raw.with_suffix(".txt").write_text(f"{name}\n\n{profile.summarize(raw)}")

    def wants(self, group: str) -> bool:
        return self.only is None or group in self.only


def run_baseline(database_url: str, scale: Scale, workdir: Path) -> dict[str, Any]:
    """The in-process DBOS baseline, in its own process with the server's DBOS settings."""
    plan, out = workdir / "plan.json", workdir / "baseline.json"
    plan.write_text(json.dumps(scale.baseline_plan()))
    env = process_env(
        database_url,
        {"COMM_EXECUTOR_ID": unique_id("bench-inprocess"), "COMM_LOG_LEVEL": "WARNING"},
    )
    subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--plan", str(plan), "--out", str(out)],
        cwd=workdir,
        env=env,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


async def _drained(transport: HTTPTransport) -> None:
    stuck = await scenarios.drain(transport, timeout=60)
    if stuck:
        raise RuntimeError(f"{stuck} workflows stayed PENDING")


async def measure_latencies(run: Run, server: BenchServer, backend: str, share: float) -> None:
    """(2) message delivery, (3) event wake, (4) stream push (SSE and polling) over HTTP."""
    scale = run.scale

    def count(n: int) -> int:
        return max(1, round(n * share))

    async with new_session() as session:
        http = HTTPTransport(session, server.base_url)

        async def messages() -> None:
            samples, sends = await scenarios.message_delivery(http, count(scale.messages))
            run.add_latency(f"message_http_{backend}", "message delivery, HTTP", backend, samples)
            run.add_latency(f"send_http_{backend}", "send call, POST /send-message", backend, sends)

        async def events() -> None:
            samples = await scenarios.event_wake(http, count(scale.events))
            run.add_latency(f"event_http_{backend}", "event wake, HTTP", backend, samples)

        async def stream_sse() -> None:
            samples = await scenarios.stream_push(
                http, count(scale.stream_workflows), scale.stream_values, scale.stream_interval
            )
            run.add_latency(f"stream_sse_{backend}", "stream push, SSE", backend, samples)

        async def stream_poll() -> None:
            samples = await load.poll_stream(
                http, count(scale.poll_workflows), scale.poll_values, scale.poll_interval, 1.0
            )
            run.add_latency(f"stream_poll_{backend}", "stream, polling 1/s", backend, samples)

        await run.phase(f"message delivery ({backend})", messages, "message")
        await run.phase(f"event wake ({backend})", events, "event")
        await run.phase(f"stream push SSE ({backend})", stream_sse, "stream")
        await run.phase(f"stream polling ({backend})", stream_poll, "poll")
        await run.phase(f"drain ({backend})", lambda: _drained(http))


async def measure_postgres_load(run: Run, server: BenchServer, database_url: str) -> None:
    """(6) throughput, (8) fan-out, (7) concurrency against the Postgres server."""
    scale = run.scale
    async with new_session() as session:
        http = HTTPTransport(session, server.base_url)

        async def throughput() -> None:
            run.results["throughput_http"] = [
                await scenarios.start_throughput(http, level, scale.throughput_seconds)
                for level in scale.throughput_levels
            ]
            for row in run.results["throughput_http"]:
                logger.info("   HTTP starts, %s clients: %s/s", row["concurrency"], row["per_sec"])

        async def fanout() -> None:
            rows = run.results.setdefault("fanout", [])
            skipped = run.results.setdefault("fanout_skipped", {})
            for via in ("sse", "ws"):
                reason = await missing_websocket(http) if via == "ws" else None
                if reason:
                    skipped[via] = reason
                    logger.info("   fan-out over %s skipped: %s", via, reason)
                    continue
                for subscribers in scale.fanout_levels:
                    row = await load.fanout(
                        http,
                        server.pid,
                        subscribers,
                        scale.fanout_values,
                        scale.fanout_interval,
                        via,
                    )
                    rows.append(row)
                    logger.info(
                        "   fan-out %s %s: p50 %s p99 %s ms, %s stream reads/value, "
                        "%s failures, server CPU %s us per delivery",
                        via,
                        subscribers,
                        row["latency"]["p50"],
                        row["latency"]["p99"],
                        row["stream_reads_per_value"],
                        row["failures"],
                        row["server_cpu_us_per_delivery"],
                    )

        async def concurrency() -> None:
            with load.Monitor(server.base_url, server.pid, database_url) as monitor:
                row = await load.concurrency(
                    http, monitor, scale.conc_workflows, scale.conc_waiters, scale.conc_subscribers
                )
            run.results["concurrency"] = row
            logger.info(
                "   concurrency: delivered %s in %ss, /health p99 %s ms, RSS %s MB",
                row["delivered_to_watchers"],
                row["deliver_all_sec"],
                row["under_load"]["health"]["p99"],
                row["under_load"]["peak_rss_mb"],
            )

        await run.phase("throughput (HTTP)", throughput, "throughput")
        await run.phase("fan-out", fanout, "fanout")
        await run.phase("concurrency", concurrency, "concurrency")


def _skipped(run: Run, key: str, reason: str) -> None:
    run.results[key] = {"skipped": reason}
    logger.info("   skipped: %s", reason)


async def measure_capacity(run: Run, server: BenchServer, database_url: str) -> None:
    """(10) idle watchers, (11) waiters, (13) requests against the Postgres server."""
    scale = run.scale
    async with new_session() as session:
        http = HTTPTransport(session, server.base_url)

        async def idle() -> None:
            reason = await missing_routes(
                http,
                ["GET /workflows/{workflow_id}/live", "GET /workflow-events/{workflow_id}/live"],
            )
            if reason:
                return _skipped(run, "idle", reason)
            meter = Meter(http, server.pid, database_url)
            try:
                row = await capacity.idle(
                    http,
                    meter,
                    scale.idle_workflows,
                    scale.idle_window_sec,
                    scale.idle_probe_sec,
                    settle_sec=scale.idle_settle_sec,
                    after_dbos_polls=scale.name != "smoke",
                )
            finally:
                meter.close()
            run.results["idle"] = row
            for name in ("baseline", "watched"):
                w = row[name]
                logger.info(
                    "   idle, %s: CPU %s%% of a core, %s transactions/s, %s statements/s, "
                    "/health p50 %s p99 %s ms",
                    name,
                    w["cpu_percent_of_core"],
                    w["transactions_per_sec"],
                    w["statements_per_sec"],
                    w["health"]["p50"],
                    w["health"]["p99"],
                )

        async def waiters() -> None:
            reason = await missing_routes(http, ["GET /workflow-events/{workflow_id}/{event_key}"])
            if reason:
                return _skipped(run, "waiters", reason)
            row = await capacity.waiters(
                http,
                scale.waiters,
                scale.waiter_workflows,
                scale.waiter_timeout_sec,
                probe_sec=min(5.0, scale.idle_probe_sec),
            )
            run.results["waiters"] = row
            for name in ("one_workflow", "spread"):
                case = row[name]
                logger.info(
                    "   waiters, %s (%s on %s workflows): released p50 %s p99 %s max %s ms "
                    "after set; timeouts late by max %s ms; /health p99 %s ms; problems %s",
                    name,
                    case["waiters"],
                    case["workflows"],
                    case["released"]["p50"],
                    case["released"]["p99"],
                    case["released"]["max"],
                    case["timeout_lateness"]["max"],
                    case["health"]["arrive_wait_release"]["p99"],
                    case["problems"],
                )

        async def requests() -> None:
            reason = await missing_routes(
                http,
                [
                    "GET /health",
                    "GET /workflows/{workflow_id}",
                    "GET /workflow-events/{workflow_id}/all",
                    "GET /workflow-stream/{workflow_id}",
                    "POST /send-message/{workflow_id}",
                    "POST /start-workflow-events/{workflow_id}/{n_steps}",
                    "POST /start-workflow-streaming/{workflow_id}/{n_steps}",
                ],
            )
            if reason:
                return _skipped(run, "requests", reason)
            rows = await capacity.requests(
                http, server.pid, scale.request_clients, scale.request_seconds
            )
            run.results["requests"] = {"rows": rows, "reference": reference_requests()}
            for row in rows:
                logger.info(
                    "   %-60s %7s/s  %6s ms CPU each  p99 %s ms  errors %s",
                    row["request"],
                    row["per_sec"],
                    row["cpu_ms_per_request"],
                    row["latency"]["p99"],
                    row["errors"] or 0,
                )

        await run.phase("idle watchers", idle, "idle")
        await run.phase("waiters", waiters, "waiters")
        await run.phase("requests", requests, "requests")


REFERENCE = ROOT / "bench" / "reference" / "full.json"


def reference_requests() -> dict[str, Any]:
    """What bench/reference/full.json says of sends and starts: its requests rows if it has
    them, else its send call latency and HTTP start rates (other measurements, shown as
    they are)."""
    if not REFERENCE.exists():
        return {}
    ref = json.loads(REFERENCE.read_text())
    rows = ref.get("requests", {}).get("rows") if isinstance(ref.get("requests"), dict) else None
    if rows:
        return {
            "source": f"{REFERENCE.name}, requests",
            "rows": {r["name"]: r for r in rows if r["name"] in ("send", "start")},
        }
    send = ref.get("latency", {}).get("send_http_postgres", {}).get("summary")
    starts = {r["concurrency"]: r["per_sec"] for r in ref.get("throughput_http", [])}
    return {
        "source": f"{REFERENCE.name} ({ref.get('meta', {}).get('started_at', '?')}), "
        "which has no requests phase",
        "send_call_ms_one_client": send,
        "starts_per_sec_by_clients": starts,
    }


async def measure_workers(
    run: Run, server: BenchServer, database_url: str, env: dict[str, str], workdir: Path
) -> None:
    """(12) workflow starts per second from the same clients, on 1 and on 2 workers."""
    scale = run.scale

    async def workers() -> None:
        async def starts(target: BenchServer) -> dict[str, Any]:
            async with new_session() as session:
                http = HTTPTransport(session, target.base_url)
                cpu = tree_cpu_seconds(target.pid)
                row = await scenarios.start_throughput(
                    http, scale.workers_clients, scale.workers_seconds
                )
                row["server_cpu_ms_per_start"] = round(
                    (tree_cpu_seconds(target.pid) - cpu) * 1000 / max(1, row["started"]), 2
                )
                return row

        (workdir / "workers").mkdir(exist_ok=True)
        two = BenchServer(database_url, workdir=workdir / "workers", env=env, workers=2)
        try:
            await asyncio.to_thread(two.start)
        except AssertionError as exc:  # it exited: a server.py without --workers says so
            if "unrecognized arguments: --workers" not in str(exc):
                raise
            return _skipped(run, "workers", "server.py does not take --workers")
        try:
            one = await starts(server)
            run.server_pid = two.pid
            both = await starts(two)
        finally:
            run.server_pid = server.pid
            two.stop()
        run.results["workers"] = {
            "clients": scale.workers_clients,
            "seconds": scale.workers_seconds,
            "one_worker": one,
            "two_workers": both,
            "ratio": ratio(both["per_sec"], one["per_sec"]),
        }
        logger.info(
            "   starts/s at %s clients: 1 worker %s, 2 workers %s (%sx)",
            scale.workers_clients,
            one["per_sec"],
            both["per_sec"],
            run.results["workers"]["ratio"],
        )

    await run.phase("workers", workers, "workers")


async def run_all(
    scale: Scale,
    database_url: str | None,
    extra_env: dict[str, str],
    profile_dir: Path | None = None,
    only: set[str] | None = None,
) -> Run:
    run = Run(scale, profile_dir, only)
    raise_open_files_limit()
    started = time.time()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="comm-bench-"))
    postgres = None if database_url else ThrowawayPostgres()
    try:
        if postgres is not None:
            server_db = postgres.create_database("bench_server")
            baseline_db = postgres.create_database("bench_inprocess")
        else:
            assert database_url is not None
            server_db = baseline_db = database_url

        async def floor() -> None:
            samples = await notify_floor(server_db, scale.floor)
            run.add_latency("floor", "Postgres commit + NOTIFY (floor)", "postgres", samples)

        await run.phase("floor", floor, "floor")

        async def baseline() -> None:
            result = await asyncio.to_thread(run_baseline, baseline_db, scale, workdir)
            for key, name, label in (
                ("message_delivery", "message", "message delivery, in-process"),
                ("send_call", "send", "send call, DBOS.send_async"),
                ("event_wake", "event", "event wake, in-process"),
                ("stream_push", "stream", "stream push, in-process"),
                ("set_event_call", "set_event_call", "set_event_async call, in the workflow"),
                (
                    "write_stream_call",
                    "write_stream_call",
                    "write_stream_async call, in the workflow",
                ),
            ):
                run.add_latency(f"{name}_inprocess_postgres", label, "postgres", result[key])
            run.results["throughput_inprocess"] = result["throughput"]
            for row in result["throughput"]:
                logger.info(
                    "   in-process starts, %s clients: %s/s", row["concurrency"], row["per_sec"]
                )

        await run.phase("in-process DBOS baseline", baseline, "baseline")

        env = {**BENCH_SERVER_ENV, **extra_env}
        with BenchServer(server_db, workdir=workdir, env=env) as server:
            run.server_pid = server.pid
            await measure_latencies(run, server, "postgres", 1.0)
            await measure_postgres_load(run, server, server_db)
            await measure_capacity(run, server, server_db)
            await measure_workers(run, server, server_db, env, workdir)
        if run.wants("sqlite"):
            (workdir / "sqlite").mkdir()
            with BenchServer(None, workdir=workdir / "sqlite", env=env) as server:
                run.server_pid = server.pid
                await measure_latencies(run, server, "sqlite", scale.sqlite_share)
    finally:
        if postgres is not None:
            postgres.stop()
    run.results["meta"] = {
        "mode": scale.name,
        "scale": scale.as_dict(),
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_sec": round(time.time() - started, 1),
        "database": "external (DBOS_SYSTEM_DATABASE_URL)" if database_url else "throwaway PG 18",
        "server_env": env,
        "cpus": os.cpu_count(),
        # Other work on the machine moves every figure; the ratios move less.
        "load_average_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
        # Below 0 when run under `nice -n -N`: the benchmark's processes ahead of other work.
        "nice": os.nice(0),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: version(p) for p in ("dbos", "fastapi", "uvicorn", "psycopg")},
        "clock": "driver, server and baseline share one machine: time.time() stamps compare",
    }
    return run
