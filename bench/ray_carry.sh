#!/usr/bin/env bash
# Ray for the device machine (issue 20): its image has no Ray, nothing can be installed there, and the
# working tree that travels is limited to 64 MiB, under the 79 MB Ray wheel. This packs Ray (less its
# Java jar and the dashboard's web page) and the one dependency the image lacks (jsonschema, with its
# own) into .whl/ray-slim.tar.xz (~27 MB), for CPython 3.12 on x86_64 Linux, the image's.
#   bash bench/ray_carry.sh [RAY_VERSION]          # default: the version installed here
# On the device (carry [".whl"]):
#   mkdir -p /tmp/site && tar -xJf .whl/ray-slim.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD/src
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
version=${1:-$("$py" -c 'import ray; print(ray.__version__)')}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$tmp/wheels" "ray==$version" jsonschema jsonschema-specifications referencing rpds-py
mkdir -p "$tmp/site" .whl
for w in "$tmp"/wheels/*.whl; do "$py" -m zipfile -e "$w" "$tmp/site"; done
rm -rf "$tmp/site/ray/jars" "$tmp/site/ray/dashboard/client/build"
chmod +x "$tmp"/site/ray/core/src/ray/raylet/raylet "$tmp"/site/ray/core/src/ray/gcs/gcs_server
tar -C "$tmp/site" -cf - . | xz -T0 -9 > .whl/ray-slim.tar.xz
echo ".whl/ray-slim.tar.xz: ray $version, $(du -h .whl/ray-slim.tar.xz | cut -f1)"
