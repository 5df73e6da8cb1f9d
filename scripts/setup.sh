#!/usr/bin/env bash
# Create .venv (once) and install the pinned dependencies (again only when pyproject.toml changes).
# Usage: scripts/setup.sh [extra]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extra:-base}"
if [ ! -f "$stamp" ]; then
  spec="."
  [ -n "$extra" ] && spec=".[$extra]"
  .venv/bin/python -m pip install --quiet -e "$spec"
  touch "$stamp"
fi
