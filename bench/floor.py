"""The floor: a raw Postgres commit with NOTIFY, until a LISTENing connection has it.

Two psycopg connections to the server's own database, no DBOS and no HTTP: the clock runs
from the start of a transaction (an INSERT plus pg_notify) until the other connection has
read the notification. Nothing built on Postgres notifications can beat this.
"""

import time

import psycopg

CHANNEL = "bench_floor"


async def notify_floor(database_url: str, samples: int) -> list[float]:
    latencies = []
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(database_url) as writer,
    ):
        await listener.execute(f"LISTEN {CHANNEL}")
        await writer.execute("CREATE TEMP TABLE bench_floor (seq int, at double precision)")
        await writer.commit()
        for seq in range(samples):
            started = time.perf_counter()
            await writer.execute("INSERT INTO bench_floor VALUES (%s, %s)", (seq, time.time()))
            await writer.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seq)))
            await writer.commit()
            payloads = [n.payload async for n in listener.notifies(timeout=5.0, stop_after=1)]
            if payloads != [str(seq)]:
                raise RuntimeError(f"floor: expected notification {seq}, got {payloads}")
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies
