"""Fixtures: a live Postgres, live server processes on it (and on SQLite), or --base-url.

With no DBOS_SYSTEM_DATABASE_URL, a throwaway Postgres is started from a pip wheel, so a
fresh machine needs nothing but Python. Tests marked `both_backends` also run against a
server on the SQLite default.
"""

from collections.abc import Iterator

import httpx
import pytest

from tests.support import TOKEN_SECRET, WEBHOOK_SECRET, OwnServer, ServerProcess, ThrowawayPostgres

BACKENDS = ("postgres", "sqlite")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--base-url",
        default=None,
        help="Test a server someone already started (e.g. http://localhost:8000) instead of "
        "starting one. Tests that kill and restart servers are skipped.",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        external = metafunc.config.getoption("--base-url")
        both = metafunc.definition.get_closest_marker("both_backends") is not None
        backends = ["external"] if external else list(BACKENDS if both else BACKENDS[:1])
        metafunc.parametrize("backend", backends, scope="session")


# The modules that take longest (about 40-110 s each on 2 cores), longest first. Run ahead
# of the rest (scripts/test.sh passes --no-loadscope-reorder, so pytest-xdist hands out
# modules in this order), the many short modules then fill the gaps and both processes end
# together; by default xdist would order by test count and leave a one-test 70 s module last.
LONGEST_MODULES = (
    "tests/test_multi_instance.py",
    "tests/test_mailbox_requests.py",
    "tests/test_workers.py",
    "tests/test_live_shared.py",
    "tests/test_bench_smoke.py",
    "tests/test_client.py",
    "tests/test_live.py",
    "test_communication.py",
    "tests/test_webhooks.py",
    "tests/test_gateway.py",
    "tests/test_browser.py",
    "tests/test_db_outage.py",
    "tests/test_docs.py",
    "tests/test_js_client.py",
    "tests/test_recovery.py",
    "tests/test_crash_campaign.py",
)


def _module_rank(item: pytest.Item) -> int:
    module = item.nodeid.split("::", 1)[0]
    try:
        return LONGEST_MODULES.index(module)
    except ValueError:
        return len(LONGEST_MODULES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_module_rank)  # stable: within a module, and among the rest, as collected
    if config.getoption("--base-url"):
        skip = pytest.mark.skip(reason="starts its own servers; not with --base-url")
        for item in items:
            if item.get_closest_marker("needs_own_server"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres | None]:
    """The throwaway Postgres, or None when DBOS_SYSTEM_DATABASE_URL names one."""
    import os

    if os.environ.get("DBOS_SYSTEM_DATABASE_URL"):
        yield None
        return
    server = ThrowawayPostgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: ThrowawayPostgres | None) -> str:
    import os

    return postgres.url if postgres else os.environ["DBOS_SYSTEM_DATABASE_URL"]


# The shared servers run with default settings but for a token secret (tokens are off
# without one), so POST /tokens works for the documents' example and the fuzzer, and a
# webhook secret with local targets allowed, for the documents' webhook examples.
SHARED_SERVER_ENV = {
    "COMM_TOKEN_SECRET": TOKEN_SECRET,
    "COMM_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "COMM_WEBHOOK_ALLOW_PRIVATE": "true",
    # Few webhooks and attempts: what a fuzzer registers cannot load the shared servers.
    "COMM_WEBHOOK_MAX_PER_TENANT": "5",
    "COMM_WEBHOOK_MAX_ATTEMPTS": "2",
}


@pytest.fixture(scope="session")
def postgres_server(postgres_url: str) -> Iterator[ServerProcess]:
    with ServerProcess(postgres_url, env=SHARED_SERVER_ENV) as server:
        yield server


@pytest.fixture(scope="session")
def sqlite_server() -> Iterator[ServerProcess]:
    """The zero-setup default: no database URL, an SQLite file in the server's folder."""
    with ServerProcess(None, env=SHARED_SERVER_ENV) as server:
        yield server


@pytest.fixture(scope="session")
def base_url(request: pytest.FixtureRequest, backend: str) -> str:
    """The server under test."""
    if backend == "external":
        url: str = request.config.getoption("--base-url")
        return url.rstrip("/")
    server: ServerProcess = request.getfixturevalue(f"{backend}_server")
    return server.base_url


@pytest.fixture(scope="module")
def own_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OwnServer]:
    """Start a server of the module's own: `own_server(env={...})` on the shared Postgres,
    `own_server(backend="sqlite")` on the SQLite default, each in a folder of its own.

    It returns the started ServerProcess; every server it started is stopped when the module
    ends.
    """
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, *, backend: str = "postgres") -> ServerProcess:
        assert backend in BACKENDS, backend
        # Postgres only when asked for: a module of SQLite servers starts none.
        database_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
        server = ServerProcess(
            database_url,
            env=env,
            workdir=tmp_path_factory.mktemp(f"own-{backend}-server"),
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the module's own `server`, a fixture the module defines (with own_server)."""
    with server.client() as client:
        yield client


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        yield http
