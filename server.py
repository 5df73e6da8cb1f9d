"""Run the DBOS workflow communication server.

    python server.py                      # http://0.0.0.0:8000, SQLite file in this folder
    python server.py --host 127.0.0.1 --port 9000
    uvicorn server:app                    # the same app under uvicorn's own CLI

Set DBOS_SYSTEM_DATABASE_URL=postgresql://... to use Postgres (LISTEN/NOTIFY) instead.
"""

import argparse
import os

import uvicorn

from workflow_comm.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("COMM_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("COMM_PORT", "8000")))
    args = parser.parse_args()
    # The settings read these too: the default executor ID is derived from the port.
    os.environ["COMM_HOST"], os.environ["COMM_PORT"] = args.host, str(args.port)
    uvicorn.run(create_app(), host=args.host, port=args.port, timeout_graceful_shutdown=5)


app = create_app() if __name__ != "__main__" else None

if __name__ == "__main__":
    main()
