"""Database outage: Postgres stops under load and comes back; the server rides it out.

One scenario runs once for the module (it takes a while) and records every request; each test
then checks one promise against the record. The scenario: client threads start workflows of
all three kinds, send approvals, read status, events and streams and ask /health, while a
live SSE client follows a long stream. Postgres is stopped (pg_ctl fast stop: every open
connection is cut) for OUTAGE_SECONDS, then started again on the same data. Clients retry a
request that got a 503, as the Retry-After header asks, with the same workflow ID or
Idempotency-Key.

The server runs with COMM_DB_TIMEOUT_SEC=3 (documented default 10 s) to keep the test short.

    .venv/bin/pytest tests/test_db_outage.py -q -s   # -s prints the measured recovery time
"""

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse
from prometheus_client.parser import text_string_to_metric_families

from tests.crash_campaign import (
    KINDS,
    Planned,
    expected_stream,
    plan_workflow,
    verify_workflow,
    wait_finished,
)
from tests.support import ServerProcess, ThrowawayPostgres, unique_id
from workflow_comm import names

pytestmark = pytest.mark.needs_own_server

DB_TIMEOUT = 3.0
# Scheduling on a shared 2-core machine adds seconds; a hang would add far more.
LATENCY_BOUND = DB_TIMEOUT + 5.0
OUTAGE_SECONDS = 5.0
LOAD_AFTER = 4.0
RECOVERY_BOUND = 15.0
RESUME_BOUND = 30.0
# Without a look at the database when it returns, DBOS would find the message after 60 s.
WAKE_BOUND = 20.0
# 16 steps of 0.5 s: the live stream is still being written when the outage begins, however
# long stopping Postgres takes on a loaded machine, and goes on after it.
LIVE_STEPS, LIVE_STEP_SECONDS = 16, 0.5


@dataclass
class Call:
    op: str
    started: float
    seconds: float
    status: int | None  # None: no answer (the connection dropped or timed out)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class OutageRecord:
    calls: list[Call] = field(default_factory=list)
    planned: list[Planned] = field(default_factory=list)
    down_at: float = 0.0
    up_at: float = 0.0
    live_values: list[Any] = field(default_factory=list)
    live_reconnects: int = 0
    live_cut_offs: list[str] = field(default_factory=list)
    live_workflow: Planned | None = None
    # Waiting for its approval through the outage; approved the moment the database is back.
    approval: Planned | None = None
    approved_at: float = 0.0
    approval_seen_at: float = 0.0  # when its status first moved past waiting_for_approval
    phases: dict[str, float] = field(default_factory=dict)  # seconds since the fixture began
    server: ServerProcess | None = None
    database_url: str = ""
    metrics: str = ""  # the server's /metrics once the clients are done
    lock: threading.Lock = field(default_factory=threading.Lock)

    def during_outage(self) -> list[Call]:
        return [c for c in self.calls if self.down_at <= c.started < self.up_at]


def call(
    record: OutageRecord, http: httpx.Client, op: str, method: str, url: str, **kw: Any
) -> httpx.Response | None:
    """Send one request and record how it went; None if it got no answer."""
    started = time.monotonic()
    response: httpx.Response | None = None
    try:
        response = http.request(method, url, **kw)
    except httpx.TransportError as exc:
        result = Call(op, started, time.monotonic() - started, None, repr(exc))
    else:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        seconds = time.monotonic() - started
        result = Call(op, started, seconds, response.status_code, body, dict(response.headers))
    with record.lock:
        record.calls.append(result)
    return response


