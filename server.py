"""Run the DBOS workflow communication server.

    python server.py                      # http://0.0.0.0:8000, SQLite file in this folder
    python server.py --host 127.0.0.1 --port 9000
    python server.py --workers 4          # 4 processes on the port (Postgres only)
    uvicorn server:app                    # the same app under uvicorn's own CLI

Set DBOS_SYSTEM_DATABASE_URL=postgresql://... to use Postgres (LISTEN/NOTIFY) instead.
"""

import argparse
import asyncio
import logging
import socket
import sys
import time
from types import FrameType
from typing import Literal

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from workflow_comm.app import create_app
from workflow_comm.logs import configure_logging
from workflow_comm.settings import Settings
from workflow_comm.workers import (
    Supervisor,
    check_port_free,
    end_by_signal,
    listening_socket,
    worker_index,
)

logger = logging.getLogger("workflow_comm")
# At shutdown, how long live connections get to close themselves before uvicorn closes them.
LIVE_GOODBYE_SEC = 2.0


class Server(uvicorn.Server):
    """uvicorn, but open live connections are told to go at the first signal.

    uvicorn waits for open responses before it runs the app's shutdown; SSE and WebSocket
    connections never end by themselves, so the live hub must end them first.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        hub = getattr(self.app.state, "live_hub", None)
        if hub is not None:
            hub.shutdown_threadsafe()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # The live handlers, told to go, end their connections in their own words (a
        # `shutdown` event; WebSocket close 1001): give them that before uvicorn closes what
        # is left (a WebSocket with 1012).
        hub = getattr(self.app.state, "live_hub", None)
        deadline = time.monotonic() + LIVE_GOODBYE_SEC
        while hub is not None and hub.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await super().shutdown(sockets)


class BoundedWriteBufferProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with each connection's write buffer bounded to `high_water`
    bytes instead of asyncio's 64 KiB."""

    high_water = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=self.high_water)


def http_protocol(settings: Settings) -> type[asyncio.Protocol] | Literal["auto"]:
    """With COMM_SOCKET_SEND_BUFFER, the server's own write buffer per connection is bounded
    to the same size, so a client that stops reading is noticed after about twice that."""
    if not settings.socket_send_buffer:
        return "auto"
    return type(
        "BoundedWriteBuffer",
        (BoundedWriteBufferProtocol,),
        {"high_water": settings.socket_send_buffer},
    )


def serve(settings: Settings, *, shared_port: bool = False) -> None:
    """Serve the app in this process. `shared_port`: as one of several workers, on a socket
    of its own that shares the port with the others (workflow_comm/workers.py)."""
    application = create_app(settings)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        http=http_protocol(settings),
        # Frames over the message bound but under this cap get an `error` frame and the socket
        # stays usable; past it the transport closes with 1009 without reading the frame.
        ws_max_size=settings.ws_max_frame_bytes,
    )
    # uvicorn set up its loggers just now; format them before its first startup line.
    configure_logging(settings)
    if shared_port:
        try:
            listener = listening_socket(settings.host, settings.port)
        except OSError as error:
            logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, error)
            sys.exit(STARTUP_FAILURE)
    else:
        listener = config.bind_socket()
    if settings.socket_send_buffer:
        # Set before listen(): accepted connections inherit it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_send_buffer)
    Server(config, application).run(sockets=[listener])


def supervise(settings: Settings) -> None:
    """Serve with settings.worker_count processes, each this process's command line again
    (so the same settings) with its index in COMM_WORKER_INDEX."""
    configure_logging(settings)
    try:
        check_port_free(settings.host, settings.port)
    except OSError as error:
        logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, error)
        sys.exit(STARTUP_FAILURE)
    count = settings.worker_count
    logger.info(
        "%d workers on http://%s:%d, executors %s to %s",
        count,
        settings.host,
        settings.port,
        settings.worker_executor_id(0),
        settings.worker_executor_id(count - 1),
    )
    command = [sys.executable, *sys.orig_argv[1:]]
    supervisor = Supervisor(command, count, name=settings.worker_executor_id)
    end_by_signal(supervisor.run())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", help="address to listen on (COMM_HOST; default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (COMM_PORT; default 8000)")
    parser.add_argument(
        "--workers",
        help="processes serving the port, a number or auto for one per core "
        "(COMM_WORKERS; default 1; more than 1 needs Postgres)",
    )
    args = parser.parse_args()
    # Given arguments win over the environment; the default executor ID follows the port.
    given = {name: value for name, value in vars(args).items() if value is not None}
    settings = Settings(**given)
    index = worker_index()  # set by the supervisor for the workers it starts
    if index is not None:
        serve(settings.for_worker(index), shared_port=True)
    elif settings.worker_count == 1:
        serve(settings)
    elif settings.is_sqlite:
        parser.error(
            f"{settings.worker_count} workers need Postgres, and the database is SQLite, "
            "which serves one process: set DBOS_SYSTEM_DATABASE_URL to a postgresql:// URL, "
            "or run one worker (--workers 1)"
        )
    else:
        supervise(settings)


app = create_app() if __name__ != "__main__" else None

if __name__ == "__main__":
    main()
