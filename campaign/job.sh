#!/usr/bin/env bash
# One GPU job of the campaign (docs/campaign-plan.md): train the models of a plan and measure their
# checkpoints, side by side on one machine, in one command, and leave only results in $OUT
# (checkpoints never travel back).
#
#   bash campaign/job.sh PLAN
#
# PLAN is a text file, one line per suite ('#' starts a comment):
#
#   SUITE.toml  STUDY.toml|-  MODEL [MODEL ...]
#
# Each suite's tokenizer and token file are made once first (`qidlab train --data-only`); then every
# model runs as its own pipeline, all at once: `qidlab train --models M` then, unless the study is
# '-' (train only, e.g. a BitNet model read from its training log), `qidlab sweep --models M ...` into
# the model's own store (one sweep process and store per run: the main run's and each seed run's, side by side) (M and the folders of its seed runs, cooldown branches and weight averages,
# `qidlab.train.folders_of`, when the suite asks for them: train/branches.py). Small models leave a GPU mostly idle, so side by side they share it.
# At DEADLINE seconds after the start (default 540) every pipeline still running is stopped
# (SIGTERM: a sweep keeps every measurement it committed); then the stores are merged, and $OUT
# gets what can come back from a GPU machine (at most 8 files of at most 16 MiB):
# store-measurements.db (the merged store without per-document losses: every QiD with its CI),
# store.db.gz.part-NN (the whole store of the plan's models, gzipped in 15 MB parts, when up to 4 fit:
# `cat store.db.gz.part-* | gunzip > store.db`; ~13 MB gzipped per 1,000 measurements of
# ~1,150 documents), suites.tar.gz (the suites' small files: train-log.csv,
# weight-dynamics.json, train-stats.json, manifests) and logs.tar.gz.
#
# Runs from the repository root with this tree's qidlab (PYTHONPATH=src: the GPU machine has its own
# torch and transformers). Env: OUT (default ./out), WORK (default campaign/work: the studies name
# it as their checkpoint root), DEVICE (default cuda), COMPILE (default 1), DEADLINE (default 540),
# THREADS (torch threads per process, default 2), SPLIT (1: each run measured by two sweep processes,
# one for the run's own folder and one for its cooldown branches and weight averages, side by side into
# stores <run>.db and <run>-derived.db; default 0: one per run), LR_SWEEP (1: choose each model's peak learning rate
# first, `qidlab train --lr-sweep` with the suite's lr_sweep settings, every model's sweep side by side;
# default 0: every model trains at its own lr, even where the suite file has an lr_sweep table).
set -uo pipefail
plan=${1:?usage: job.sh PLAN}
[ -f "$plan" ] || { echo "job.sh: no plan file $plan" >&2; exit 2; }
case ${SPLIT:-0} in 0|1) ;; *) echo "job.sh: SPLIT must be 0 or 1, not '$SPLIT'" >&2; exit 2 ;; esac
out=${OUT:-out}; work=${WORK:-campaign/work}; deadline=${DEADLINE:-540}; threads=${THREADS:-2}
mkdir -p "$out" "$work/stores" "$work/logs"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=$threads TORCHINDUCTOR_COMPILE_THREADS=$threads
qidlab() { python -m qidlab "$@"; }
compile=(); [ "${COMPILE:-1}" = 1 ] && compile=(--compile)
sweep_lr=(--no-lr-sweep); [ "${LR_SWEEP:-0}" = 1 ] && sweep_lr=(--lr-sweep)
start=$(date +%s)
left() { echo $(( deadline - ($(date +%s) - start) )); }
log() { echo "[$(( $(date +%s) - start ))s] $*"; }

sweep() {  # STUDY DB FOLDER...: measure the folders into their own store, within the time left
    local study=$1 db=$2; shift 2
    timeout --signal=TERM "$(left)" python -m qidlab sweep "$study" --models "$@" \
        --store "$work/stores/$db.db" --quiet --json > "$work/logs/sweep-$db.json" \
        2> "$work/logs/sweep-$db.err" || log "sweep $db stopped (exit $?)"
}

