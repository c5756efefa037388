#!/usr/bin/env bash
# A CPU dry run of a GPU plan's own files, scaled down (docs/campaign-plan.md, "Campaign 2",
# "Session 1"): copies each suite and study of PLAN into DIR with 64 updates of 4 x 64 tokens,
# branches from step 8 (LAWA span 0.25), an lr sweep of 6 updates, 6 documents per eval set,
# 4 calibration samples of 64 tokens, max_length 64, 20 bootstrap replicates, and absolute paths;
# sizes, schedule, branch and average counts, methods, eval sets and unit stay as written. Then runs
# campaign/job.sh on the copies (CPU, no compile; LR_SWEEP=1 when a suite of the plan has an lr_sweep
# table, else 0 as on the GPU, e.g. campaign2-seeds-s1.plan; the env's LR_SWEEP wins). Works for
# suites written like campaign2-en-s1-suite.toml (the sed patterns match its lines).
#
#   bash campaign/scaled-dryrun.sh campaign/campaign2-s1.plan /tmp/c2dry    # ~7 min on one busy core
set -euo pipefail
plan=${1:?usage: scaled-dryrun.sh PLAN DIR}; dir=${2:?usage: scaled-dryrun.sh PLAN DIR}
camp=$PWD/campaign
mkdir -p "$dir"; : > "$dir/plan"
grep -v '^\s*\(#\|$\)' "$plan" | while read -r suite study models; do
    s=$dir/$(basename "$suite"); t=$dir/$(basename "$study")
    sed -e "s#\"inputs/#\"$camp/inputs/#; s#\"tokenizers/#\"$camp/tokenizers/#" \
        -e 's/^seq_len = [0-9]*/seq_len = 64/; s/^batch_size = [0-9]*/batch_size = 4/' \
        -e 's/^steps = [0-9]*.*/steps = 64/; s/^warmup = [0-9]*/warmup = 4/' \
        -e 's/log_spaced_until = [0-9]*/log_spaced_until = 64/' \
        -e 's/lr_sweep = { factors = \(\[[^]]*\]\) }/lr_sweep = { factors = \1, steps = 6, eval_batches = 2 }/' \
        -e 's/first = [0-9]*/first = 8/; s/average_span = [0-9.]*/average_span = 0.25/' "$suite" > "$s"
    sed -e "s#\"inputs/#\"$camp/inputs/#; s#\"work/#\"$dir/work/#" \
        -e 's/^n_docs = [0-9]*/n_docs = 6/; s/^n_samples = [0-9]*/n_samples = 4/; s/^seq_len = [0-9]*/seq_len = 64/' \
        -e 's/^bootstrap = [0-9]*/bootstrap = 20/; s/^max_length = [0-9]*/max_length = 64/; s/^max_chars = [0-9]*/max_chars = 400/' \
        "$study" > "$t"
    echo "$s $t $models" >> "$dir/plan"
done
sweep=0; grep -q '^lr_sweep = ' $(awk '{print $1}' "$dir/plan") && sweep=1
OUT=$dir/out WORK=$dir/work DEVICE=cpu COMPILE=0 THREADS=1 LR_SWEEP=${LR_SWEEP:-$sweep} DEADLINE=${DEADLINE:-1800} \
    bash campaign/job.sh "$dir/plan"
