"""Server settings: read from the environment (and an optional `.env` file) by `Settings()`.

One `Settings` object per app: `create_app(settings)` keeps it on `app.state.settings`; routes
take it as a `SettingsDep` parameter, the lifespan and installers from `app.state`.
"""

import base64
import os
import re
import socket
from typing import Annotated, Literal

from fastapi import Depends
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.requests import HTTPConnection

from workflow_comm import __version__
from workflow_comm.names import MESSAGE_MAX_BYTES_DEFAULT

APP_NAME = "dbos-workflow-communication"
# DBOS's own default for an app of this name; dbos-config.yaml resolves to the same file.
DEFAULT_SQLITE_URL = "sqlite:///dbos_workflow_communication.sqlite"

# A DBOS application name, as COMM_SERVE_APPS lists it.
APP_NAME_PATTERN = r"[A-Za-z0-9._\-]{1,128}"
# An API key: what `openssl rand -hex 32` or `secrets.token_urlsafe(32)` print.
API_KEY_PATTERN = r"[A-Za-z0-9_\-.~+/=]{16,256}"
# Letters, digits and _ only: the tenant prefix of a stored workflow ID ends at its first "--".
TENANT_PATTERN = r"[A-Za-z0-9_]{1,32}"
# The shortest token signing secret: HS256's own key size, what `openssl rand -hex 32` prints.
TOKEN_SECRET_MIN_BYTES = 32
# The WebSocket transport reads frames of up to this many times max_message_bytes, so a frame
# a little or a lot over the message bound still gets an `error` frame; past it, close 1009.
WS_FRAME_CAP_FACTOR = 4
# The most worker processes `python server.py --workers N` takes as a number ("auto" is not capped).
WORKERS_MAX = 256


class ApiKey(BaseModel, frozen=True):
    secret: SecretStr  # never shown by repr() or in logs
    role: Literal["read", "write"]
    tenant: str | None = None


def parse_api_keys(text: str) -> tuple[ApiKey, ...]:
    """`key:role[:tenant]` items, comma-separated, e.g. "k1:write,k2:read,k3:write:acme"."""
    keys: list[ApiKey] = []
    for number, item in enumerate((i.strip() for i in text.split(",") if i.strip()), 1):
        secret, _, rest = item.partition(":")
        role, _, tenant = rest.partition(":")
        # The key itself is never put in an error message: it may end up in a log.
        where = f"COMM_API_KEYS item {number}"
        if not re.fullmatch(API_KEY_PATTERN, secret):
            raise ValueError(f"{where}: a key must be 16-256 letters, digits or _-.~+/=")
        if role not in ("read", "write"):
            raise ValueError(f"{where}: the role must be read or write, as in key:write")
        if tenant and not re.fullmatch(TENANT_PATTERN, tenant):
            raise ValueError(f"{where}: a tenant must be 1-32 letters, digits or _")
        fields = {"secret": secret, "role": role, "tenant": tenant or None}
        keys.append(ApiKey.model_validate(fields))
    if len({k.secret.get_secret_value() for k in keys}) != len(keys):
        raise ValueError("COMM_API_KEYS: the same key is listed twice")
    return tuple(keys)


