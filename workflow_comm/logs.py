"""Logging: plain text or one JSON object per line, the workflow ID on lines about one.

COMM_LOG_FORMAT=json turns every line of this server, uvicorn (including its access log)
and DBOS into a JSON object: ts, level, logger, message, and for a request that concerns a
workflow its `workflow_id` (as in the URL) and the caller's `tenant`, if any. Access lines
also carry client, method, path and status as fields.

The workflow ID comes from a context variable that `bind_workflow_id`, a dependency of
every router with {workflow_id} in its paths, sets for the request; uvicorn writes its access
line from the request's own task, so that line carries it too.

In both formats `?api_key=` and `?token=` are blanked out of uvicorn's request lines: keys
and tokens are never logged.
"""

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.requests import HTTPConnection

from workflow_comm.auth import QUERY_KEY, QUERY_TOKEN, current_caller
from workflow_comm.settings import Settings

_workflow_id: ContextVar[str | None] = ContextVar("workflow_id", default=None)
# `?api_key=` and `?token=`; "token=" ends other names too (`page_token=`): blanked alike.
_KEY_IN_QUERY = re.compile(rf"((?:{QUERY_KEY}|{QUERY_TOKEN})=)[^&\s\"]*", re.IGNORECASE)
REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s [%(levelname)8s] (%(name)s) %(message)s"
# Loggers whose lines we format: this server's, uvicorn's and DBOS's.
LOGGERS = ("workflow_comm", "uvicorn", "uvicorn.error", "uvicorn.access", "dbos")


async def bind_workflow_id(connection: HTTPConnection) -> None:
    """Router dependency: lines logged during this request name its workflow."""
    _workflow_id.set(connection.path_params.get("workflow_id"))


def bind_workflow_id_now(workflow_id: str) -> None:
    """The same, for code that is not a route dependency (the WebSocket endpoint)."""
    _workflow_id.set(workflow_id)


def redact(text: str) -> str:
    return _KEY_IN_QUERY.sub(rf"\g<1>{REDACTED}", text)


class RedactApiKey(logging.Filter):
    """Blank out `api_key=...` and `token=...` in a line's arguments (uvicorn passes the path
    as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class RequestContext(logging.Filter):
    """Put the request's workflow ID and tenant on the record, for the formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.workflow_id = _workflow_id.get()
        record.tenant = current_caller().tenant
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("workflow_id", "tenant"):
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            if len(record.args) == 5:
                client, method, path, _, status = record.args
                line.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Apply COMM_LOG_FORMAT and COMM_LOG_LEVEL: at startup, after uvicorn set up its logging
    and before DBOS sets up its own."""
    redactor = RedactApiKey()
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(redactor)
    ours = logging.getLogger("workflow_comm")
    ours.setLevel(settings.log_level)
    if not ours.handlers:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(logging.Formatter(TEXT_FORMAT))
        ours.addHandler(stderr)
        ours.propagate = False
    if settings.log_format != "json":
        return
    formatter = JsonFormatter()
    context = RequestContext()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if name == "dbos" and not logger.handlers:
            # Called before DBOS() is: DBOS adds its console handler only if there is none.
            logger.addHandler(logging.StreamHandler(sys.stderr))
            logger.propagate = False
        for handler in logger.handlers:
            handler.setFormatter(formatter)
            handler.addFilter(context)
