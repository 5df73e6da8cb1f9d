"""Server settings, read once from the environment (and an optional `.env` file)."""

import socket
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflow_comm import __version__
from workflow_comm.keys import MESSAGE_MAX_BYTES_DEFAULT

APP_NAME = "dbos-workflow-communication"
# DBOS's own default for an app of this name; dbos-config.yaml resolves to the same file.
DEFAULT_SQLITE_URL = "sqlite:///dbos_workflow_communication.sqlite"


class Settings(BaseSettings):
    """Every setting is an environment variable prefixed `COMM_`, except the database URL."""

    model_config = SettingsConfigDict(env_prefix="COMM_", env_file=".env", extra="ignore")

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
    def resolved_executor_id(self) -> str:
        """The configured executor ID, else one per host and port (stable across restarts)."""
        return self.executor_id or f"{socket.gethostname()}-{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
