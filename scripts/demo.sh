#!/usr/bin/env bash
# Set everything up on a fresh machine and run qidlab's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh measure
exec .venv/bin/qidlab demo "$@"