class Settings(BaseSettings):
    """Every setting is an environment variable prefixed `COMM_`, except the database URL."""

    # Errors never echo a value: it may be an API key or a database password.
    model_config = SettingsConfigDict(
        env_prefix="COMM_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
        # Settings(system_database_url=...) in code, as well as the variables' names.
        populate_by_name=True,
    )

    # The variable the dbos CLI reads too, so server and CLI see the same database.
    system_database_url: str = Field(
        default=DEFAULT_SQLITE_URL,
        validation_alias=AliasChoices("DBOS_SYSTEM_DATABASE_URL", "COMM_SYSTEM_DATABASE_URL"),
    )
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    # Stable across restarts so a restarted server recovers its own PENDING workflows.
    # Two processes must never share one: each would resume the other's running workflows.
    executor_id: str = ""
    # Pinned: DBOS otherwise hashes the code, and any code change orphans pending workflows.
    application_version: str = __version__
    max_executor_threads: int = Field(default=64, ge=4, le=1024)
    sys_db_pool_size: int = Field(default=20, ge=2, le=500)
    # SQLite has no LISTEN/NOTIFY: DBOS polls, once a second by default. 10 ms keeps
    # messages, events and streams waking within tens of milliseconds.
    sqlite_polling_interval_sec: float = Field(default=0.01, ge=0.001, le=5.0)
    # Postgres: how long DBOS coalesces NOTIFYs for events and streams (DBOS default 10 ms).
    notification_coalesce_sec: float = Field(default=0.001, ge=0.001, le=1.0)
    max_message_bytes: int = Field(default=MESSAGE_MAX_BYTES_DEFAULT, ge=64, le=16 * 1024 * 1024)
    # How long a request waits on the database before answering 503.
    db_timeout_sec: float = Field(default=10.0, gt=0, le=120)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Processes `python server.py` serves the port with (workflow_comm/workers.py): a number,
    # or "auto" for one per core. More than 1 needs Postgres. Worker i is executor
    # f"{resolved_executor_id}-w{i}", the same after each restart.
    workers: int | Literal["auto"] = 1

    # Live push (SSE and WebSocket).
    # Connections beyond this get a 503 (SSE) or close code 1013 (WebSocket).
    max_live_connections: int = Field(default=2000, ge=1, le=100_000)
    # Items queued for one subscriber; one that falls this far behind is told where to
    # resume and disconnected, so a slow reader never grows the server's memory.
    live_buffer: int = Field(default=1000, ge=10, le=100_000)
    # Stream values kept per live stream, so late joiners catch up without a database read.
    live_replay_buffer: int = Field(default=1000, ge=0, le=100_000)
    # A comment line this often on an idle SSE connection keeps proxies from closing it.
    sse_heartbeat_sec: float = Field(default=15.0, ge=0.1, le=300)
    # How often a watched workflow's status is read (its completion sends no notification).
    live_status_poll_sec: float = Field(default=0.25, ge=0.01, le=10)
    # How often a watched workflow's events are read without a notification: the only
    # trigger on SQLite; on Postgres a fallback, since LISTEN/NOTIFY wakes readers at once.
    live_events_poll_sec: float = Field(default=0.05, ge=0.005, le=10)
    # Kernel send buffer per connection, in bytes, and the server's own write buffer per
    # HTTP connection (asyncio's 64 KiB otherwise); 0 keeps the OS's autotuning (up to a
    # few MB). A client that stops reading is noticed (and a live one cut off with
    # `overflow`) only once these buffers and COMM_LIVE_BUFFER items are full.
    socket_send_buffer: int = Field(default=0, ge=0, le=64 * 1024 * 1024)

    # Takeover (Postgres only): a surviving instance finishes a dead instance's workflows.
    takeover_enabled: bool = True
    # How often each instance looks for dead executors. A death is acted on after at most
    # two intervals, and the workflows run again within about a second after that.
    takeover_interval_sec: float = Field(default=2.0, ge=0.1, le=300)
    # How long a starting instance waits for its own executor lock, held meanwhile by a
    # survivor handing its workflows over, or by a live process with the same executor ID.
    takeover_lock_wait_sec: float = Field(default=30.0, ge=0, le=600)

    # Access control (workflow_comm/auth.py). Comma-separated `key:role[:tenant]` items, role
    # `read` or `write`; e.g. "k1...:write,k2...:read,k3...:write:acme". Empty: all open.
    api_keys: Annotated[tuple[ApiKey, ...], NoDecode] = ()
    # Origins a browser may call this API from, comma-separated ("*" for any). Empty: none.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    cors_max_age_sec: int = Field(default=600, ge=0, le=86_400)
    # Tokens (workflow_comm/tokens.py): the secret that signs them, at least 32 bytes. Unset:
    # POST /tokens answers 404 and no token is accepted.
    token_secret: SecretStr | None = None
    # The secret before the last rotation: tokens it signed are still accepted until they expire.
    token_previous_secret: SecretStr | None = None
    # Concurrent GET /workflow-events/{id}/{key} requests waiting per client address; 429 past it.
    max_waits_per_client: int = Field(default=1000, ge=1, le=100_000)
    # Prometheus metrics at /metrics. With API keys set, scraping needs a key without a tenant,
    # unless metrics_public (e.g. when only the scraper's network reaches the server).
    metrics_enabled: bool = True
    metrics_public: bool = False
    # "json": one JSON object per log line, with the workflow_id of the request it concerns.
    log_format: Literal["text", "json"] = "text"

    # Gateway mode: the DBOS applications whose workflows this server serves (reads, waits,
    # watches, sends, cancel, resume), comma-separated; "*" for every application in the
    # database. Empty: only the application DBOS runs here (this server's own). Workflows of
    # other applications are never run, recovered or taken over, whatever this says.
    serve_apps: Annotated[tuple[str, ...], NoDecode] = ()
    # The demo start routes (/start-workflow-...) and the dashboard's start form.
    demo_workflows: bool = True

    # Outbound webhooks (workflow_comm/webhooks/). The Standard Webhooks signing secret,
    # `whsec_<base64 of 24-64 random bytes>`. Unset: the /webhooks routes answer 404.
    webhook_secret: SecretStr | None = None
    # Targets on private, loopback and link-local addresses (local use and tests only).
    webhook_allow_private: bool = False
    # Attempts per delivery, and the backoff between them: base * 2^(n-1) seconds, capped.
    webhook_max_attempts: int = Field(default=10, ge=1, le=50)
    webhook_retry_base_sec: float = Field(default=5.0, ge=0.01, le=3600)
    webhook_retry_max_sec: float = Field(default=3600.0, ge=0.01, le=86_400)
    # One attempt's whole time (connect, send, answer), after which it counts as failed.
    webhook_timeout_sec: float = Field(default=10.0, gt=0, le=120)
    # Deliveries running at once in this process (a DBOS queue's worker concurrency).
    webhook_concurrency: int = Field(default=16, ge=1, le=1000)
    # How often the dispatcher looks for new events in the database.
    webhook_scan_interval_sec: float = Field(default=1.0, ge=0.05, le=60)
    # Webhooks one tenant (or the operator) may register.
    webhook_max_per_tenant: int = Field(default=50, ge=1, le=10_000)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        return parse_api_keys(value) if isinstance(value, str) else value

    @field_validator("token_secret", "token_previous_secret", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("token_secret", "token_previous_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value().encode()) < TOKEN_SECRET_MIN_BYTES:
            name = f"COMM_{str(info.field_name).upper()}"
            raise ValueError(
                f"{name} must be at least {TOKEN_SECRET_MIN_BYTES} bytes: "
                "make one with `openssl rand -hex 32`"
            )
        return secret

    @model_validator(mode="after")
    def _previous_needs_current(self) -> "Settings":
        if self.token_previous_secret is not None and self.token_secret is None:
            raise ValueError(
                "COMM_TOKEN_PREVIOUS_SECRET is set but COMM_TOKEN_SECRET is not: a rotation keeps "
                "the old secret as the previous one next to a new current one"
            )
        return self

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _webhook_secret_unset_if_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_form(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        text = secret.get_secret_value()
        try:
            key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except ValueError:
            key = b""
        if not text.startswith("whsec_") or not 24 <= len(key) <= 64:
            raise ValueError(
                "COMM_WEBHOOK_SECRET must be whsec_ and the base64 of 24-64 random bytes: make "
                "one with `echo whsec_$(openssl rand -base64 32)`"
            )
        return secret

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        origins = tuple(o.strip() for o in value.split(",") if o.strip())
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s,]+", origin):
                raise ValueError(
                    f"COMM_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com"
                )
        return origins

    @field_validator("serve_apps", mode="before")
    @classmethod
    def _parse_serve_apps(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        apps = tuple(dict.fromkeys(a.strip() for a in value.split(",") if a.strip()))
        if "*" in apps and len(apps) > 1:
            raise ValueError("COMM_SERVE_APPS: * already means every application; list no others")
        for app in apps:
            if app != "*" and not re.fullmatch(APP_NAME_PATTERN, app):
                raise ValueError(
                    f"COMM_SERVE_APPS: {app!r} is not an application name "
                    "(1-128 letters, digits and . _ -)"
                )
        return apps

    @field_validator("workers", mode="before")
    @classmethod
    def _parse_workers(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().lower()
            if text == "auto":
                return text
            value = int(text) if text.isdigit() else None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= WORKERS_MAX:
            raise ValueError(f"COMM_WORKERS must be a number from 1 to {WORKERS_MAX}, or auto")
        return value

    @field_validator("system_database_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise ValueError("DBOS_SYSTEM_DATABASE_URL must be a sqlite:// or postgresql:// URL")
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.system_database_url.startswith("sqlite:")

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL for SQLAlchemy, with psycopg 3 as the Postgres driver (as DBOS)."""
        for prefix in ("postgresql://", "postgres://"):
            if self.system_database_url.startswith(prefix):
                return "postgresql+psycopg://" + self.system_database_url.removeprefix(prefix)
        return self.system_database_url

    @property
    def ws_max_frame_bytes(self) -> int:
        """The hard cap on one WebSocket frame (262144 bytes by default): the transport closes
        the socket with 1009 past it. A frame over max_message_bytes but within it gets an
        `error` frame, and the socket stays usable."""
        return WS_FRAME_CAP_FACTOR * self.max_message_bytes

    @property
    def resolved_executor_id(self) -> str:
        """The configured executor ID, else one per host and port (stable across restarts)."""
        return self.executor_id or f"{socket.gethostname()}-{self.port}"

    @property
    def worker_count(self) -> int:
        """How many worker processes `workers` asks for; "auto" is the number of cores this
        process may run on."""
        return self.workers if isinstance(self.workers, int) else usable_cores()

    def worker_executor_id(self, index: int) -> str:
        """Worker `index`'s executor ID: derived from the base ID, so stable across restarts."""
        return f"{self.resolved_executor_id}-w{index}"

    def for_worker(self, index: int) -> "Settings":
        """These settings as worker `index` runs them: with its own executor ID."""
        return self.model_copy(update={"executor_id": self.worker_executor_id(index)})


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


async def app_settings(connection: HTTPConnection) -> Settings:
    """Dependency: the settings of the app serving this request or WebSocket."""
    settings: Settings = connection.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]
