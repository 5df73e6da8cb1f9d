#!/usr/bin/env bash
# Set up (first run only), lint, type-check and run the test suite: scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,bench  # bench: its smoke test runs too
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# Two processes (COMM_TEST_PROCESSES to change), each taking whole modules, whose servers
# and fixtures stay together; each has its own throwaway Postgres and block of ports. On a
# database given in DBOS_SYSTEM_DATABASE_URL, one: servers of two processes on one database
# would take over each other's workflows.
if [ -n "${DBOS_SYSTEM_DATABASE_URL:-}" ]; then default_processes=1; else default_processes=2; fi
# Modules are handed out longest first (conftest.py's LONGEST_MODULES), not by test count.
exec .venv/bin/pytest -n "${COMM_TEST_PROCESSES:-$default_processes}" --dist loadfile \
  --no-loadscope-reorder "$@"
