#!/usr/bin/env bash
# The full fuzz run: schemathesis sends >= 1,000 generated requests to a live server and fails
# on any 5xx or any answer the OpenAPI schema does not describe (tests/test_fuzz.py).
# Usage: scripts/fuzz.sh [pytest args]    e.g. FUZZ_EXAMPLES=200 scripts/fuzz.sh -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
export FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-50}" FUZZ_MIN_CASES="${FUZZ_MIN_CASES:-1000}"
exec .venv/bin/pytest tests/test_fuzz.py -q -p no:cacheprovider "$@"