def until_ok(
    record: OutageRecord, http: httpx.Client, op: str, method: str, url: str, **kw: Any
) -> httpx.Response:
    """Repeat a request until it is answered other than 503 (a client honouring Retry-After)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = call(record, http, op, method, url, **kw)
        if response is not None and response.status_code != 503:
            return response
        time.sleep(0.3)
    raise AssertionError(f"{op} {url}: no answer but 503 for 120s")


def client_loop(record: OutageRecord, base_url: str, stop: threading.Event, seed: int) -> None:
    """Start workflows one after another; send approvals; read everything about each.

    The kinds take turns, beginning at KINDS[seed]: with loops seeded 0, 1 and 2, the first
    start of each loop already covers every kind, however few starts a loaded machine allows.
    """
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        turn = seed
        while not stop.is_set():
            item = plan_workflow(rng, KINDS[turn % len(KINDS)], prefix="outage")
            turn += 1
            item.n_steps, item.step_seconds = rng.randint(2, 5), 0.2
            if item.payload is not None:
                item.payload["approved"] = item.approve = True
            params = item.start_params()
            started = until_ok(record, http, "start", "POST", item.start_path(), params=params)
            assert started.status_code == 200, started.text
            with record.lock:
                record.planned.append(item)
            wid = item.workflow_id
            if item.kind == "messaging":
                sent = until_ok(
                    record,
                    http,
                    "send",
                    "POST",
                    f"/send-message/{wid}",
                    json=item.payload,
                    headers={"Idempotency-Key": item.idempotency_key or ""},
                )
                assert sent.status_code == 200, sent.text
                item.acknowledged = True
            for _ in range(3):
                call(record, http, "status", "GET", f"/workflows/{wid}")
                call(record, http, "events", "GET", f"/workflow-events/{wid}/all")
                call(record, http, "stream", "GET", f"/workflow-stream/{wid}")
                call(record, http, "health", "GET", "/health")
                time.sleep(0.1)


def follow_live(record: OutageRecord, base_url: str, workflow_id: str) -> None:
    """Follow a stream to its end, reconnecting with Last-Event-ID whenever it is cut."""
    last: int | None = None
    with httpx.Client(timeout=httpx.Timeout(30.0, read=60.0)) as http:
        while True:
            headers = {} if last is None else {"Last-Event-ID": str(last)}
            try:
                with connect_sse(
                    http, "GET", f"{base_url}/workflow-stream/{workflow_id}/live", headers=headers
                ) as source:
                    if source.response.status_code == 503:
                        time.sleep(0.5)
                        continue
                    assert source.response.status_code == 200, source.response.status_code
                    for sse in source.iter_sse():
                        if sse.event == "message":
                            last = int(sse.id)
                            record.live_values.append((last, sse.json(), time.monotonic()))
                        elif sse.event == "closed":
                            return
                        else:
                            record.live_cut_offs.append(sse.event)
                            break
            except httpx.TransportError as exc:
                record.live_cut_offs.append(type(exc).__name__)
            record.live_reconnects += 1
            time.sleep(0.2)


def watch_approval(record: OutageRecord, base_url: str) -> None:
    """Note when the approved workflow's status first moves past waiting_for_approval."""
    assert record.approval is not None
    url = f"{base_url}/workflow-events/{record.approval.workflow_id}/{names.EVENT_STATUS}"
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=30.0) as http:
        while time.monotonic() < deadline:
            response = http.get(url, params={"timeout": 0})
            if response.status_code == 200 and response.json()["value"] != names.STATUS_WAITING:
                record.approval_seen_at = time.monotonic()
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def outage() -> Iterator[OutageRecord]:
    """Run the scenario once: load, stop Postgres, start it again, let the load go on."""
    began = time.monotonic()
    postgres = ThrowawayPostgres()
    record = OutageRecord()
    try:
        record.phases["postgres ready"] = time.monotonic() - began
        record.database_url = postgres.create_database(unique_id("outage").replace("-", "_"))
        server = ServerProcess(
            record.database_url, env={"COMM_DB_TIMEOUT_SEC": str(DB_TIMEOUT)}
        ).start()
        record.server = server
        record.phases["server ready"] = time.monotonic() - began
        live = plan_workflow(random.Random(), "streaming", prefix="outage-live")
        live.n_steps, live.step_seconds = LIVE_STEPS, LIVE_STEP_SECONDS
        record.live_workflow = live
        started = httpx.post(f"{server.base_url}{live.start_path()}", params=live.start_params())
        assert started.status_code == 200, started.text
        approval = plan_workflow(random.Random(), "messaging", prefix="outage-approval")
        approval.n_steps, approval.step_seconds, approval.approve = 1, 0, True
        approval.payload = {"approved": True, "sent": "as the database came back"}
        record.approval = approval
        started = httpx.post(
            f"{server.base_url}{approval.start_path()}", params=approval.start_params()
        )
        assert started.status_code == 200, started.text
        stop = threading.Event()
        threads = [
            threading.Thread(target=client_loop, args=(record, server.base_url, stop, n))
            for n in range(3)
        ] + [threading.Thread(target=follow_live, args=(record, server.base_url, live.workflow_id))]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # load before the outage
        record.down_at = time.monotonic()
        postgres.stop_postgres()
        # /health once with the database surely away (the clients' own asks may all fall
        # outside the outage while they wait on 503s), for the failed-probe count.
        with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
            call(record, http, "health", "GET", "/health")
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - record.down_at)))
        postgres.start_postgres()
        record.up_at = time.monotonic()
        with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
            path = f"/send-message/{approval.workflow_id}"
            key = {"Idempotency-Key": approval.idempotency_key or ""}
            sent = until_ok(record, http, "send", "POST", path, json=approval.payload, headers=key)
            assert sent.status_code == 200, sent.text
        approval.acknowledged, record.approved_at = True, time.monotonic()
        watcher = threading.Thread(target=watch_approval, args=(record, server.base_url))
        watcher.start()
        threads.append(watcher)
        time.sleep(LOAD_AFTER)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a client never finished"
        record.phases["clients done"] = time.monotonic() - began
        record.metrics = httpx.get(f"{server.base_url}/metrics").text
        yield record
        server.stop()
    finally:
        postgres.stop()


