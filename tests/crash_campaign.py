"""Crash campaign: SIGKILL a busy server again and again; prove nothing is lost or doubled.

    .venv/bin/python -m tests.crash_campaign --kills 30   # the full run (scripts/crash_campaign.sh)
    .venv/bin/pytest tests/test_crash_campaign.py         # the default run: 3 kills

Client threads start workflows of all three kinds and send approval messages, while a killer
SIGKILLs the server and starts it again with the same executor ID on the same Postgres. Each
kill comes a random moment after its round of starts, but never before the server shows a long
"target" workflow of every kind running with several steps still to go, so every kill lands in
the middle of work of every kind (checked afterwards: DBOS recovered each target). A request
that got no answer (or a 503) is retried as a real client would: the same workflow ID for a
start (a repeat returns the existing workflow) and the same Idempotency-Key for a send. Some
acknowledged sends are repeated on purpose, as a client that lost the answer would. At the end
every workflow must have finished, and:

- every stream holds exactly 3 + 2n entries, in order, with no duplicate, both in a page
  and replayed over SSE;
- every workflow's events hold their final values (progress 100, status completed or
  rejected, the right result), and each event was written as often as the code says;
- every acknowledged message was received exactly once: one message in the mailbox, consumed,
  equal to the `message` event and to the result;
- every kill's targets were running when it landed: DBOS recovered each of them afterwards.
"""

import argparse
import json
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from httpx_sse import connect_sse

from tests.support import ServerProcess, ThrowawayPostgres, fibonacci_table, unique_id, wait_until
from workflow_comm import names

TERMINAL = names.TERMINAL_STATUSES
KINDS: tuple[names.WorkflowKind, ...] = ("events", "messaging", "streaming")
# Long enough that no approval times out however long the campaign runs: the recv deadline
# is durable and keeps running while the server is down.
APPROVAL_TIMEOUT = 3600.0
RETRY_PAUSE = 0.2
# A kill's targets: one workflow of each kind, long enough to be caught mid-work for sure.
# A kill waits until each target is seen running with TARGET_STEPS_LEFT steps or more to go,
# so it lands more than (TARGET_STEPS_LEFT - 1) * TARGET_STEP_SECONDS before the target
# could finish, a margin no stall between one poll and the SIGKILL comes near.
TARGET_STEPS = 8
TARGET_STEP_SECONDS = 1.0
TARGET_STEPS_LEFT = 4
TARGET_WAIT = 120.0  # seconds a kill may wait for its targets, however loaded the machine


@dataclass
class Planned:
    """One workflow the campaign starts, and what it must end as."""

    kind: names.WorkflowKind
    workflow_id: str
    n_steps: int
    step_seconds: float
    approve: bool = True
    payload: dict[str, Any] | None = None
    idempotency_key: str | None = None
    acknowledged: bool = False  # the send got a 200
    repeat_send: bool = False  # send once more with the same key after the 200

    def start_path(self) -> str:
        return f"/start-workflow-{self.kind}/{self.workflow_id}/{self.n_steps}"

    def start_params(self) -> dict[str, float]:
        params = {"step_seconds": self.step_seconds}
        if self.kind == "messaging":
            params["approval_timeout"] = APPROVAL_TIMEOUT
        return params


def plan_workflow(rng: random.Random, kind: names.WorkflowKind, prefix: str = "crash") -> Planned:
    planned = Planned(
        kind=kind,
        workflow_id=unique_id(f"{prefix}-{kind}"),
        n_steps=rng.randint(2, 8),
        step_seconds=rng.choice([0.05, 0.1, 0.2, 0.3, 0.4]),
    )
    if kind == "messaging":
        planned.approve = rng.random() < 0.8
        planned.payload = {"approved": planned.approve, "nonce": uuid.uuid4().hex}
        planned.idempotency_key = f"approval-{uuid.uuid4().hex}"
        planned.repeat_send = rng.random() < 0.3
    return planned


