"""The in-process baseline: the same scenarios on direct DBOS calls, no HTTP in between.

Run by the benchmark in its own process (its own event loop, uvloop like the server's),
with the server's own DBOS configuration (workflow_comm.runtime.dbos_config), so the ratio
server / baseline is the cost of HTTP and the routes:

    python -m bench.inprocess --plan plan.json --out baseline.json
"""

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvloop
from dbos import DBOS, SetWorkflowID

from bench import scenarios
from bench.timed_workflows import WRITE_CALL_MS, bench_event_ticks, bench_stream_ticks
from workflow_comm.runtime import dbos_config
from workflow_comm.settings import Settings
from workflow_comm.workflows import workflow_with_events, workflow_with_messaging


class DBOSTransport:
    """The Transport of bench.scenarios as direct DBOS calls, like the routes make them."""

    async def start_messaging(self, workflow_id: str) -> None:
        with SetWorkflowID(workflow_id, workflow_id_reuse_policy="reject"):
            await DBOS.start_workflow_async(workflow_with_messaging, 1, 0.0, 600.0)

    async def start_events(self, workflow_id: str) -> None:
        with SetWorkflowID(workflow_id, workflow_id_reuse_policy="reject"):
            await DBOS.start_workflow_async(workflow_with_events, 1, 0.0)

    async def start_event_ticks(self, workflow_id: str, n_ticks: int) -> None:
        with SetWorkflowID(workflow_id, workflow_id_reuse_policy="reject"):
            await DBOS.start_workflow_async(bench_event_ticks, n_ticks)

    async def start_stream_ticks(
        self, workflow_id: str, n_values: int, interval_sec: float
    ) -> None:
        with SetWorkflowID(workflow_id, workflow_id_reuse_policy="reject"):
            await DBOS.start_workflow_async(bench_stream_ticks, n_values, interval_sec)

    async def get_event(self, workflow_id: str, key: str, timeout: float) -> Any | None:
        return await DBOS.get_event_async(workflow_id, key, timeout_seconds=timeout)

    async def send(self, workflow_id: str, payload: dict[str, Any], topic: str) -> None:
        await DBOS.send_async(workflow_id, payload, topic)

    @asynccontextmanager
    async def subscribe(self, workflow_id: str, key: str) -> AsyncIterator[AsyncIterator[Any]]:
        values = DBOS.read_stream_async(workflow_id, key)
        try:
            yield values
        finally:
            await values.aclose()

    async def pending_count(self) -> int:
        pending = await DBOS.list_workflows_async(
            status="PENDING", limit=500, load_input=False, load_output=False
        )
        return len(pending)


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    # Launched on the loop's thread, as the server's lifespan does.
    DBOS(config=dbos_config(Settings()))
    DBOS.launch()
    transport = DBOSTransport()
    try:
        delivery, sends = await scenarios.message_delivery(transport, plan["messages"])
        results: dict[str, Any] = {
            "message_delivery": delivery,
            "send_call": sends,
            "event_wake": await scenarios.event_wake(transport, plan["events"]),
            "stream_push": await scenarios.stream_push(
                transport, plan["stream_workflows"], plan["stream_values"], plan["stream_interval"]
            ),
            # The workflows' own write calls in those two: what every push waits for first.
            "set_event_call": WRITE_CALL_MS["set_event"],
            "write_stream_call": WRITE_CALL_MS["write_stream"],
        }
        await scenarios.drain(transport)
        results["throughput"] = [
            await scenarios.start_throughput(transport, level, plan["throughput_seconds"])
            for level in plan["throughput_levels"]
        ]
        return results
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True, help="JSON: sample counts")
    parser.add_argument("--out", type=Path, required=True, help="where to write the samples")
    args = parser.parse_args()
    plan = json.loads(args.plan.read_text())
    results = uvloop.run(run(plan))
    args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
