"""`GET /workflows/live`: every new workflow and every status change, to every list watcher.

One query per status-poll interval finds the rows of `workflow_status` changed since the last
one (by `updated_at`), however many watch; only when some changed, one more reads them in full.
Each watcher has the list's filters (`kind`, `status`) and its caller's tenant scope, applied
here, so another tenant's workflows never reach it.

`updated_at` is stamped by the instance that made the change, with its own clock, before its
transaction commits: a change may show up with a time a little before the last one seen. Each
query therefore looks LOOKBACK_MS further back, and changes already pushed are skipped.
"""

import time
from dataclasses import dataclass

from dbos import DBOS

from workflow_comm.live.database import LiveDatabase
from workflow_comm.live.feed import Interest, Subscriber
from workflow_comm.live.items import Shutdown, StatusChange
from workflow_comm.service import describe

LOOKBACK_MS = 5_000
ROWS_PER_POLL = 500


@dataclass(eq=False)
class ListWatcher:
    sub: Subscriber
    prefix: str | None  # the tenant's stored-ID prefix; None: every workflow
    kind: str | None
    status: str | None

    def shown_id(self, stored: str) -> str | None:
        """The workflow's ID as this watcher's caller knows it, or None if out of scope."""
        if self.prefix is None:
            return stored
        return stored.removeprefix(self.prefix) if stored.startswith(self.prefix) else None

    def wants(self, change: StatusChange) -> bool:
        workflow = change.workflow
        return (
            self.shown_id(workflow.workflow_id) is not None
            and (self.kind is None or workflow.kind == self.kind)
            and (self.status is None or workflow.status == self.status)
        )


def now_ms() -> int:
    return int(time.time() * 1000)


class WorkflowListing:
    def __init__(self, db: LiveDatabase, buffer: int) -> None:
        self._db = db
        self._buffer = buffer
        self.watchers: set[ListWatcher] = set()
        self._since = 0  # the newest updated_at seen
        self._floor = 0  # changes at or before this were made before anyone watched
        self._pushed: dict[str, tuple[int, str]] = {}  # ID -> (updated_at, status) pushed

    def add(self, prefix: str | None, kind: str | None, status: str | None) -> ListWatcher:
        if not self.watchers:
            self._since = self._floor = now_ms()
            self._pushed.clear()
        watcher = ListWatcher(Subscriber(Interest(status=True), self._buffer), prefix, kind, status)
        self.watchers.add(watcher)
        return watcher

    def remove(self, watcher: ListWatcher) -> None:
        self.watchers.discard(watcher)

    async def poll(self) -> None:
        """Push what changed since the last poll to every watcher that may see it."""
        rows = await self._db.changed_workflows(self._since - LOOKBACK_MS, ROWS_PER_POLL)
        fresh = []
        for workflow_id, updated_at in rows:
            self._since = max(self._since, updated_at)
            pushed = self._pushed.get(workflow_id)
            if updated_at > self._floor and (pushed is None or pushed[0] < updated_at):
                fresh.append(workflow_id)
        if fresh:
            found = await DBOS.list_workflows_async(workflow_ids=fresh, load_input=False)
            for status in sorted(found, key=lambda s: s.updated_at or 0):
                updated_at = status.updated_at or 0
                pushed = self._pushed.get(status.workflow_id)
                self._pushed[status.workflow_id] = (updated_at, status.status)
                if pushed is not None and pushed[1] == status.status:
                    continue  # touched, but its status is the one already pushed
                change = StatusChange(describe(status, status.workflow_id))
                for watcher in list(self.watchers):
                    if watcher.wants(change):
                        watcher.sub.offer(change)
        horizon = self._since - 2 * LOOKBACK_MS
        for workflow_id in [w for w, (at, _) in self._pushed.items() if at < horizon]:
            del self._pushed[workflow_id]

    def stop_all(self, why: Shutdown) -> None:
        for watcher in self.watchers:
            watcher.sub.stop(why)
