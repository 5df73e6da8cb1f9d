"""Another DBOS application, for the gateway tests: its own name, its own workflow, a process.

    python -m tests.other_app --name NAME --executor ID [--version V] WORKFLOW_ID...

It launches DBOS on DBOS_SYSTEM_DATABASE_URL as application NAME, starts `chat` under each
WORKFLOW_ID, and runs until killed. Nothing of this server's code runs here: it is an
application that knows nothing of the gateway that serves its workflows.
"""

import argparse
import asyncio
import os
from typing import Any

from dbos import DBOS, DBOSPortableJSONSerializer, SetWorkflowID

STREAM = "tokens"
EVENT_STAGE = "stage"
EVENT_REPLY = "reply"
TOPIC = "reply"
FIRST_TOKENS = ["Hello", " from", " another", " app"]


@DBOS.workflow()
async def chat(wait_seconds: float) -> dict[str, Any]:
    """Stream some tokens, wait for a reply on TOPIC, then stream one more and close."""
    await DBOS.set_event_async(EVENT_STAGE, "streaming")
    for token in FIRST_TOKENS:
        await DBOS.write_stream_async(STREAM, token)
    await DBOS.set_event_async(EVENT_STAGE, "waiting")
    reply = await DBOS.recv_async(TOPIC, timeout_seconds=wait_seconds)
    await DBOS.set_event_async(EVENT_REPLY, reply)
    await DBOS.write_stream_async(STREAM, "!")
    await DBOS.close_stream_async(STREAM)
    await DBOS.set_event_async(EVENT_STAGE, "done")
    return {"reply": reply}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--executor", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("workflow_ids", nargs="*")
    args = parser.parse_args()
    DBOS(
        config={
            "name": args.name,
            "system_database_url": os.environ["DBOS_SYSTEM_DATABASE_URL"],
            "executor_id": args.executor,
            "application_version": args.version,
            "serializer": DBOSPortableJSONSerializer(),
        }
    )
    DBOS.launch()
    for workflow_id in args.workflow_ids:
        with SetWorkflowID(workflow_id):
            await DBOS.start_workflow_async(chat, 600.0)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main())
