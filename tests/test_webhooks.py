"""Outbound webhooks against a real receiver: signed, retried, durable, bounded, scoped.

A small HTTP server in the test process is the receiver: each path answers as its test
scripts it (a list of statuses, or "hang": hold the request until the test ends). The
server under test runs on a Postgres database of its own (the crash test SIGKILLs and
restarts it) with short retry and timeout settings, and tenant keys.

    .venv/bin/pytest tests/test_webhooks.py -q
"""

import http.server
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook as Verifier

from tests.support import ServerProcess, ThrowawayPostgres, free_port, unique_id, wait_until

pytestmark = pytest.mark.needs_own_server

SECRET = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(32)).decode()
OPERATOR_KEY = secrets.token_urlsafe(24)
READ_KEY = secrets.token_urlsafe(24)
ACME_KEY = secrets.token_urlsafe(24)
BETA_KEY = secrets.token_urlsafe(24)
API_KEYS = f"{OPERATOR_KEY}:write,{READ_KEY}:read,{ACME_KEY}:write:acme,{BETA_KEY}:write:beta"
# The second attempt comes RETRY_BASE_SEC after the first: long enough to SIGKILL the server
# in between; each attempt gives up after TIMEOUT_SEC.
SETTINGS = {
    "COMM_API_KEYS": API_KEYS,
    "COMM_WEBHOOK_SECRET": SECRET,
    "COMM_WEBHOOK_ALLOW_PRIVATE": "true",
    "COMM_WEBHOOK_RETRY_BASE_SEC": "2",
    "COMM_WEBHOOK_MAX_ATTEMPTS": "3",
    "COMM_WEBHOOK_TIMEOUT_SEC": "2",
    "COMM_WEBHOOK_SCAN_INTERVAL_SEC": "0.2",
}
ALL_EVENTS = [
    "workflow.started",
    "workflow.finished",
    "event.set",
    "stream.closed",
    "message.received",
]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Receiver:
    """What each path answers, and every POST it got, in order."""

    port: int
    scripts: dict[str, list[int | str]] = field(default_factory=dict)
    posts: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, path: str) -> list[Received]:
        with self.lock:
            return [p for p in self.posts if p.path == path]

    def at_least(self, path: str, count: int) -> list[Received] | None:
        """The POSTs to `path` once there are `count` of them, else None."""
        posts = self.got(path)
        return posts if len(posts) >= count else None

    def answer(self, path: str) -> int | str:
        with self.lock:
            script = self.scripts.get(path) or [204]
            return script.pop(0) if len(script) > 1 else script[0]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"])).decode()
            with state.lock:
                state.posts.append(Received(self.path, dict(self.headers), body))
            answer = state.answer(self.path)
            if answer == "hang":
                state.release.wait(60)
                return
            self.send_response(int(answer))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Listener(http.server.ThreadingHTTPServer):
        request_queue_size = 128  # the default 5 refuses a burst of deliveries

    server = Listener(("127.0.0.1", state.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


@dataclass
class Server:
    """The server under test, restartable (same executor ID, database and folder)."""

    database_url: str | None  # None: the SQLite default, in `workdir`
    executor_id: str
    workdir: Path
    process: ServerProcess | None = None

    def start(self) -> None:
        self.process = ServerProcess(
            self.database_url, executor_id=self.executor_id, workdir=self.workdir, env=SETTINGS
        ).start()

    def client(self, key: str = OPERATOR_KEY) -> httpx.Client:
        assert self.process is not None
        return self.process.client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def server(
    postgres: ThrowawayPostgres | None,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A server alone on its database, so no other server runs its deliveries."""
    url = postgres_url
    if postgres is not None:
        url = postgres.create_database(unique_id("webhooks").replace("-", "_"))
    state = Server(url, unique_id("webhooks-executor"), tmp_path_factory.mktemp("webhooks"))
    state.start()
    yield state
    if state.process is not None:
        state.process.stop()


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same settings on the SQLite default (no LISTEN/NOTIFY; DBOS stamps to the second)."""
    state = Server(None, unique_id("webhooks-sqlite"), tmp_path_factory.mktemp("webhooks-sqlite"))
    state.start()
    yield state
    if state.process is not None:
        state.process.stop()


def register(http: httpx.Client, url: str, events: list[str], **filters: str) -> str:
    response = http.post("/webhooks", json={"url": url, "events": events, "filter": filters})
    assert response.status_code == 201, response.text
    webhook_id: str = response.json()["id"]
    return webhook_id


def start(http: httpx.Client, kind: str, workflow_id: str) -> None:
    response = http.post(f"/start-workflow-{kind}/{workflow_id}/1", params={"step_seconds": 0})
    assert response.status_code == 200, response.text


def deliveries(http: httpx.Client, webhook_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/webhooks/{webhook_id}/deliveries", params={"limit": 500})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def verified(post: Received) -> Any:
    """The body, once its signature is checked with the secret (raises if it does not match)."""
    return Verifier(SECRET).verify(post.body, post.headers)


def test_a_failed_attempt_is_retried_with_the_same_webhook_id(
    server: Server, receiver: Receiver
) -> None:
    """A receiver answering 500, then 204, gets two POSTs with one webhook-id, each signed
    with the secret; the delivery shows both attempts and ends delivered."""
    path = f"/{unique_id('retry')}"
    receiver.scripts[path] = [500, 204]
    workflow_id = unique_id("retry-wf")
    with server.client() as http:
        webhook_id = register(http, receiver.url(path), ["workflow.finished"])
        start(http, "events", workflow_id)
        posts = wait_until(lambda: receiver.at_least(path, 2), what=path)
        assert len({p.headers["webhook-id"] for p in posts}) == 1, [p.headers for p in posts]
        bodies = [verified(p) for p in posts]
        assert bodies[0] == bodies[1], bodies
        assert bodies[0]["type"] == "workflow.finished", bodies[0]
        assert bodies[0]["data"]["workflow_id"] == workflow_id, bodies[0]
        assert bodies[0]["data"]["status"] == "SUCCESS", bodies[0]

        def delivered() -> dict[str, Any] | None:
            found = deliveries(http, webhook_id)
            return found[0] if found and found[0]["outcome"] == "delivered" else None

        delivery = wait_until(delivered, what="the delivery recorded as delivered")
        assert delivery["id"] == posts[0].headers["webhook-id"], delivery
        assert [(a["result"], a["status_code"]) for a in delivery["attempts"]] == [
            ("http_error", 500),
            ("success", 204),
        ], delivery


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_every_event_type_is_delivered(
    database: str, request: pytest.FixtureRequest, receiver: Receiver
) -> None:
    """workflow.started and .finished, event.set, stream.closed and message.received each
    reach a webhook that asks for them all, on Postgres and on SQLite."""
    server: Server = request.getfixturevalue(
        "server" if database == "postgres" else "sqlite_server"
    )
    path = f"/{unique_id('all')}"
    streamed, messaged = unique_id("all-stream"), unique_id("all-msg")
    with server.client() as http:
        register(http, receiver.url(path), ALL_EVENTS, workflow_id_prefix="all-")
        start(http, "streaming", streamed)
        start(http, "messaging", messaged)
        sent = http.post(f"/send-message/{messaged}", json={"approved": True})
        assert sent.status_code == 200, sent.text

        def seen() -> set[tuple[str, str]]:
            bodies = [verified(p) for p in receiver.got(path)]
            return {(b["type"], b["data"]["workflow_id"]) for b in bodies}

        wanted = {
            ("workflow.started", streamed),
            ("workflow.finished", streamed),
            ("stream.closed", streamed),
            ("workflow.started", messaged),
            ("event.set", messaged),
            ("message.received", messaged),
            ("workflow.finished", messaged),
        }
        wait_until(lambda: wanted <= seen(), what=f"all event types; got {seen()}")
    message = next(
        verified(p) for p in receiver.got(path) if verified(p)["type"] == "message.received"
    )
    assert message["data"]["message"] == {"approved": True}, message


def test_a_receiver_that_never_answers_is_bounded_and_blocks_no_other(
    server: Server, receiver: Receiver
) -> None:
    """While one receiver holds every request open, another gets its POST; the held
    attempts end as timeouts, and the delivery fails after the bounded number of attempts."""
    held, healthy = f"/{unique_id('hang')}", f"/{unique_id('ok')}"
    receiver.scripts[held] = ["hang"]
    prefix = unique_id("hang-wf")
    with server.client() as http:
        held_id = register(
            http, receiver.url(held), ["workflow.started"], workflow_id_prefix=prefix
        )
        register(http, receiver.url(healthy), ["workflow.started"], workflow_id_prefix=prefix)
        start(http, "events", f"{prefix}-1")
        wait_until(lambda: receiver.got(held), what="the held receiver's first POST")
        wait_until(lambda: receiver.got(healthy), what="the healthy receiver's POST")
        assert not receiver.release.is_set()

        def failed() -> dict[str, Any] | None:
            found = deliveries(http, held_id)
            return found[0] if found and found[0]["outcome"] == "failed" else None

        delivery = wait_until(failed, timeout=60, what="the held delivery to fail")
    assert [a["result"] for a in delivery["attempts"]] == ["timeout"] * 3, delivery
    assert len(receiver.got(held)) == 3, receiver.got(held)


def test_filters_and_tenants(server: Server, receiver: Receiver) -> None:
    """A tenant's webhook gets its own tenant's workflows only, under their own IDs, filtered
    by ID prefix, kind and event type; other tenants cannot see or touch it."""
    acme_path, beta_path = f"/{unique_id('acme')}", f"/{unique_id('beta')}"
    prefix = unique_id("flt")
    with server.client(ACME_KEY) as acme, server.client(BETA_KEY) as beta:
        acme_hook = register(
            acme,
            receiver.url(acme_path),
            ["workflow.started"],
            workflow_id_prefix=prefix,
            kind="events",
        )
        beta_hook = register(beta, receiver.url(beta_path), ["workflow.started"])
        start(acme, "events", f"{prefix}-match")
        start(acme, "messaging", f"{prefix}-other-kind")
        start(acme, "events", f"not-{prefix}")
        start(beta, "events", f"{prefix}-match")  # the same ID, in another tenant
        start(acme, "events", f"{prefix}-last")
        # Deliveries are started in the order the workflows were created: once the last
        # one's is there, every earlier one's would be.
        wait_until(
            lambda: any(d["workflow_id"] == f"{prefix}-last" for d in deliveries(acme, acme_hook)),
            what="the last delivery",
        )
        found = deliveries(acme, acme_hook)
        assert sorted(d["workflow_id"] for d in found) == [
            f"{prefix}-last",
            f"{prefix}-match",
        ], found
        assert {d["event"] for d in found} == {"workflow.started"}, found
        wait_until(lambda: deliveries(beta, beta_hook), what="beta's delivery")
        assert [d["workflow_id"] for d in deliveries(beta, beta_hook)] == [f"{prefix}-match"]

        assert beta.get(f"/webhooks/{acme_hook}/deliveries").status_code == 404
        assert beta.delete(f"/webhooks/{acme_hook}").status_code == 404
        assert acme_hook not in [w["id"] for w in beta.get("/webhooks").json()["data"]]
        assert acme_hook in [w["id"] for w in acme.get("/webhooks").json()["data"]]
        deleted = acme.delete(f"/webhooks/{acme_hook}")
        assert deleted.status_code == 204, deleted.text
        assert acme.get(f"/webhooks/{acme_hook}/deliveries").status_code == 404
    with server.client(READ_KEY) as reader:
        refused = reader.post("/webhooks", json={"url": receiver.url("/x"), "events": ALL_EVENTS})
        assert refused.status_code == 403, refused.text
        assert reader.get("/webhooks").status_code == 200


def test_a_crash_between_attempts_still_delivers(server: Server, receiver: Receiver) -> None:
    """SIGKILL while a delivery waits to retry; after a restart the retry comes, with the
    same webhook-id, and the delivery ends delivered. A workflow started just before the
    kill (its delivery perhaps not started yet) is delivered too."""
    path, late_path = f"/{unique_id('crash')}", f"/{unique_id('late')}"
    receiver.scripts[path] = [503, 204]
    workflow_id, late_id = unique_id("crash-wf"), unique_id("late-wf")
    with server.client() as http:
        webhook_id = register(
            http, receiver.url(path), ["workflow.started"], workflow_id_prefix=workflow_id
        )
        register(http, receiver.url(late_path), ["workflow.started"], workflow_id_prefix=late_id)
        start(http, "events", workflow_id)

        def retrying() -> bool:
            found = deliveries(http, webhook_id)
            return bool(found) and found[0]["outcome"] == "retrying"

        wait_until(retrying, what="the first attempt recorded, the retry waiting")
        start(http, "events", late_id)
    assert server.process is not None
    server.process.kill()
    assert len(receiver.got(path)) == 1, "the retry came before the kill"
    server.start()
    posts = wait_until(lambda: receiver.at_least(path, 2), timeout=60, what="the retry")
    assert len(posts) == 2, [p.headers for p in posts]
    assert posts[0].headers["webhook-id"] == posts[1].headers["webhook-id"]
    assert verified(posts[1])["data"]["workflow_id"] == workflow_id
    late = wait_until(lambda: receiver.got(late_path), timeout=60, what="the late event")
    assert verified(late[0])["data"]["workflow_id"] == late_id, late
    with server.client() as http:
        wait_until(
            lambda: deliveries(http, webhook_id)[0]["outcome"] == "delivered",
            what="the delivery recorded as delivered after the restart",
        )


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Defaults but for the secret and a bound of 2 webhooks: private targets refused."""
    env = {"COMM_WEBHOOK_SECRET": SECRET, "COMM_WEBHOOK_MAX_PER_TENANT": "2"}
    with ServerProcess(None, env=env, workdir=tmp_path_factory.mktemp("strict")) as process:
        yield process


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.216.34/hook",
        "http://user:secret@93.184.216.34/hook",
        "http:///no-host",
        "not a url",
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://93.184.216.34:99999/hook",
    ],
)
def test_bad_target_urls_are_refused_with_422(strict_server: ServerProcess, url: str) -> None:
    """Non-http(s) schemes, credentials, no host, and private, loopback or link-local
    addresses answer 422 with a field error on body.url."""
    with strict_server.client() as http:
        response = http.post("/webhooks", json={"url": url, "events": ["workflow.started"]})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "url"], response.text


def test_bounds_on_events_filters_and_count(strict_server: ServerProcess) -> None:
    """Unknown events, an empty list, unknown filter fields and kinds answer 422; past the
    per-tenant bound, 409; without a secret the routes do not exist (checked elsewhere)."""
    public = "https://93.184.216.34/hook"
    with strict_server.client() as http:
        for body in (
            {"url": public, "events": []},
            {"url": public, "events": ["workflow.exploded"]},
            {"url": public, "events": ["event.set"], "filter": {"kind": "nope"}},
            {"url": public, "events": ["event.set"], "filter": {"colour": "red"}},
            {"url": public, "events": ["event.set"], "filter": {"workflow_id_prefix": "x" * 129}},
            {"url": public * 200, "events": ["event.set"]},
        ):
            response = http.post("/webhooks", json=body)
            assert response.status_code == 422, f"{body}: {response.text}"
        for _ in range(2):
            assert (
                http.post("/webhooks", json={"url": public, "events": ["event.set"]}).status_code
                == 201
            )
        over = http.post("/webhooks", json={"url": public, "events": ["event.set"]})
        assert over.status_code == 409, over.text
        assert "at most 2" in over.json()["detail"].lower(), over.text
        assert http.get("/webhooks/wh_0000000000000000/deliveries").status_code == 404
        assert http.get("/webhooks/nope/deliveries").status_code == 422


def test_webhooks_are_off_without_a_secret() -> None:
    """Without COMM_WEBHOOK_SECRET the routes answer 404 and say how to turn them on (the
    app in this process, without its lifespan: nothing of webhooks is started)."""
    import asyncio

    from workflow_comm.app import create_app
    from workflow_comm.settings import Settings

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(create_app(Settings(webhook_secret=None)))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            return await http.get("/webhooks")

    response = asyncio.run(get())
    assert response.status_code == 404, response.text
    assert "COMM_WEBHOOK_SECRET" in response.json()["detail"], response.text


def test_the_signature_is_standard_webhooks() -> None:
    """What a receiver checks by hand (HMAC-SHA256 of id.timestamp.body, base64, v1,)
    matches what the library signs with."""
    import base64
    import hashlib
    import hmac
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    body = json.dumps({"type": "workflow.started"})
    signature = Verifier(SECRET).sign("msg_1", now, body)
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"msg_1.{int(now.timestamp())}.{body}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert signature == f"v1,{expected}", signature


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://93.184.216.34/hook", True),
        ("http://[2606:4700::1111]:8080/hook", True),
        ("http://127.0.0.1/hook", False),
        ("http://[::ffff:10.0.0.1]/hook", False),
        ("http://100.64.0.1/hook", False),
        ("http://224.0.0.1/hook", False),
        ("http://localhost/hook", False),
    ],
)
def test_each_attempt_checks_the_address_it_connects_to(url: str, allowed: bool) -> None:
    """resolve(), which every attempt calls before it connects, refuses what registration
    refuses (so a name that now resolves to a private address fails the attempt), and
    connects to the address it checked."""
    import asyncio

    from workflow_comm.webhooks.targets import TargetRefused, resolve

    if not allowed:
        with pytest.raises(TargetRefused):
            asyncio.run(resolve(url, allow_private=False))
        assert asyncio.run(resolve(url, allow_private=True)).url == url
        return
    target = asyncio.run(resolve(url, allow_private=False))
    assert target.url == url, target  # an IP literal: connected to as it is
