#!/usr/bin/env bash
# The full crash campaign: 30 random SIGKILLs of a busy server (scripts/crash_campaign.sh --kills 50).
# Starts a throwaway Postgres unless --database-url names an empty database. See tests/crash_campaign.py.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m tests.crash_campaign "$@"
