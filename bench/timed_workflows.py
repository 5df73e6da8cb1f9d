"""Workflows used only by the benchmark: they stamp wall-clock times into what they publish.

The demo workflows say nothing about *when* they set an event, so event wake cannot be
measured on them. These two wait for a "go" message, then stamp `time.time()` right before
each `set_event` / `write_stream`, so a reader on the same machine can subtract. The stamps
are taken in the workflow body and not checkpointed: fine for a benchmark, wrong for a
workflow that must replay identically.
"""

import asyncio
import time
from typing import Final

from dbos import DBOS

# The topic the benchmark's "go" messages use (the demo's topic stays untouched).
GO_TOPIC: Final = "bench_go"
# The stream the tick workflow writes.
TICK_STREAM: Final = "bench_ticks"
# How long a bench workflow waits for the next "go" before giving up.
GO_TIMEOUT_SEC: Final = 120.0
# How long each write call took inside the workflow (ms), in this process only: the
# in-process baseline reports them, the floor of any push built on DBOS's writes.
WRITE_CALL_MS: dict[str, list[float]] = {"set_event": [], "write_stream": []}


def tick_key(seq: int) -> str:
    """The event key of tick `seq`: a fresh key per tick, so every read really waits."""
    return f"tick-{seq}"


@DBOS.workflow()
async def bench_event_ticks(n_ticks: int) -> int:
    """Per "go" message on GO_TOPIC: set event `tick-<i>` to {seq, set_at}."""
    for seq in range(n_ticks):
        if await DBOS.recv_async(GO_TOPIC, timeout_seconds=GO_TIMEOUT_SEC) is None:
            return seq
        began = time.perf_counter()
        await DBOS.set_event_async(tick_key(seq), {"seq": seq, "set_at": time.time()})
        WRITE_CALL_MS["set_event"].append((time.perf_counter() - began) * 1000)
    return n_ticks


@DBOS.workflow()
async def bench_stream_ticks(n_values: int, interval_sec: float) -> int:
    """After one "go" message: write {seq, written_at} to TICK_STREAM every `interval_sec`."""
    if await DBOS.recv_async(GO_TOPIC, timeout_seconds=GO_TIMEOUT_SEC) is None:
        return 0
    for seq in range(n_values):
        began = time.perf_counter()
        await DBOS.write_stream_async(TICK_STREAM, {"seq": seq, "written_at": time.time()})
        WRITE_CALL_MS["write_stream"].append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(interval_sec)
    await DBOS.close_stream_async(TICK_STREAM)
    return n_values
