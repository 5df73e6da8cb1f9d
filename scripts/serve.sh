#!/usr/bin/env bash
# Set up (first run only) and start the server: scripts/serve.sh [--host H] [--port P]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python server.py "$@"
