"""The benchmark run: start Postgres and servers, measure everything, write the results.

Processes: this driver (HTTP clients, the NOTIFY floor, the monitor thread), the server
(`python -m bench.server`, a separate process), the in-process DBOS baseline (`python -m
bench.inprocess`, a separate process run while no server runs), and Postgres.
"""

import asyncio
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import load, profile, scenarios
from bench.floor import notify_floor
from bench.http import HTTPTransport, new_session
from bench.scales import Scale
from bench.stats import summarize, thin
from tests.support import ServerProcess, ThrowawayPostgres, process_env, unique_id

logger = logging.getLogger("bench")

# Room for the concurrency and fan-out scenarios' live connections.
# The load scenarios' clients all come from 127.0.0.1, so the per-client cap on waiting
# requests is raised with the others.
BENCH_SERVER_ENV = {"COMM_MAX_LIVE_CONNECTIONS": "5000", "COMM_MAX_WAITS_PER_CLIENT": "5000"}
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
    "sqlite",
)


class BenchServer(ServerProcess):
    """tests.support.ServerProcess, running bench.server: the app plus the bench routes."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.server", "--port", str(self.port)]


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
            for subscribers in scale.fanout_levels:
                row = await load.fanout(
                    http, server.pid, subscribers, scale.fanout_values, scale.fanout_interval
                )
                rows.append(row)
                logger.info(
                    "   fan-out %s: p99 %s ms, %s stream reads/value, %s failures, "
                    "server CPU %s us per delivery",
                    subscribers,
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


async def run_all(
    scale: Scale,
    database_url: str | None,
    extra_env: dict[str, str],
    profile_dir: Path | None = None,
    only: set[str] | None = None,
) -> Run:
    run = Run(scale, profile_dir, only)
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
