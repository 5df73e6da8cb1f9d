#!/usr/bin/env bash
# Create .venv (once) and install the pinned dependencies, again only when pyproject.toml
# changes or an extra is asked for that is not installed yet.
# Usage: scripts/setup.sh [extra[,extra...]]   e.g. scripts/setup.sh test,bench
# An environment set up with more extras serves for fewer: after `scripts/setup.sh test,bench`,
# `scripts/setup.sh` and `scripts/setup.sh bench` install nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# The stamp of this pyproject.toml lists the extras installed with it, one per line.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
wanted="$(tr ',' '\n' <<<"${1:-}" | sed '/^$/d' | sort -u)"
have=""
[ -f "$stamp" ] && have="$(sed '/^$/d' "$stamp" | sort -u)"
missing="$(comm -23 <(printf '%s\n' "$wanted" | sed '/^$/d') <(printf '%s\n' "$have" | sed '/^$/d'))"
if [ ! -f "$stamp" ] || [ -n "$missing" ]; then
  # Everything installed so far plus what is wanted, so the stamp stays true.
  all="$(printf '%s\n%s\n' "$have" "$wanted" | sed '/^$/d' | sort -u)"
  spec="."
  [ -n "$all" ] && spec=".[$(paste -sd, <<<"$all")]"
  .venv/bin/python -m pip install --quiet -e "$spec"
  rm -f .venv/.installed-*
  printf '%s\n' "$all" >"$stamp"
fi
