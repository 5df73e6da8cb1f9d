#!/usr/bin/env bash
# Benchmark the server: scripts/bench.sh [--quick|--full|--smoke] [--out-dir DIR] [--server-env K=V]
# Writes bench/results/<mode>.json, <mode>.md and <mode>-*.png (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bench
exec .venv/bin/python -m bench "$@"
