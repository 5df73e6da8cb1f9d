"""What the server costs while a scenario runs, and how /health answers meanwhile.

- CPU: user + system seconds of the server's process tree (the process and every child it
  started, so `--workers N`'s supervisor and its workers), from psutil.
- Database transactions: `xact_commit + xact_rollback` of the server's database in
  `pg_stat_database`, read over a connection to another database of the same server (the
  `postgres` maintenance database), so the reads themselves add none. Postgres publishes a
  backend's counts when it goes idle, at most once a second: a window of 10 s is exact to
  about a second's worth of transactions.
- SQL statements: the bench server's own counter (GET /bench/db-statements).
- /health: bench.probe in a process of its own (`HealthProbe`).
"""

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.http import HTTPTransport
from bench.stats import summarize


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and all its descendants now alive."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class Transactions:
    """Transactions committed or rolled back so far in one database, from pg_stat_database."""

    def __init__(self, database_url: str) -> None:
        database_url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.dbname = conninfo_to_dict(database_url).get("dbname") or "postgres"
        # Read from another database, so that these reads are not counted; if that is not
        # allowed (an external database), from the same one, each read then counting one.
        self.own_per_read = 0
        try:
            self._conn = psycopg.connect(
                make_conninfo(database_url, dbname="postgres"), autocommit=True
            )
            if self.dbname == "postgres":
                self.own_per_read = 1
        except psycopg.Error:
            self._conn = psycopg.connect(database_url, autocommit=True)
            self.own_per_read = 1

    def read(self) -> int:
        row = self._conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (self.dbname,),
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._conn.close()


class Meter:
    """Reads CPU, transactions and statements at the start and end of a window."""

    def __init__(self, http: HTTPTransport, server_pid: int, database_url: str) -> None:
        self.http = http
        self.server_pid = server_pid
        self.transactions = Transactions(database_url)

    async def reading(self) -> dict[str, float]:
        counts = await self.http.request("GET", "/bench/db-statements")
        return {
            "t": time.monotonic(),
            "cpu": tree_cpu_seconds(self.server_pid),
            "xacts": self.transactions.read(),
            "statements": counts["statements"],
        }

    def rates(self, start: dict[str, float], end: dict[str, float]) -> dict[str, Any]:
        seconds = end["t"] - start["t"]
        # The end reading's own transaction is not yet published; the start's may be.
        xacts = end["xacts"] - start["xacts"] - self.transactions.own_per_read
        return {
            "window_sec": round(seconds, 2),
            "cpu_percent_of_core": round(100 * (end["cpu"] - start["cpu"]) / seconds, 2),
            "transactions_per_sec": round(max(0, xacts) / seconds, 2),
            # The reading's GET /bench/db-statements sends none.
            "statements_per_sec": round((end["statements"] - start["statements"]) / seconds, 2),
        }

    def close(self) -> None:
        self.transactions.close()


class HealthProbe:
    """bench.probe running as a separate process while the `with` block runs."""

    def __init__(self, base_url: str, interval: float = 0.05) -> None:
        self.base_url = base_url
        self.interval = interval
        self.samples: list[list[float]] = []
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "HealthProbe":
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.probe", self.base_url, "--interval", str(self.interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,  # where `bench` is a package
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        try:
            out, _ = self._process.communicate(b"", timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            out, _ = self._process.communicate()
        if out.strip():
            self.samples = json.loads(out)

    async def ready(self) -> None:
        """Until the probe has its first answer (its start-up is no part of a window)."""
        assert self._process is not None and self._process.stdout is not None
        line = await asyncio.to_thread(self._process.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"bench.probe did not start: {line!r}")

    def summary(self, start: float | None = None, end: float | None = None) -> dict[str, Any]:
        """p50/p99/max of the probes sent within [start, end] (unix times), and errors."""
        chosen = [
            s
            for s in self.samples
            if (start is None or s[0] >= start) and (end is None or s[0] <= end)
        ]
        return {
            **summarize([s[1] for s in chosen]),
            "errors": sum(1 for s in chosen if s[2] != 200),
        }