pipeline() {  # SUITE STUDY MODEL: train, then measure, each within the time left
    local suite=$1 study=$2 model=$3 name
    name=$(basename "$suite" .toml)-$model
    [ "$(left)" -gt 0 ] || { log "no time left for $name"; return; }  # (timeout 0 would mean no limit)
    timeout --signal=TERM "$(left)" python -m qidlab train "$suite" --out "$work/suites" --device "${DEVICE:-cuda}" \
        "${compile[@]}" "${sweep_lr[@]}" --threads "$threads" --models "$model" --json > "$work/logs/train-$name.json" \
        2> "$work/logs/train-$name.err" || { log "train $name stopped (exit $?)"; return; }
    log "trained $name"
    [ "$study" = - ] && return
    [ "$(left)" -gt 0 ] || { log "no time left to measure $name"; return; }
    local groups  # the model's main run and, where the suite asks, its seed runs, cooldown branches and
    # averages, one line per run ("TAG FOLDER ..."; TAG "main" or "seed<S>"): each run is measured by its
    # own sweep process into its own store, side by side (a model's seed runs would otherwise queue)
    groups=$(python -c 'import re, sys; from qidlab.train import folders_of, load_suite_config as load
c = load(sys.argv[1]); name = sys.argv[2]; runs = {}
for f in folders_of(next(m for m in c.models if m.name == name), c.seed):
    s = re.match(re.escape(name) + r"-(seed\d+)(-|$)", f)
    runs.setdefault(s.group(1) if s else "main", []).append(f)
print("\n".join(" ".join([tag, *fs]) for tag, fs in runs.items()))' "$suite" "$model")
    local tag folders db run rest
    while read -r tag folders; do
        db=$name; [ "$tag" = main ] || db=$name-$tag
        read -r run rest <<< "$folders"
        if [ "${SPLIT:-0}" = 1 ] && [ -n "$rest" ]; then  # the run's own folder, and its branches and averages
            sweep "$study" "$db" $run & sweep "$study" "$db-derived" $rest &
        else
            sweep "$study" "$db" $folders &
        fi
    done <<< "$groups"
    wait
    log "measured $name"
}

slim() {  # SRC DEST: the store without its per-document losses (the QiD CIs are already in it)
    python - "$1" "$2" <<'PY'
import shutil, sqlite3, sys
shutil.copyfile(sys.argv[1], sys.argv[2] + ".tmp")
con = sqlite3.connect(sys.argv[2] + ".tmp")
con.execute("DELETE FROM doc_losses"); con.commit(); con.execute("VACUUM"); con.close()
shutil.move(sys.argv[2] + ".tmp", sys.argv[2])
PY
}

mapfile -t lines < <(grep -v '^\s*\(#\|$\)' "$plan")
mapfile -t suites < <(printf '%s\n' "${lines[@]}" | awk '{print $1}' | sort -u)
for suite in "${suites[@]}"; do  # tokenise each suite's corpus once, before its pipelines share it
    qidlab train "$suite" --out "$work/suites" --data-only --no-lr-sweep --quiet > /dev/null &
done
for _ in "${suites[@]}"; do wait -n || { echo "job.sh: preparing a suite's data failed" >&2; exit 1; }; done
log "data ready"
if [ "${LR_SWEEP:-0}" = 1 ]; then  # every model's lr sweep side by side; the pipelines read them back
    for suite in "${suites[@]}"; do  # all the suite's models, in the plan or not: its manifest records every lr
        for model in $(python -c 'import sys, tomllib; print(*(m["name"] for m in tomllib.load(open(sys.argv[1], "rb"))["models"]))' "$suite"); do
            python -m qidlab train "$suite" --out "$work/suites" --device "${DEVICE:-cuda}" --data-only --lr-sweep \
                --threads "$threads" --models "$model" --quiet > "$work/logs/lr-sweep-$(basename "$suite" .toml)-$model.txt" 2>&1 &
        done
    done
    wait
    log "learning rates chosen"
fi
for line in "${lines[@]}"; do
    read -r suite study models <<< "$line"
    for model in $models; do pipeline "$suite" "$study" "$model" & done
done
wait
log "pipelines done"

stores=()  # this plan's models only: a warm machine's earlier calls have returned theirs already
for line in "${lines[@]}"; do
    read -r suite _ models <<< "$line"
    for model in $models; do
        for db in "$work/stores/$(basename "$suite" .toml)-$model"{,-derived}.db "$work/stores/$(basename "$suite" .toml)-$model"-seed*.db; do
            [ -e "$db" ] && stores+=("$db")
        done
    done
done
if [ "${#stores[@]}" -gt 0 ]; then
    rm -f "$work/store.db"
    qidlab store merge "${stores[@]}" --out "$work/store.db" || echo "job.sh: merge failed" >&2
    slim "$work/store.db" "$out/store-measurements.db"
    gzip -6 -c "$work/store.db" | split -b 15M -d - "$out/store.db.gz.part-"
    parts=("$out"/store.db.gz.part-*)
    # 8 files of at most 16 MiB, 64 MiB together, come back from a GPU job: 3 of them are the slim store,
    # suites.tar.gz and logs.tar.gz, one is left for the caller's own log ($OUT/job-*.txt)
    room=$(( (60 * 1024 * 1024 - $(stat -c %s "$out/store-measurements.db")) / (15 * 1024 * 1024) ))
    [ "$room" -gt 4 ] && room=4
    if [ "${#parts[@]}" -gt "$room" ]; then
        echo "job.sh: the whole store is ${#parts[@]} x 15 MB gzipped (room for $room): not returned; store-measurements.db is" >&2
        rm -f "${parts[@]}"
    fi
fi
(cd "$work/suites" && find . \( -name train-log.csv -o -name weight-dynamics.json -o -name train-stats.json \
    -o -name qidlab-suite.toml -o -name data.json -o -name lr-sweep.json \) -print0 \
    | tar -czf - --null -T -) > "$out/suites.tar.gz"
nvidia-smi > "$work/logs/nvidia-smi.txt" 2>&1 || true
tar -czf "$out/logs.tar.gz" -C "$work" logs
log "job done -> $out: $(ls "$out" | tr '\n' ' ')"
