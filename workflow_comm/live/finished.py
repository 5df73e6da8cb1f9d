"""Tells waiting requests when the workflow they wait on finishes.

A `GET /workflow-events/{id}/{key}?timeout=` waiting on a running workflow would otherwise
wait out its whole timeout after the workflow ended without setting the key. One task reads
the status of every workflow someone waits on in a single query per interval, however many
requests wait, and only while some do; the event loop is never blocked by it.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from dbos import DBOS

from workflow_comm.names import TERMINAL_STATUSES

logger = logging.getLogger("workflow_comm")


class FinishWatch:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._waiters: dict[str, set[asyncio.Future[str]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @contextlib.asynccontextmanager
    async def watch(self, workflow_id: str) -> AsyncIterator[asyncio.Future[str]]:
        """A future that gets the workflow's final status once it has finished.

        `workflow_id` is the stored ID. The future never completes if the workflow is still
        running when the block ends.
        """
        finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(workflow_id, set()).add(finished)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="finish-watch")
        try:
            yield finished
        finally:
            waiting = self._waiters.get(workflow_id)
            if waiting is not None:
                waiting.discard(finished)
                if not waiting:
                    del self._waiters[workflow_id]
            finished.cancel()  # no-op once it has a result

    async def _run(self) -> None:
        while self._waiters:
            await asyncio.sleep(self.interval)
            if self._waiters:
                await self._check(list(self._waiters))

    async def _check(self, workflow_ids: list[str]) -> None:
        # One query in flight at most, and no timeout: a query cut off would leave DBOS's
        # thread retrying it, one more per interval while the database is away. Meanwhile
        # the waiters wait as they would without this watch (each bounded on its own).
        try:
            found = await DBOS.list_workflows_async(
                workflow_ids=workflow_ids, load_input=False, load_output=False
            )
        except Exception as exc:  # noqa: BLE001 - the waiters still time out as they would
            if not self._failing:
                logger.warning("finish watch: status read failed (%s)", type(exc).__name__)
            self._failing = True
            return
        self._failing = False
        for status in found:
            if status.status in TERMINAL_STATUSES:
                for finished in self._waiters.pop(status.workflow_id, set()):
                    if not finished.done():
                        finished.set_result(status.status)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
