"""The mailbox and request/reply, on live server processes and a live Postgres.

One server with API keys (an operator's write key, and one write key for each of two tenants)
serves every test but the crash, which runs two servers one after the other (the second with
the first one's executor ID) on a database of its own.

    .venv/bin/pytest -n0 tests/test_mailbox_requests.py -q
"""

import asyncio
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import (
    AsyncClientAsSync,
    OwnServer,
    ServerProcess,
    ThrowawayPostgres,
    fibonacci_table,
    unique_id,
    wait_until,
)
from workflow_comm import names

pytestmark = pytest.mark.needs_own_server

WRITE_KEY = secrets.token_urlsafe(24)
ACME_KEY = secrets.token_urlsafe(24)
BETA_KEY = secrets.token_urlsafe(24)
API_KEYS = f"{WRITE_KEY}:write, {ACME_KEY}:write:acme, {BETA_KEY}:write:beta"
# Workflows that must outlive every test's own waits, however loaded the machine.
LONG = 600
CONCURRENT_REQUESTS = 200
FIB = {row["n"]: row["fibonacci"] for row in fibonacci_table(100)} | {0: 0}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def correlation_of(idempotency_key: str) -> str:
    """The correlation ID the server derives from a key (README: request/reply)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


@pytest.fixture(scope="module")
def server(own_server: OwnServer) -> ServerProcess:
    return own_server(env={"COMM_API_KEYS": API_KEYS})


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client with the operator's write key."""
    with server.client(headers=bearer(WRITE_KEY)) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, f"{response.request.url}: {response.text}"
    return response.json()


def start_service(http: httpx.Client, workflow_id: str, **params: Any) -> None:
    params.setdefault("idle_timeout", LONG)
    ok(http.post(f"/start-workflow-service/{workflow_id}", params=params))


