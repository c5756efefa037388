#!/usr/bin/env bash
# Set everything up on a fresh machine and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The report's browser test (tests/test_show_report.py) opens the report in headless Chromium:
# install Chromium and its driver (Debian packages) when they are missing, in CI or as root.
if ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } \
    && { [ -n "${CI:-}" ] || [ "$(id -u)" = 0 ]; } && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/dev/null \
    || echo "scripts/test.sh: could not install chromium and chromium-driver (the browser test will say so)" >&2
fi
exec .venv/bin/python -m pytest -q "$@"
