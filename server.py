"""Run the DBOS workflow communication server.

    python server.py                      # http://0.0.0.0:8000, SQLite file in this folder
    python server.py --host 127.0.0.1 --port 9000
    uvicorn server:app                    # the same app under uvicorn's own CLI

Set DBOS_SYSTEM_DATABASE_URL=postgresql://... to use Postgres (LISTEN/NOTIFY) instead.
"""

import argparse
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from workflow_comm.app import create_app
from workflow_comm.logs import configure_logging
from workflow_comm.settings import Settings


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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", help="address to listen on (COMM_HOST; default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (COMM_PORT; default 8000)")
    args = parser.parse_args()
    # Given arguments win over the environment; the default executor ID follows the port.
    given = {name: value for name, value in vars(args).items() if value is not None}
    settings = Settings(**given)
    application = create_app(settings)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        # Frames over the message bound but under this cap get an `error` frame and the socket
        # stays usable; past it the transport closes with 1009 without reading the frame.
        ws_max_size=settings.ws_max_frame_bytes,
    )
    # uvicorn set up its loggers just now; format them before its first startup line.
    configure_logging(settings)
    listener = config.bind_socket()
    if settings.socket_send_buffer:
        # Set before listen(): accepted connections inherit it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_send_buffer)
    Server(config, application).run(sockets=[listener])


app = create_app() if __name__ != "__main__" else None

if __name__ == "__main__":
    main()