def ask(
    http: httpx.Client, workflow_id: str, body: Any, key: str | None = None, **params: Any
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return http.post(f"/workflows/{workflow_id}/request", json=body, params=params, headers=headers)


def served(http: httpx.Client, workflow_id: str) -> int:
    events = ok(http.get(f"/workflow-events/{workflow_id}/all"))["events"]
    return int(events[names.EVENT_REQUESTS_SERVED])


def mailbox(http: httpx.Client, workflow_id: str, **params: Any) -> list[dict[str, Any]]:
    page = ok(http.get(f"/workflows/{workflow_id}/messages", params=params))
    assert page["count"] == len(page["data"]), page
    data: list[dict[str, Any]] = page["data"]
    return data


def status_of(http: httpx.Client, workflow_id: str) -> str:
    return str(ok(http.get(f"/workflows/{workflow_id}"))["status"])


# -- request/reply ---------------------------------------------------------------------------


def test_request_is_answered_in_the_same_response(http: httpx.Client) -> None:
    """POST /workflows/{id}/request returns the service's reply {"n": k, "fibonacci": F(k)},
    and the workflow counts it in `requests_served`."""
    wf = unique_id("svc")
    start_service(http, wf)
    answer = ok(ask(http, wf, {"n": 10}))
    assert answer["reply"] == {"n": 10, "fibonacci": 55}, answer
    assert answer["topic"] == names.TOPIC_REQUEST
    assert served(http, wf) == 1


def test_request_not_understood_gets_the_services_error_reply(http: httpx.Client) -> None:
    """The service replies to a body it cannot serve with an `error`, not silence."""
    wf = unique_id("svc")
    start_service(http, wf)
    answer = ok(ask(http, wf, {"n": names.FIBONACCI_N_MAX + 1}))
    assert "error" in answer["reply"], answer


def test_request_without_reply_times_out_with_504_and_stays_pending(http: httpx.Client) -> None:
    """Nobody listens on the topic: 504 with a JSON detail naming the timeout, and the request
    is in the mailbox, pending."""
    wf = unique_id("svc")
    start_service(http, wf)
    response = ask(http, wf, {"n": 1}, key="nobody-listens", topic="unheard", timeout=0.2)
    assert response.status_code == 504, response.text
    assert "within 0.2s" in response.json()["detail"], response.text
    pending = mailbox(http, wf, state="pending", topic="unheard")
    assert [m["idempotency_key"] for m in pending] == ["nobody-listens"], pending


def test_repeat_with_the_same_key_returns_the_same_reply_handled_once(http: httpx.Client) -> None:
    """Two requests with one Idempotency-Key: one reply, one message, one request served."""
    wf = unique_id("svc")
    start_service(http, wf)
    first = ok(ask(http, wf, {"n": 20}, key="same"))
    again = ok(ask(http, wf, {"n": 20}, key="same"))
    assert first == again, (first, again)
    assert first["reply"] == {"n": 20, "fibonacci": 6765}
    assert first["correlation_id"] == correlation_of("same")
    assert served(http, wf) == 1
    messages = mailbox(http, wf)
    assert [(m["idempotency_key"], m["consumed"]) for m in messages] == [("same", True)], messages


def test_request_to_a_finished_workflow_is_409_but_a_repeat_still_gets_its_reply(
    http: httpx.Client,
) -> None:
    """After the service ended (idle), a new request is refused with 409; a repeat of one it
    answered gets that answer."""
    wf = unique_id("svc")
    start_service(http, wf, idle_timeout=1)
    answered = ok(ask(http, wf, {"n": 5}, key="before-the-end"))
    wait_until(lambda: status_of(http, wf) == "SUCCESS", what="the idle service to end")
    late = ask(http, wf, {"n": 6})
    assert late.status_code == 409, late.text
    assert ok(ask(http, wf, {"n": 5}, key="before-the-end")) == answered


def test_200_concurrent_requests_each_answered_once_and_correctly(http: httpx.Client) -> None:
    """200 requests at once to one service workflow: each gets F(its n), none is lost or
    answered twice (requests_served and the consumed messages are 200)."""
    wf = unique_id("svc")
    start_service(http, wf)

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=str(http.base_url), headers=bearer(WRITE_KEY), timeout=120
        ) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"/workflows/{wf}/request",
                        json={"n": i % 100},
                        params={"timeout": names.REQUEST_TIMEOUT_MAX},
                        headers={"Idempotency-Key": f"req-{i}"},
                    )
                    for i in range(CONCURRENT_REQUESTS)
                )
            )

    began = time.monotonic()
    responses = asyncio.run(all_at_once())
    elapsed = time.monotonic() - began
    wrong = [
        (i, r.status_code, r.text)
        for i, r in enumerate(responses)
        if r.status_code != 200 or r.json()["reply"] != {"n": i % 100, "fibonacci": FIB[i % 100]}
    ]
    assert not wrong, f"{len(wrong)} wrong answers, first {wrong[:3]} ({elapsed:.1f}s)"
    assert served(http, wf) == CONCURRENT_REQUESTS
    consumed = mailbox(http, wf, state="consumed", limit=names.MAILBOX_PAGE_MAX)
    assert len(consumed) == CONCURRENT_REQUESTS, f"{len(consumed)} consumed"
    assert len({m["idempotency_key"] for m in consumed}) == CONCURRENT_REQUESTS
    print(f"{CONCURRENT_REQUESTS} concurrent requests answered in {elapsed:.2f}s")  # noqa: T201


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({"timeout": 0}, {"n": 1}),
        ({"timeout": names.REQUEST_TIMEOUT_MAX + 1}, {"n": 1}),
        ({"topic": "bad topic"}, {"n": 1}),
        ({}, [1, 2]),
    ],
)
def test_bad_request_input_is_422(http: httpx.Client, params: dict[str, Any], body: Any) -> None:
    wf = unique_id("svc")
    start_service(http, wf)
    response = ask(http, wf, body, **params)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_request_to_an_unknown_workflow_is_404(http: httpx.Client) -> None:
    response = ask(http, unique_id("nobody"), {"n": 1})
    assert response.status_code == 404, response.text


# -- the mailbox ----------------------------------------------------------------------------


