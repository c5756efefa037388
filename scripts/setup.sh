#!/usr/bin/env bash
# Create .venv (if needed) and install qidlab with the given extras, torch pinned to the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extras:+[$extras]}"