def plan_target(rng: random.Random, kind: names.WorkflowKind) -> Planned:
    """A kill target: a long workflow of `kind` (messaging: approved, so its steps run too)."""
    planned = plan_workflow(rng, kind, prefix="crash-target")
    planned.n_steps, planned.step_seconds = TARGET_STEPS, TARGET_STEP_SECONDS
    if kind == "messaging":
        planned.approve = True
        planned.payload = {"approved": True, "nonce": uuid.uuid4().hex}
    return planned


def steps_done(percent: int, n_steps: int) -> int:
    """How many steps a `progress` event of `percent` says are done (the workflow's rounding)."""
    return max((s for s in range(n_steps + 1) if s * 100 // n_steps <= percent), default=0)


def steps_left(http: httpx.Client, planned: Planned) -> int | None:
    """Steps a workflow still has to run, as the server shows it; None if it has not begun.

    Begun means the workflow body has run far enough to publish something (its first event
    or stream entry). A finished workflow has 0 steps left.
    """
    wid = planned.workflow_id
    if planned.kind == "streaming":
        response = request_until_answered(http, "GET", f"/workflow-stream/{wid}")
        if response.status_code == 404:
            return None
        page = response.json()
        if page["closed"]:
            return 0
        if not page["stream_values"]:
            return None
        done = sum(1 for value in page["stream_values"] if value.get("type") == "result")
        return planned.n_steps - done
    response = request_until_answered(http, "GET", f"/workflow-events/{wid}/all")
    if response.status_code == 404:
        return None
    events = response.json()["events"]
    if names.EVENT_RESULT in events:
        return 0
    if names.EVENT_STATUS not in events:
        return None
    return planned.n_steps - steps_done(events.get(names.EVENT_PROGRESS, 0), planned.n_steps)


@dataclass
class Tally:
    """What the clients saw: requests that got no answer (or a 503) and were retried."""

    unanswered: int = 0
    unavailable: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, outcome: str) -> None:
        with self.lock:
            if outcome == "unanswered":
                self.unanswered += 1
            else:
                self.unavailable += 1


def request_until_answered(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    tally: Tally | None = None,
    deadline: float = 180.0,
    **kwargs: Any,
) -> httpx.Response:
    """Send the same request until it gets an answer other than 503; return that answer.

    No answer (the server died mid-request) and 503 (the database is away) are retried after
    a short pause, as a client with a retry policy does. Any other answer is returned.
    """
    stop = time.monotonic() + deadline
    while True:
        try:
            response = http.request(method, url, **kwargs)
        except httpx.TransportError:
            if tally:
                tally.count("unanswered")
        else:
            if response.status_code != 503:
                return response
            if tally:
                tally.count("unavailable")
        if time.monotonic() > stop:
            raise AssertionError(f"{method} {url}: no answer but 503 for {deadline}s")
        time.sleep(RETRY_PAUSE)


def run_client(base_url: str, planned: Planned, tally: Tally, rng: random.Random) -> None:
    """Start the workflow; for messaging, send its approval until acknowledged."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        response = request_until_answered(
            http, "POST", planned.start_path(), params=planned.start_params(), tally=tally
        )
        assert response.status_code == 200, f"start {planned.workflow_id}: {response.text}"
        if planned.kind != "messaging":
            return
        time.sleep(rng.uniform(0, 1.0))
        sends = 2 if planned.repeat_send else 1
        for _ in range(sends):
            response = request_until_answered(
                http,
                "POST",
                f"/send-message/{planned.workflow_id}",
                json=planned.payload,
                headers={"Idempotency-Key": planned.idempotency_key or ""},
                tally=tally,
            )
            assert response.status_code == 200, f"send {planned.workflow_id}: {response.text}"
            planned.acknowledged = True


@dataclass
class Checked:
    workflows: int = 0
    stream_entries: int = 0
    sse_entries: int = 0
    events: int = 0
    messages: int = 0

    def add(self, other: "Checked") -> None:
        self.workflows += other.workflows
        self.stream_entries += other.stream_entries
        self.sse_entries += other.sse_entries
        self.events += other.events
        self.messages += other.messages


def wait_finished(http: httpx.Client, workflow_ids: list[str], timeout: float) -> None:
    """Wait until every workflow is in a terminal state; fail naming the ones that are not."""
    remaining = set(workflow_ids)

    def all_done() -> bool:
        for workflow_id in list(remaining):
            response = request_until_answered(http, "GET", f"/workflows/{workflow_id}")
            if response.status_code == 200 and response.json()["status"] in TERMINAL:
                remaining.discard(workflow_id)
        return not remaining

    try:
        wait_until(all_done, timeout=timeout, interval=0.5, what="every workflow to finish")
    except AssertionError:
        raise AssertionError(
            f"{len(remaining)} workflows not finished after {timeout}s: {sorted(remaining)[:10]}"
        ) from None


def expected_stream(n_steps: int) -> list[tuple[str, int | None]]:
    """(type, step) of each entry of a finished stream, in order."""
    entries: list[tuple[str, int | None]] = [("start", None)]
    for step in range(1, n_steps + 1):
        entries += [("progress", step), ("result", step)]
    return entries + [("summary", None), ("complete", None)]


def read_sse(
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    into: list[Any] | None = None,
) -> list[Any]:
    """Every event of an SSE response up to its `closed` event: (event, id, data) tuples.

    Heartbeat comments are skipped. Fails if the response ends without `closed`. Events are
    appended to `into` as they arrive, if given, so another thread can watch them come.
    """
    events: list[Any] = [] if into is None else into
    with httpx.Client(timeout=httpx.Timeout(30.0, read=timeout)) as http:
        with connect_sse(http, "GET", url, headers=headers or {}) as source:
            assert source.response.status_code == 200, f"{url}: {source.response.status_code}"
            for sse in source.iter_sse():
                events.append((sse.event, sse.id, json.loads(sse.data)))
                if sse.event != "message":
                    return events
    raise AssertionError(f"{url}: ended without a closed event after {events}")


def read_sse_stream(base_url: str, workflow_id: str) -> list[Any]:
    """Replay a finished stream over SSE from offset 0; the values in the order received."""
    events = read_sse(f"{base_url}/workflow-stream/{workflow_id}/live")
    *values, (last_event, _, closed) = events
    assert last_event == "closed", f"SSE {workflow_id}: ended with {last_event}: {closed}"
    ids = [int(event_id) for _, event_id, _ in values]
    assert ids == list(range(len(values))), f"SSE {workflow_id}: ids {ids}"
    assert closed["next_offset"] == len(values), f"SSE {workflow_id}: closed {closed}"
    return [value for _, _, value in values]


def message_rows(db: psycopg.Connection, workflow_id: str) -> list[tuple[Any, bool]]:
    """(message, consumed) of every message sent to the workflow on the approval topic."""
    rows = db.execute(
        "SELECT message, consumed FROM dbos.notifications"
        " WHERE destination_uuid = %s AND topic = %s",
        (workflow_id, names.TOPIC_NOTIFICATION),
    ).fetchall()
    return [(json.loads(message), consumed) for message, consumed in rows]


def event_writes(db: psycopg.Connection, workflow_id: str) -> dict[str, int]:
    """How many times the workflow called set_event, per key (DBOS keeps every call)."""
    rows = db.execute(
        "SELECT key, count(*) FROM dbos.workflow_events_history"
        " WHERE workflow_uuid = %s GROUP BY key",
        (workflow_id,),
    ).fetchall()
    return dict(rows)


def expected_event_writes(planned: Planned) -> dict[str, int]:
    n = planned.n_steps
    if planned.kind == "events":
        return {"status": n + 2, "progress": n + 1, "result": 1}
    if planned.kind == "messaging" and planned.approve:
        return {"status": n + 3, "progress": n + 1, "result": 1, "message": 1}
    if planned.kind == "messaging":
        return {"status": 2, "result": 1, "message": 1}
    return {}


def verify_workflow(
    http: httpx.Client, db: psycopg.Connection, planned: Planned, *, sse: bool = True
) -> Checked:
    """Check one finished workflow against everything it must end as (raises on a miss).

    `db` is a connection to the system database, for what the API does not show: how many
    messages reached the mailbox and how many times each event was written.
    """
    wid = planned.workflow_id
    checked = Checked(workflows=1)
    status = request_until_answered(http, "GET", f"/workflows/{wid}").json()
    assert status["status"] == "SUCCESS", f"{wid}: {status['status']} {status['error']}"
    results = fibonacci_table(planned.n_steps)
    events = request_until_answered(http, "GET", f"/workflow-events/{wid}/all").json()["events"]
    if planned.kind == "events":
        expected = {"total_steps": planned.n_steps, "results": results}
        final = {"status": names.STATUS_COMPLETED, "progress": 100, "result": expected}
        assert events == final, f"{wid}: events {events}, expected {final}"
        assert status["result"] == expected, f"{wid}: result {status['result']}"
    elif planned.kind == "messaging":
        payload = planned.payload
        assert planned.acknowledged, f"{wid}: the approval was never acknowledged"
        if planned.approve:
            expected = {
                "outcome": names.STATUS_COMPLETED,
                "approved": True,
                "message": payload,
                "total_steps": planned.n_steps,
                "results": results,
            }
            final = {
                "status": names.STATUS_COMPLETED,
                "progress": 100,
                "message": payload,
                "result": expected,
            }
        else:
            expected = {"outcome": names.STATUS_REJECTED, "approved": False, "message": payload}
            final = {"status": names.STATUS_REJECTED, "message": payload, "result": expected}
        assert events == final, f"{wid}: events {events}, expected {final}"
        assert status["result"] == expected, f"{wid}: result {status['result']}"
        rows = message_rows(db, wid)
        assert rows == [(payload, True)], f"{wid}: mailbox {rows}, expected one consumed {payload}"
        checked.messages = 1
    else:
        page = request_until_answered(http, "GET", f"/workflow-stream/{wid}").json()
        values = page["stream_values"]
        shape = [(v.get("type"), v.get("step")) for v in values]
        assert shape == expected_stream(planned.n_steps), f"{wid}: stream {shape}"
        assert page["closed"], f"{wid}: stream not closed: {page}"
        got = [{"n": v["n"], "fibonacci": v["fibonacci"]} for v in values if v["type"] == "result"]
        assert got == results, f"{wid}: stream results {got}"
        assert values[-2]["results"] == results, f"{wid}: summary {values[-2]}"
        checked.stream_entries = len(values)
        if sse:
            replayed = read_sse_stream(str(http.base_url).rstrip("/"), wid)
            assert replayed == values, f"{wid}: SSE replay differs from the page: {replayed}"
            checked.sse_entries = len(replayed)
    writes = event_writes(db, wid)
    assert writes == expected_event_writes(planned), f"{wid}: set_event calls {writes}"
    checked.events = sum(writes.values())
    return checked


@dataclass
class CampaignReport:
    seed: int
    kills: int = 0
    # How many times DBOS recovered each workflow after a kill, i.e. how many kills caught it
    # running: a long one may be caught again.
    hits: Counter[str] = field(default_factory=Counter)
    hit_kinds: Counter[str] = field(default_factory=Counter)  # hit workflows by kind
    # Each kill's targets: kind -> the workflow seen running, steps to go, just before it.
    targets: list[dict[str, str]] = field(default_factory=list)
    replaced_targets: int = 0  # targets that went too far before their kill came
    target_margin: list[int] = field(default_factory=list)  # least steps left at each kill
    workflows: Counter[str] = field(default_factory=Counter)
    checked: Checked = field(default_factory=Checked)
    acknowledged_sends: int = 0
    repeated_sends: int = 0
    unanswered: int = 0
    unavailable: int = 0
    restart_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.workflows.items()))
        hit_kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.hit_kinds.items()))
        worst = max(self.restart_seconds, default=0.0)
        mean = sum(self.restart_seconds) / max(1, len(self.restart_seconds))
        hits = (
            f"  kills hit {len(self.hits)} running workflows ({hit_kinds}) "
            f"{sum(self.hits.values())} times, one of them {max(self.hits.values())} times\n"
            if self.hits
            else "  no kill hit a running workflow\n"
        )
        targets = (
            f"  every kill caught a workflow of each kind mid-work, {min(self.target_margin)} "
            f"or more steps of {TARGET_STEP_SECONDS:g}s to go; all {3 * self.kills} recovered "
            f"({self.replaced_targets} targets went too far and were replaced)\n"
            if self.target_margin
            else ""
        )
        return (
            f"crash campaign (seed {self.seed}): {self.kills} kills in {self.seconds:.0f}s\n"
            f"{hits}{targets}"
            f"  workflows: {self.checked.workflows} finished and checked ({kinds})\n"
            f"  stream entries: {self.checked.stream_entries} checked in pages, "
            f"{self.checked.sse_entries} replayed over SSE; no loss, no duplicate\n"
            f"  events: {self.checked.events} set_event calls, each exactly as often as coded\n"
            f"  messages: {self.acknowledged_sends} acknowledged, each received exactly once "
            f"({self.repeated_sends} sent twice with one Idempotency-Key)\n"
            f"  client retries: {self.unanswered} requests without an answer, "
            f"{self.unavailable} answered 503\n"
            f"  restart to ready: mean {mean:.1f}s, worst {worst:.1f}s"
        )


class Campaign:
    """The clients of one campaign: what was planned, and the threads that act on it."""

    def __init__(self, base_url: str, rng: random.Random, pool: ThreadPoolExecutor) -> None:
        self.base_url, self.rng, self.pool = base_url, rng, pool
        self.tally = Tally()
        self.planned: list[Planned] = []
        self.clients: list[Future[None]] = []

    def launch(self, item: Planned) -> Planned:
        self.planned.append(item)
        client_rng = random.Random(self.rng.random())
        self.clients.append(
            self.pool.submit(run_client, self.base_url, item, self.tally, client_rng)
        )
        return item


def await_targets(
    http: httpx.Client,
    campaign: Campaign,
    targets: dict[names.WorkflowKind, Planned],
    report: CampaignReport,
) -> int:
    """Wait until every target is seen running with TARGET_STEPS_LEFT or more steps to go.

    All targets must qualify on one pass over them, and the kill follows that pass at once.
    A target that went too far (a slow round, a loaded machine) is replaced by a fresh one
    of its kind. Returns the least number of steps left among the targets on that pass.
    """
    deadline = time.monotonic() + TARGET_WAIT
    while True:
        left = {kind: steps_left(http, planned) for kind, planned in targets.items()}
        if all(n is not None and n >= TARGET_STEPS_LEFT for n in left.values()):
            return min(n for n in left.values() if n is not None)
        for kind, n in left.items():
            if n is not None and n < TARGET_STEPS_LEFT:
                targets[kind] = campaign.launch(plan_target(campaign.rng, kind))
                report.replaced_targets += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"targets not all running mid-work after {TARGET_WAIT}s: {left}")
        time.sleep(0.05)


def recovery_counts(db: psycopg.Connection, workflow_ids: list[str]) -> dict[str, int]:
    """How many times DBOS recovered each workflow (a direct start counts 1 attempt, each
    recovery of a PENDING workflow after a restart one more)."""
    rows = db.execute(
        "SELECT workflow_uuid, recovery_attempts FROM dbos.workflow_status"
        " WHERE workflow_uuid = ANY(%s)",
        (workflow_ids,),
    ).fetchall()
    return {workflow_id: (attempts or 1) - 1 for workflow_id, attempts in rows}


def run_campaign(
    database_url: str,
    kills: int,
    *,
    seed: int | None = None,
    per_kill: int = 3,
    max_gap: float = 2.5,
    finish_timeout: float = 180.0,
) -> CampaignReport:
    """Run `kills` SIGKILLs of one server on `database_url`; verify every workflow; report.

    Before each kill one target and `per_kill` more new workflows of each kind are started.
    The kill comes a random 0.2..`max_gap` seconds later, whatever the clients and the other
    workflows are doing, and not before every target is running with steps to go.
    """
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    report = CampaignReport(seed=seed)
    started = time.monotonic()
    server = ServerProcess(database_url, executor_id=unique_id("campaign-executor"))
    server.start()
    try:
        with (
            ThreadPoolExecutor(max_workers=16) as pool,
            httpx.Client(base_url=server.base_url, timeout=10.0) as http,
        ):
            campaign = Campaign(server.base_url, rng, pool)
            for _ in range(kills):
                # Targets first, so a busy pool never holds their start back.
                targets = {kind: campaign.launch(plan_target(rng, kind)) for kind in KINDS}
                for kind in KINDS:
                    for _ in range(per_kill):
                        campaign.launch(plan_workflow(rng, kind))
                time.sleep(rng.uniform(0.2, max_gap))
                report.target_margin.append(await_targets(http, campaign, targets, report))
                server.kill()
                report.kills += 1
                report.targets.append({kind: p.workflow_id for kind, p in targets.items()})
                restart = time.monotonic()
                server.start()
                report.restart_seconds.append(time.monotonic() - restart)
            for client in campaign.clients:
                client.result(timeout=finish_timeout)
            planned = campaign.planned
            wait_finished(http, [p.workflow_id for p in planned], finish_timeout)
            with psycopg.connect(database_url, autocommit=True) as db:
                for item in planned:
                    report.checked.add(verify_workflow(http, db, item))
                    report.workflows[item.kind] += 1
                recovered = recovery_counts(db, [p.workflow_id for p in planned])
    finally:
        server.stop()
    report.hits.update({wid: n for wid, n in recovered.items() if n > 0})
    for number, targets_of_kill in enumerate(report.targets, start=1):
        missed = {kind: wid for kind, wid in targets_of_kill.items() if not recovered.get(wid)}
        assert not missed, f"kill {number} found these targets no longer running: {missed}"
    messaging = [p for p in planned if p.kind == "messaging"]
    report.acknowledged_sends = sum(p.acknowledged for p in messaging)
    report.repeated_sends = sum(p.repeat_send for p in messaging)
    report.unanswered, report.unavailable = campaign.tally.unanswered, campaign.tally.unavailable
    kind_of = {p.workflow_id: p.kind for p in planned}
    report.hit_kinds.update(kind_of[wid] for wid in report.hits if wid in kind_of)
    report.seconds = time.monotonic() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="SIGKILL a busy server again and again.")
    parser.add_argument("--kills", type=int, default=30, help="number of SIGKILLs (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, to replay a run")
    parser.add_argument("--per-kill", type=int, default=3, help="new workflows per kind per kill")
    parser.add_argument(
        "--database-url",
        default=None,
        help="an empty Postgres database to use (default: a throwaway Postgres)",
    )
    args = parser.parse_args()
    postgres = None if args.database_url else ThrowawayPostgres()
    try:
        url = args.database_url or (postgres.create_database("campaign") if postgres else "")
        report = run_campaign(url, args.kills, seed=args.seed, per_kill=args.per_kill)
    finally:
        if postgres:
            postgres.stop()
    print(report.summary())  # noqa: T201 - a command-line report


if __name__ == "__main__":
    main()