def test_mailbox_shows_pending_and_consumed_messages_on_two_topics(http: httpx.Client) -> None:
    """A messaging workflow takes its approval on `notification`; two messages on another
    topic stay pending. Repeats with a key add nothing. Oldest first, with times and keys."""
    wf = unique_id("mbx")
    ok(
        http.post(
            f"/start-workflow-messaging/{wf}/1",
            params={"step_seconds": 0, "approval_timeout": LONG},
        )
    )
    sends = [
        ("other", {"seq": 1}, "k-other-1"),
        ("other", {"seq": 2}, None),
        (names.TOPIC_NOTIFICATION, {"approved": True, "seq": 3}, "k-approve"),
        (names.TOPIC_NOTIFICATION, {"approved": True, "seq": 3}, "k-approve"),  # a repeat
        ("other", {"seq": 1}, "k-other-1"),  # a repeat
    ]
    for topic, payload, key in sends:
        headers = {"Idempotency-Key": key} if key else {}
        ok(http.post(f"/send-message/{wf}", params={"topic": topic}, json=payload, headers=headers))
    wait_until(lambda: status_of(http, wf) == "SUCCESS", what="the approved workflow to end")

    everything = mailbox(http, wf)
    assert sorted(m["payload"]["seq"] for m in everything) == [1, 2, 3], everything
    sent_at = [m["sent_at"] for m in everything]
    assert sent_at == sorted(sent_at), f"not oldest first: {sent_at}"
    pending = mailbox(http, wf, state="pending")
    assert sorted((m["topic"], m["payload"]["seq"]) for m in pending) == [
        ("other", 1),
        ("other", 2),
    ], pending
    assert all(not m["consumed"] and m["consumed_at"] is None for m in pending), pending
    (consumed,) = mailbox(http, wf, state="consumed")
    assert consumed["topic"] == names.TOPIC_NOTIFICATION
    assert consumed["idempotency_key"] == "k-approve"
    assert consumed["message_id"] == f"k-approve::{wf}"
    assert consumed["consumed_at"] >= consumed["sent_at"], consumed
    assert consumed["consumed_by_step"] is not None
    by_topic = mailbox(http, wf, topic="other")
    assert {m["idempotency_key"] for m in by_topic} == {"k-other-1", None}, by_topic
    first, second = mailbox(http, wf, limit=1), mailbox(http, wf, limit=1, offset=1)
    assert first + second == everything[:2], (first, second)


@pytest.mark.parametrize(
    "params",
    [
        {"state": "read"},
        {"limit": 0},
        {"limit": names.MAILBOX_PAGE_MAX + 1},
        {"offset": -1},
        {"topic": "no spaces"},
    ],
)
def test_bad_mailbox_parameters_are_422(http: httpx.Client, params: dict[str, Any]) -> None:
    wf = unique_id("svc")
    start_service(http, wf)
    response = http.get(f"/workflows/{wf}/messages", params=params)
    assert response.status_code == 422, response.text


def test_mailbox_of_another_tenants_workflow_is_404(server: ServerProcess) -> None:
    """Tenant beta cannot read or request tenant acme's workflow (404 as for an unknown ID);
    beta's own workflow of the same name has its own, empty mailbox; acme sees its message
    under its own ID."""
    wf = unique_id("tenant")
    with server.client() as http:
        acme, beta = bearer(ACME_KEY), bearer(BETA_KEY)
        ok(http.post(f"/start-workflow-service/{wf}", params={"idle_timeout": LONG}, headers=acme))
        ok(http.post(f"/send-message/{wf}?topic=memo", json={"a": 1}, headers=acme))
        assert http.get(f"/workflows/{wf}/messages", headers=beta).status_code == 404
        assert http.get(f"/workflows/{wf}/timeline", headers=beta).status_code == 404
        live = http.get(f"/workflows/{wf}/timeline/live", params={"api_key": BETA_KEY})
        assert live.status_code == 404, live.text
        assert ask_with(http, beta, wf).status_code == 404
        ok(http.post(f"/start-workflow-service/{wf}", params={"idle_timeout": LONG}, headers=beta))
        assert ok(http.get(f"/workflows/{wf}/messages", headers=beta))["data"] == []
        (theirs,) = ok(http.get(f"/workflows/{wf}/messages", headers=acme))["data"]
        assert theirs["payload"] == {"a": 1} and "acme" not in theirs["message_id"], theirs


def ask_with(http: httpx.Client, headers: dict[str, str], wf: str) -> httpx.Response:
    return http.post(f"/workflows/{wf}/request", json={"n": 1}, headers=headers)


# -- a crash mid-request --------------------------------------------------------------------