def test_requests_during_the_outage_get_503_with_a_clear_message(outage: OutageRecord) -> None:
    """While the database is away every answer is a 2xx or 503 with a readable detail and
    Retry-After; none is a 500."""
    during = outage.during_outage()
    codes = Counter(c.status for c in during)
    assert codes[503] > 0, f"no 503 seen during the outage: {codes}"
    bad = [c for c in outage.calls if c.status is not None and c.status >= 500 and c.status != 503]
    assert not bad, f"{len(bad)} other 5xx answers, e.g. {bad[:3]}"
    for c in during:
        if c.status == 503:
            detail = c.body.get("detail") if c.op != "health" else c.body.get("status")
            assert detail, f"503 without a message: {c}"
            assert c.headers.get("retry-after") or c.op == "health", f"no Retry-After: {c}"
    details = {c.body["detail"] for c in during if c.status == 503 and c.op != "health"}
    assert details == {"The database is unavailable; retry shortly."}, details


def test_no_request_hangs_past_the_database_timeout(outage: OutageRecord) -> None:
    """Every request is answered within COMM_DB_TIMEOUT_SEC (plus scheduling slack)."""
    slowest = max(outage.calls, key=lambda c: c.seconds)
    during = outage.during_outage()
    print(  # noqa: T201
        f"{len(outage.calls)} requests, {len(during)} during the outage "
        f"({sum(c.status == 503 for c in during)} answered 503, others "
        f"{dict(Counter((c.op, c.status) for c in during if c.status != 503))}); slowest answer "
        f"{slowest.seconds:.2f}s ({slowest.op} {slowest.status})"
    )
    assert slowest.seconds < LATENCY_BOUND, f"slowest {slowest.seconds:.1f}s: {slowest}"


def test_no_connection_is_dropped(outage: OutageRecord) -> None:
    """Every request gets an HTTP answer: none ends in a reset or closed connection."""
    dropped = [c for c in outage.calls if c.status is None]
    assert not dropped, f"{len(dropped)} requests without an answer: {dropped[:3]}"


