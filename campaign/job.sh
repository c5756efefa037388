#!/usr/bin/env bash
# One GPU job of the campaign (docs/campaign-plan.md): train some models of a suite and measure
# their checkpoints, in one command, and leave only the store in $OUT (checkpoints never travel).
#
#   bash campaign/job.sh SUITE.toml STUDY.toml MODEL [MODEL ...]
#
# Runs from the repository root with this tree's qidlab (PYTHONPATH=src: the GPU machine has its
# own torch and transformers). Env: OUT (default ./out), WORK (default campaign/work, which the study files name as their checkpoint root),
# DEVICE (default cuda), COMPILE (default 1).
set -euo pipefail
suite=$1; study=$2; shift 2
[ "$#" -ge 1 ] || { echo "job.sh: name at least one model" >&2; exit 2; }
out=${OUT:-out}; work=${WORK:-campaign/work}
mkdir -p "$out" "$work"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
qidlab() { python -m qidlab "$@"; }
name=$(IFS=-; echo "$*")
compile=(); [ "${COMPILE:-1}" = 1 ] && compile=(--compile)
start=$(date +%s)
qidlab train "$suite" --out "$work/suites" --device "${DEVICE:-cuda}" "${compile[@]}" --models "$@" \
    --json > "$out/train-$name.json"
trained=$(( $(date +%s) - start ))
qidlab sweep "$study" --models "$@" --store "$work/job-$name.db" --quiet --json > "$out/sweep-$name.json"
cp "$work/job-$name.db" "$out/job-$name.db"
echo "job $name: trained in ${trained}s, measured in $(( $(date +%s) - start - trained ))s -> $out/job-$name.db"