@pytest.fixture(scope="module")
def crash_database(postgres: ThrowawayPostgres | None, postgres_url: str) -> str:
    """A database of its own, so the restarted server alone recovers the workflow."""
    if postgres is None:
        return postgres_url
    return postgres.create_database(unique_id("reqcrash").replace("-", "_"))


def test_request_survives_a_sigkill_and_a_retry_with_the_same_key(crash_database: str) -> None:
    """The server is SIGKILLed after the service took the request and before it replied; the
    client retries with the same key on the restarted server and gets the reply; the workflow
    handled the request once (one message, requests_served 1)."""
    executor = unique_id("reqcrash-executor")
    wf, key = unique_id("svc-crash"), "crash-key"
    reply_key = names.reply_event(correlation_of(key))
    first = ServerProcess(crash_database, executor_id=executor).start()
    try:
        with first.client() as http:
            # Each request's work takes 5 s: the kill lands while it runs.
            start_service(http, wf, step_seconds=5)
            outcome: dict[str, Any] = {}

            def request() -> None:
                try:
                    outcome["response"] = ask(http, wf, {"n": 30}, key=key, timeout=60)
                except httpx.HTTPError as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=request)
            thread.start()
            wait_until(lambda: mailbox(http, wf, state="consumed"), what="the service to take it")
            not_yet = http.get(f"/workflow-events/{wf}/{reply_key}", params={"timeout": 0})
            first.kill()
            thread.join(timeout=30)
        assert not_yet.status_code == 404, f"replied before the kill: {not_yet.text}"
        assert "error" in outcome, f"the first request was answered: {outcome}"
    finally:
        first.kill()
    with ServerProcess(crash_database, executor_id=executor) as second, second.client() as http:
        answer = ok(ask(http, wf, {"n": 30}, key=key, timeout=names.REQUEST_TIMEOUT_MAX))
        assert answer["reply"] == {"n": 30, "fibonacci": 832040}, answer
        assert served(http, wf) == 1
        messages = mailbox(http, wf)
        assert [(m["idempotency_key"], m["consumed"]) for m in messages] == [(key, True)]
        timeline = ok(http.get(f"/workflows/{wf}/timeline"))["data"]
    ids = [entry["id"] for entry in timeline]
    assert len(ids) == len(set(ids)), f"listed twice: {ids}"
    types = [entry["type"] for entry in timeline]
    assert "recovery" in types, f"the recovery does not show: {types}"
    recovery = next(e for e in timeline if e["type"] == "recovery")
    # DBOS keeps no time for a recovery: `at` is there, null (a page drawing the timeline
    # must not take a missing `at` for a time).
    assert "at" in recovery and recovery["at"] is None and recovery["attempts"] >= 1, recovery
    assert types.count("message_received") == 1, types
    replies = [e for e in timeline if e["type"] == "event" and e["key"] == reply_key]
    assert len(replies) == 1, replies


# -- the typed clients ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_typed_clients_request_read_the_mailbox_and_the_timeline(
    server: ServerProcess, kind: str
) -> None:
    """Both typed clients (one set of flows): a reply, NoReply on a timeout, the mailbox and
    the timeline."""
    from workflow_comm.client import NoReply, TypedWorkflowClient

    client: Any = (
        TypedWorkflowClient(server.base_url, api_key=WRITE_KEY)
        if kind == "sync"
        else AsyncClientAsSync(server.base_url, api_key=WRITE_KEY)
    )
    with client:
        wf = unique_id(f"client-{kind}")
        assert client.start_workflow_service(wf, idle_timeout=LONG).created
        answer = client.request(wf, {"n": 12}, idempotency_key="client-key")
        assert answer.reply == {"n": 12, "fibonacci": 144}, answer
        with pytest.raises(NoReply):
            client.request(wf, {"n": 1}, topic="unheard", timeout=0.2)
        pending = client.list_messages(wf, state="pending")
        assert [m.topic for m in pending.data] == ["unheard"], pending
        consumed = client.list_messages(wf, state="consumed")
        assert [m.idempotency_key for m in consumed.data] == ["client-key"], consumed
        entries = client.get_timeline(wf).data
        assert entries[0].type == "created" and "message_received" in {e.type for e in entries}