def test_server_recovers_by_itself_within_seconds(outage: OutageRecord) -> None:
    """Within seconds of Postgres returning, every kind of request succeeds again."""
    recovered = {}
    for op in ("start", "send", "status", "events", "stream", "health"):
        ok = [c.started + c.seconds for c in outage.calls if c.op == op and c.status == 200]
        after = [t for t in ok if t >= outage.up_at]
        assert after, f"no {op} succeeded after the database came back"
        recovered[op] = min(after) - outage.up_at
    worst = max(recovered.values())
    each = ", ".join(f"{op} {seconds:.1f}s" for op, seconds in recovered.items())
    print(f"recovered {worst:.1f}s after Postgres was back ({each})")  # noqa: T201
    assert worst < RECOVERY_BOUND, f"recovery took {recovered}"


def test_nothing_acknowledged_is_lost(outage: OutageRecord) -> None:
    """Every workflow whose start got a 200 finishes, with every stream entry, event and
    acknowledged message exactly once."""
    assert outage.server is not None
    assert outage.approval is not None
    planned = [*outage.planned, outage.approval]
    assert len({p.kind for p in planned}) == 3, f"kinds started: {Counter(p.kind for p in planned)}"
    with httpx.Client(base_url=outage.server.base_url, timeout=30.0) as http:
        # DBOS retries with backoff (1 s, doubling): after a 5 s outage within seconds; a
        # notification lost in the outage would leave a workflow waiting up to 60 s.
        wait_finished(http, [p.workflow_id for p in planned], timeout=RESUME_BOUND)
        with psycopg.connect(outage.database_url, autocommit=True) as db:
            for item in planned:
                verify_workflow(http, db, item, sse=False)


def test_message_sent_as_the_database_returns_wakes_its_workflow(outage: OutageRecord) -> None:
    """An approval acknowledged right after the database is back reaches its waiting workflow
    within seconds, though its notification may have been lost with the outage."""
    assert outage.approval_seen_at, "the approved workflow never reacted"
    delay = outage.approval_seen_at - outage.approved_at
    after = outage.approved_at - outage.up_at
    print(f"approval sent {after:.1f}s after Postgres was back, received {delay:.1f}s later")  # noqa: T201
    assert delay < WAKE_BOUND, f"the approved workflow waited {delay:.1f}s"


def test_live_stream_resumes_after_the_outage(outage: OutageRecord) -> None:
    """A live stream followed across the outage (reconnecting with Last-Event-ID when cut)
    ends with every entry exactly once, in order."""
    live = outage.live_workflow
    assert live is not None
    offsets = [offset for offset, _, _ in outage.live_values]
    assert offsets == list(range(len(offsets))), f"offsets {offsets}"
    shape = [(v["type"], v.get("step")) for _, v, _ in outage.live_values]
    assert shape == expected_stream(live.n_steps), f"live stream {shape}"
    resumed = min(t for _, _, t in outage.live_values if t > outage.up_at) - outage.up_at
    print(  # noqa: T201
        f"live stream: next entry {resumed:.1f}s after Postgres was back, "
        f"{outage.live_reconnects} reconnects after {outage.live_cut_offs}; phases {outage.phases}"
    )


def test_failed_health_probes_are_counted(outage: OutageRecord) -> None:
    """Each /health answered 503 came from a database probe that failed, and each failed probe
    counts once in comm_db_probe_failures_total (requests in flight together share a probe)."""
    failures = sum(
        sample.value
        for family in text_string_to_metric_families(outage.metrics)
        for sample in family.samples
        if sample.name == "comm_db_probe_failures_total"
    )
    degraded = sum(c.op == "health" and c.status == 503 for c in outage.calls)
    assert degraded > 0, "no /health answered 503 during the outage"
    assert 1 <= failures <= degraded, f"{failures} failed probes counted, {degraded} health 503s"
