"""Campaign 2's data set ``qidlab-gpu-2027`` (issue 17): every GPU measurement of Campaign 2
(2026-12-04, one H200), with each checkpoint's place in its training as columns.

    PYTHONPATH=src .venv/bin/python campaign/c2_dataset.py [--out src/qidlab/data]

writes ``<out>/qidlab-gpu-2027/`` (manifest.json, measurements.parquet) from files committed here:

* the eleven slim stores (QiD with 95% paired-bootstrap CIs, no per-document losses) of
  ``campaign/results/2026-12-04-c2-s{1,2,3,4,5}/``, merged (``qidlab store merge``, in ``STORES``' order);
* the suite manifests the trainer wrote (``.../2026-12-04-c2-s{2,3,4,5}/manifests/``: five partial ones of
  suite ``c2-en``, one per machine that trained (the fourth: the shuffled-batch seed runs, the fifth: the
  replicate seed runs), and four per cosine suite, one per call that trained it; each suite's
  ``[models.*]`` tables united), given to publishing as suite folders (each a
  ``qidlab-suite.toml``, recorded with its sha256), and with the suite files' schedules
  (``load_suite_config(...).schedule_dict()``) turned into per-checkpoint columns
  (``qidlab.train.trajectories``: kind, trajectory, arm, seed, schedule, peak_lr, lr, lr_fraction,
  decay, decay_tokens, branch_from, lr_factor, batch_order);
* the job logs (wall time, measurements per call) and the whole stores' sha256 files.

The main runs' step-0 checkpoints (D = 0: random initialisation) are left out of the table
(``keep_untrained=False``; the manifest's ``left_out`` lists them): a data set's table needs D > 0.

The manifest's own entries (``fields``): status, sizes, seeds, branches, averaging, cosine_runs,
peak_lr_arms, prefix_policy, unit, calls, whole_stores. Everything is read from those files; the
only facts written here are the calls' file names (``CALLS``). The same files and code give the same
data set, byte for byte (no timestamps; the merged store is deterministic).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from qidlab.errors import QidlabError
from qidlab.store import merge_stores, publish_dataset, read_canonical
from qidlab.train.config import load_suite_config
from qidlab.train.trajectories import MEANINGS, trajectory_columns

NAME = "qidlab-gpu-2027"
S1, S2, S3, S4, S5 = (f"campaign/results/2026-12-04-c2-s{i}" for i in (1, 2, 3, 4, 5))
STORES = [f"{S1}/store-measurements.db", f"{S2}/store-measurements.db", f"{S2}/store-measurements-cos.db",
          f"{S3}/store-measurements-seeds1.db", f"{S3}/store-measurements-seeds2.db",
          f"{S3}/store-measurements-cos-a.db", f"{S3}/store-measurements-cos-b.db",
          f"{S4}/store-measurements-seedsdoc1.db", f"{S4}/store-measurements-seedsdoc2.db",
          f"{S4}/store-measurements-cos-a.db", f"{S5}/store-measurements-cos.db"]
MANIFESTS = {"c2-en": [f"{S2}/manifests/c2-en-s1.toml", f"{S2}/manifests/c2-en-s2.toml",
                       f"{S2}/manifests/c2-en-s3.toml", f"{S3}/manifests/c2-en-seeds.toml",
                       f"{S4}/manifests/c2-en-seedsdoc.toml"],
             **{f"c2-en-cos{n}": [f"{S2}/manifests/c2-en-cos{n}.toml", f"{S3}/manifests/c2-en-cos{n}-s3.toml",
                                  f"{S4}/manifests/c2-en-cos{n}-s4.toml", f"{S5}/manifests/c2-en-cos{n}-s5.toml"]
                for n in (1950, 975, 488)}}
#: Each suite's schedule: the suite file (c2-en: the full design; the calls' own files, checked equal below).
SUITE_FILES = {"c2-en": "campaign/campaign2-en-suite.toml",
               **{f"c2-en-cos{n}": f"campaign/campaign2-en-cos{n}-suite.toml" for n in (1950, 975, 488)}}
#: The replicate seed runs (contiguous batches, as the main runs) and the shuffled-batch seed runs.
REPLICATES, SHUFFLED = "campaign/campaign2-en-seeds-doc-suite.toml", "campaign/campaign2-en-seeds-suite.toml"
CALL_SUITE_FILES = [*(f"campaign/campaign2-en-s{i}-suite.toml" for i in (1, 2, 3)), SHUFFLED, REPLICATES]
STUDY = "campaign/campaign2-en-study.toml"
#: The slice the report draws; ``where``: the rows its laws and the paper's figures use, each size's
#: constant-lr main run at its reference peak lr (no cooldown ends, no LAWA averages, no 0.5x/2x arms),
#: seed 0 only: one trajectory per size, as in the paper (the replicate seeds 3, 4 of four sizes would
#: weigh those sizes 3x in a fit; they measure the seed spread, findings2.py item g; the shuffled-batch
#: seeds 1, 2 are another batch order), from step 128 on: past the 100 warmup updates, where the lr is
#: the constant peak (steps 1-64 ramp it up).
PRIMARY = {"suite": "c2-en", "eval_set": "debian-en-heldout", "method": "gptq",
           "where": ["kind=run", "lr_factor=1", "seed=0", "step>=128"]}
WHOLE_STORES_BRANCH = "campaign2-stores"
#: The GPU calls (one H200, 2026-12-04, each <= 10 minutes, on one warm machine per session; ``env``: the
#: job's settings other than DEADLINE, SPLIT=1 from session 4 on: two sweep processes per run).
CALLS = [
    {"session": 1, "call": 1, "plan": "campaign/campaign2-s1.plan", "job_log": f"{S1}/job-s1.txt",
     "logs": f"{S1}/logs-call1.tar.gz", "suites": f"{S1}/suites-call1.tar.gz",
     "whole_store": f"c2-s1-call1-whole.db.gz on branch {WHOLE_STORES_BRANCH} (kept in session 4: its 2 gzip "
                    f"parts, whose sha256s are in {S1}/call1-whole-store.sha256, joined)"},
    {"session": 1, "call": 2, "plan": "campaign/campaign2-s2.plan", "job_log": f"{S1}/job-s2.txt",
     "logs": f"{S1}/logs-call2.tar.gz", "suites": f"{S1}/suites-call2.tar.gz", "slim_store": STORES[0],
     "whole_store": "did not come back (4 parts, over the 8 files a call returns)"},
    {"session": 2, "call": 1, "plan": "campaign/campaign2-s3.plan", "job_log": f"{S2}/job-s3a.txt",
     "logs": f"{S2}/logs-call1.tar.gz", "whole_store": "contained in call 3's (the warm machine's store grew)"},
    {"session": 2, "call": 2, "plan": "campaign/campaign2-s3.plan", "job_log": f"{S2}/job-s3b.txt",
     "logs": f"{S2}/logs-call2.tar.gz", "whole_store": "contained in call 3's (the warm machine's store grew)"},
    {"session": 2, "call": 3, "plan": "campaign/campaign2-s3.plan", "job_log": f"{S2}/job-s3c.txt",
     "logs": f"{S2}/logs-call3.tar.gz", "suites": f"{S2}/suites-s3.tar.gz", "slim_store": STORES[1],
     "whole_store": f"c2-s2-call3-s3-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 2, "call": 4, "plan": "campaign/campaign2-cos-s1.plan", "job_log": f"{S2}/job-cos1.txt",
     "logs": f"{S2}/logs-cos.tar.gz", "suites": f"{S2}/suites-cos.tar.gz", "slim_store": STORES[2],
     "whole_store": f"c2-s2-call4-cos-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 3, "call": 1, "plan": "campaign/campaign2-seeds-s1.plan", "job_log": f"{S3}/job-seeds-s1a.txt",
     "logs": f"{S3}/logs-call1.tar.gz", "slim_store": STORES[3],
     "whole_store": f"c2-s3-call1-seeds1-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 3, "call": 2, "plan": "campaign/campaign2-seeds-s2.plan", "job_log": f"{S3}/job-seeds-s2a.txt",
     "logs": f"{S3}/logs-call2.tar.gz", "whole_store": "contained in call 3's (the warm machine's store grew)"},
    {"session": 3, "call": 3, "plan": "campaign/campaign2-seeds-s2.plan", "job_log": f"{S3}/job-seeds-s2b.txt",
     "logs": f"{S3}/logs-call3.tar.gz", "slim_store": STORES[4],
     "whole_store": f"c2-s3-call3-seeds2-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 3, "call": 4, "plan": "campaign/campaign2-cos-s2a.plan", "job_log": f"{S3}/job-cos-s2a.txt",
     "logs": f"{S3}/logs-call4.tar.gz", "slim_store": STORES[5],
     "whole_store": f"c2-s3-call4-cos-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 3, "call": 5, "plan": "campaign/campaign2-cos-s2b.plan", "job_log": f"{S3}/job-cos-s2b.txt",
     "logs": f"{S3}/logs-call5.tar.gz", "suites": f"{S3}/suites-call5.tar.gz", "slim_store": STORES[6],
     "whole_store": f"c2-s3-call5-cos-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 4, "call": 1, "plan": "campaign/campaign2-seedsdoc-s1.plan", "env": "SPLIT=1",
     "job_log": f"{S4}/job-seedsdoc-s1a.txt", "logs": f"{S4}/logs-call1.tar.gz", "slim_store": STORES[7],
     "whole_store": f"c2-s4-call1-seedsdoc1-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 4, "call": 2, "plan": "campaign/campaign2-seedsdoc-s2.plan", "env": "SPLIT=1",
     "job_log": f"{S4}/job-seedsdoc-s2a.txt", "logs": f"{S4}/logs-call2.tar.gz",
     "whole_store": "contained in call 3's (the warm machine's store grew)"},
    {"session": 4, "call": 3, "plan": "campaign/campaign2-seedsdoc-s2.plan", "env": "SPLIT=1",
     "job_log": f"{S4}/job-seedsdoc-s2b.txt", "logs": f"{S4}/logs-call3.tar.gz", "suites": f"{S4}/suites-call3.tar.gz",
     "slim_store": STORES[8], "whole_store": f"c2-s4-call3-seedsdoc2-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 4, "call": 4, "plan": "campaign/campaign2-cos-s3a.plan", "env": "SPLIT=1",
     "job_log": f"{S4}/job-cos-s3a.txt", "logs": f"{S4}/logs-call4.tar.gz", "suites": f"{S4}/suites-call4.tar.gz",
     "slim_store": STORES[9], "whole_store": f"c2-s4-call4-cos-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
    {"session": 5, "call": 1, "plan": "campaign/campaign2-cos-s3b.plan", "env": "SPLIT=1",
     "job_log": f"{S5}/job-cos-s3b.txt", "logs": f"{S5}/logs-call1.tar.gz", "suites": f"{S5}/suites-call1.tar.gz",
     "slim_store": STORES[10], "whole_store": f"c2-s5-call1-cos-whole.db.gz on branch {WHOLE_STORES_BRANCH}"},
]
def description(fields: dict) -> str:
    """The data set's paragraph; its counts and the release state come from ``fields`` (``design``)."""
    sessions = len({c["session"] for c in CALLS})
    pending = fields["status"]["pending"]
    release = ("a COMPLETE release" if not pending else
               "a PARTIAL release (still to be measured: " + "; ".join(pending) + ")")
    sizes = fields["sizes"]
    n = [s["n_params"] for s in sizes]
    cos_sizes = min(len(v["models"]) for v in fields["cosine_runs"]["suites"].values())
    cos_text = "every size" if cos_sizes == len(sizes) else f"the {cos_sizes} smallest sizes"
    seeded = list(fields["seeds"]["planned"])
    seeded_text = ", ".join(seeded[:-1]) + " and " + seeded[-1]
    replicates = [s for s in fields["seeds"]["measured"].get("contiguous", []) if s != fields["seeds"]["suite_seed"]]
    shuffled = fields["seeds"]["measured"].get("shuffled", [])
    return (
        f"qidlab's Campaign 2 (issue 17; 2026-12-04, one NVIDIA H200, {sessions} sessions), {release}: GPT-NeoX "
        f"models of {len(sizes)} sizes, {n[0] / 1e6:.2f}M-{n[-1] / 1e6:.1f}M non-embedding parameters "
        f"(~{round(n[-1] / n[0], -1):.0f}x), trained by qidlab from scratch on the Debian English documentation mix (31.95M tokens, "
        "one pass, BOS = EOS, a trained prefix), each size's peak lr chosen by a 5-rate sweep that brackets it. Per "
        "size: a constant-lr main run (1,950 updates after 100 warmup), 5 cooldown branches from its "
        "stable phase (steps 128, 244, 466, 889, 1695; lr linearly to 0 over 15% more tokens) and a LAWA "
        "average (k = 5 over the last 10% of the steps) at each branch point; h384-l4 also at 0.5x and 2x "
        f"its peak lr; {seeded_text} also at replicate seeds {' and '.join(map(str, replicates)) or '(none yet)'} "
        "(own initialisation and document order, contiguous batches as the main runs; each seed run with its "
        f"branches and averages) and at seeds {' and '.join(map(str, shuffled))} with SHUFFLED batches "
        "(32 sequences drawn from across the corpus per step, where every main run reads 32 consecutive ones; "
        "each seed run with its branches and averages): a batch-order arm with lower loss16 and 2-4x larger "
        "QiD at equal N, D and lr, not replicates (column batch_order; manifest seeds.confound); cosine runs (to "
        f"10%) of 1,950, 975 and 488 updates for {cos_text}. "
        "Quantized weight-only with GPTQ, RTN, AWQ (2/3/4 bits, group 128) and NF4 (block 128), fake-"
        "quantized, scored on the corpus's held-out split and Brown: losses and QiD in BITS PER BYTE (the "
        "2026 set is in nats per token), with 95% paired-bootstrap CIs. Per checkpoint the columns kind, "
        "trajectory, arm, seed, schedule, peak_lr, lr, lr_fraction, decay, decay_tokens, branch_from, "
        "lr_factor, batch_order say where it sits in its training (tokens vs learning-rate decay). The laws and the "
        "paper's figures use the primary slice's run checkpoints at each size's reference peak lr, seed 0 "
        "(one trajectory per size), past the warmup (primary.where). The runs' step-0 checkpoints (D = 0) are "
        "left out (manifest: left_out). Per-document losses are not shipped: the whole stores are on git branch "
        "campaign2-stores (sha256s in whole_stores).")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="src/qidlab/data", help="folder to write NAME/ into (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    cwd = Path.cwd()
    os.chdir(ROOT)  # the merged store records its sources' paths as given: relative to the repository
    try:
        folder = build(out)
    except QidlabError as exc:
        print(f"c2_dataset: error: {exc}", file=sys.stderr)
        return 2
    finally:
        os.chdir(cwd)
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    print(f"{folder}: " + ", ".join(f"{n} {b:,} bytes" for n, b in sizes.items()))
    return 0


def build(out: Path) -> Path:
    """Merge, add the trajectory columns, publish; return the data set's folder."""
    suites = {suite: united(paths) for suite, paths in MANIFESTS.items()}
    schedules = {suite: schedule_of(suite) for suite in suites}
    with tempfile.TemporaryDirectory(prefix="c2-dataset-") as tmp:
        tmp = Path(tmp)
        db = tmp / f"{NAME}.db"
        merge_stores(STORES, db)
        table = read_canonical(db)
        table = table[table.tokens > 0]  # step 0 (D = 0, random initialisation) is left out: keep_untrained below
        columns = trajectory_columns(table, {s: (suites[s][0], schedules[s][0], schedules[s][1]) for s in suites})
        fields = design(table, columns, suites, schedules)
        folders = suite_folders(tmp / "suites")
        cwd = Path.cwd()
        os.chdir(tmp)  # the stored checkpoint paths (campaign/work/suites/...) must not find a local folder
        try:
            published = publish_dataset(db, NAME, out, description=description(fields), suites=folders, primary=PRIMARY,
                                        columns=columns, column_meanings=MEANINGS, fields=fields,
                                        keep_untrained=False)
        finally:
            os.chdir(cwd)
    check_unit(published)
    return published.folder


def check_unit(published) -> None:
    """Every measurement's config says the study's unit, and the manifest's units say it in words."""
    declared = tomllib.loads(Path(STUDY).read_text())["scoring"]["unit"]
    found = {(c["config"].get("scoring") or {}).get("unit") for c in published.manifest["configs"]}
    if found != {declared} or not published.manifest["units"]["qid"].startswith("bits per byte"):
        shutil.rmtree(published.folder)
        raise QidlabError(f"the measurements' units {sorted(map(str, found))} are not {STUDY}'s {declared!r} "
                          f"alone, or the manifest's units say {published.manifest['units']['qid']!r}; removed")


# ---------------------------------------------------------------------------
# suites


def united(paths: list[str]) -> tuple[dict, dict]:
    """``(manifest, repeated)``: the partial manifests of one suite as one (top-level keys equal; a
    folder named by several keeps its first entry) and, per folder whose later entries differ, those."""
    docs = [tomllib.loads(Path(p).read_text()) for p in paths]
    top = [{k: v for k, v in d.items() if k != "models"} for d in docs]
    if any(t != top[0] for t in top):
        raise QidlabError(f"{', '.join(paths)}: the partial manifests disagree outside [models.*]")
    models: dict = {}
    repeated: dict = {}
    for path, doc in zip(paths, docs):
        for folder, entry in doc["models"].items():
            if folder not in models:
                models[folder] = entry
            elif entry != models[folder]:
                repeated.setdefault(folder, []).append({"manifest": path, "entry": entry})
    return {**top[0], "models": models}, repeated


def schedule_of(suite: str) -> tuple[dict, int]:
    """``(schedule_dict, seed)`` of a suite file; for c2-en, each call's own suite file must agree."""
    config = load_suite_config(SUITE_FILES[suite])
    if config.name != suite:
        raise QidlabError(f"{SUITE_FILES[suite]}: suite {config.name!r}, expected {suite!r}")
    if suite == "c2-en":
        for path in CALL_SUITE_FILES:
            other = load_suite_config(path)
            if (other.name, other.schedule_dict(), other.seed) != (suite, config.schedule_dict(), config.seed):
                raise QidlabError(f"{path}: its schedule or seed differs from {SUITE_FILES[suite]}'s")
    return config.schedule_dict(), config.seed


def suite_folders(root: Path) -> list[Path]:
    """One folder per committed manifest (``<suite>`` or ``c2-en-s<i>``) holding it as
    ``qidlab-suite.toml`` (the same bytes, so the same sha256), for publishing's ``suites=``."""
    out = []
    for paths in MANIFESTS.values():
        for path in paths:
            folder = root / Path(path).stem
            folder.mkdir(parents=True)
            shutil.copyfile(path, folder / "qidlab-suite.toml")
            out.append(folder)
    return out


# ---------------------------------------------------------------------------
# the manifest's own entries


def design(table, columns, suites: dict, schedules: dict) -> dict:
    """The manifest's entries about Campaign 2's design and state (module docstring)."""
    main, repeated = suites["c2-en"]
    config = load_suite_config(SUITE_FILES["c2-en"])
    cosines, planned = cosine_runs(suites, schedules, table), replicate_plan(config)
    return {
        "status": status(columns, cosines, planned),
        "sizes": sizes(main, repeated, table),
        "seeds": seeds(config, columns, planned),
        "branches": branches(config, main, table),
        "averaging": averaging(config, main, table),
        "cosine_runs": cosines,
        "peak_lr_arms": peak_lr_arms(main),
        "prefix_policy": prefix_policy(suites),
        "unit": unit(),
        "calls": calls(),
        "whole_stores": whole_stores(),
    }


def status(columns, cosines: dict, planned: dict[str, list[int]]) -> dict:
    """What is measured and what is still pending, read from the rows: the replicate seeds per size
    (``planned``: contiguous batches, as the main runs; ``replicate_plan``), the cosine runs per size
    (``cosines``: every size of the suite file is planned in every cosine suite)."""
    missing = {m: sorted(set(s) - measured_seeds(columns, m, "contiguous")) for m, s in planned.items()}
    pending = [f"the replicate seed runs {s} of {m} (contiguous batches)" for m, s in missing.items() if s]
    for suite, entry in cosines["suites"].items():
        lacking = [m for m in entry["planned"] if m not in entry["models"]]
        if lacking:
            pending.append(f"{suite}: the cosine runs of {', '.join(lacking)}")
    shuffled = {m: sorted(measured_seeds(columns, m, "shuffled")) for m in planned}
    replicates = {m: sorted(measured_seeds(columns, m, "contiguous") - {0}) for m in planned}
    return {
        "release": "partial" if pending else "complete",
        "complete": not pending,
        "measured": ("every size's constant-lr run with its 5 cooldown branches and 5 LAWA averages (seed 0, "
                     "contiguous batches); the replicate seeds (contiguous batches, seed_data = documents; each with "
                     "its branches and averages) " + "; ".join(f"{m}: {s}" for m, s in replicates.items() if s)
                     + "; seeds " + "; ".join(f"{m}: {s}" for m, s in shuffled.items() if s)
                     + " with SHUFFLED batches (seed_data = sequences; each with its branches and averages): "
                     "a batch-order arm, not replicates (seeds.confound); h384-l4's 0.5x and 2x peak-lr arms; "
                     "cosine runs of " + ", ".join(f"{k}: {len(v['models'])} sizes" for k, v in cosines["suites"].items())),
        "pending": pending,
        "default": "qidlab.data.DEFAULT since session 3 (its primary slice: contiguous batches, every size); "
                   "qidlab-gpu-2026 is superseded (qidlab.data.SUPERSEDED says why)",
    }


def replicate_plan(config) -> dict[str, list[int]]:
    """Size -> the seeds of its planned replicates: the suite's own (the main run) and ``REPLICATES``'."""
    return {m.name: [config.seed, *m.seeds] for m in load_suite_config(REPLICATES).models}


def measured_seeds(columns, arm: str, order: str) -> set[int]:
    rows = columns[(columns.arm == arm) & (columns.batch_order == order)]
    return {int(s) for s in rows.seed.unique()}


def sizes(main: dict, repeated: dict, table) -> list[dict]:
    """Per size (a main run that is not a peak-lr variant): shape, N, the peak lr and its sweep."""
    totals = table.groupby("model").n_params_total.first()
    trained = trained_in()
    out = []
    for name, m in main["models"].items():
        if m.get("kind", "run") != "run" or "lr_of" in m or "run" in m:
            continue
        sweep = m.get("lr_sweep") or {}
        lrs = list(sweep.get("lrs", []))
        chosen = sweep.get("chosen")
        entry = {"model": name, "hidden": m["hidden"], "layers": m["layers"], "heads": m["heads"],
                 "intermediate": m["intermediate"], "n_params": int(m["n_params"]),
                 "n_params_total": int(totals[name]), "peak_lr": float(m["lr"]),
                 "lr_sweep": {**sweep, "bracketed": bool(lrs) and chosen in lrs[1:-1]},
                 "trained_in": trained.get(name)}
        if chosen != m["lr"]:
            raise QidlabError(f"{name}: peak lr {m['lr']} is not its sweep's choice {chosen}")
        if name in repeated:
            entry["lr_sweep_repeated"] = [{"manifest": r["manifest"], "lr_sweep": r["entry"].get("lr_sweep")}
                                          for r in repeated[name]]
        out.append(entry)
    return sorted(out, key=lambda e: e["n_params"])


def trained_in() -> dict[str, str]:
    """Model -> "session S call C" of the first call whose plan names it."""
    out: dict[str, str] = {}
    for call in CALLS:
        for model in plan_models(call["plan"]):
            out.setdefault(model, f"session {call['session']} call {call['call']} ({call['plan']})")
    return out


def plan_lines(plan: str) -> list[dict]:
    """A plan file's lines: suite file, study file, models (``campaign/job.sh``)."""
    words = [line.split() for line in Path(plan).read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [{"suite_file": w[0], "study": w[1], "models": w[2:]} for w in words]


def plan_models(plan: str) -> list[str]:
    return [model for line in plan_lines(plan) for model in line["models"]]


def seeds(config, columns, planned: dict[str, list[int]]) -> dict:
    return {"measured": {order: sorted(int(s) for s in columns[columns.batch_order == order].seed.unique())
                         for order in sorted(set(columns.batch_order))},
            "suite_seed": config.seed,
            "planned": planned,
            "planned_in": f"{REPLICATES} (seed_data = documents) beside the main runs (seed {config.seed})",
            "shuffled": {m.name: list(m.seeds) for m in load_suite_config(SHUFFLED).models},
            "shuffled_in": f"{SHUFFLED} (seed_data = sequences; session 3)",
            "runs": "a seed run is its own run (run = seed<S>, folders <model>-seed<S>, each with its 5 cooldown "
                    "branches and 5 LAWA averages) from its own initialisation, at its main run's peak lr (not "
                    "swept again: main_run = false); batch_order says how its batches were drawn",
            "confound": "seeds 1 and 2 were trained with SHUFFLED batches (32 sequences drawn from across the "
                        "corpus per step) while every main run reads 32 CONSECUTIVE sequences of its token file: "
                        "they reached lower loss16 and 2-4x larger QiD than seed 0 at equal N, D and lr, and "
                        "agree with each other; they are a batch-order arm, not replicates of seed 0. The "
                        "replicates (same batch rule, own document order and initialisation) are seeds "
                        + ", ".join(str(s) for s in sorted({s for v in planned.values() for s in v} - {config.seed})),
            "clusters": "the findings' bootstrap CIs resample (arm, seed): one size's trajectory of one seed with "
                        "its branches and averages"}


def branches(config, main: dict, table) -> dict:
    """The cooldown branches as planned by the suite file, checked against the manifests and measured."""
    plans = {m.name: m for m in config.models if m.branches}
    points = sorted({int(e["branch_from"]) for e in main["models"].values() if e.get("kind") == "branch"})
    spec = next(iter(plans.values())).branch_spec
    planned = next(iter(plans.values())).branches
    if points != [b.start for b in planned] or any(p.branches != planned for p in plans.values()):
        raise QidlabError(f"{SUITE_FILES['c2-en']}: branch points differ between models or from the manifests")
    ends = table[table.model.str.contains("-cool")]
    return {"points": points, "fraction": spec.fraction, "lengths": [b.length for b in planned],
            "ends": [b.end for b in planned], "tokens_per_step": int(main["tokens_per_step"]),
            "lr": "decays linearly from the run's peak lr to 0 over the branch (lr 0 at its end)",
            "from": "every constant-lr main run (each size and each peak-lr arm), from the run's checkpoint at "
                    "the branch point (weights and optimizer state), on the run's own next batches",
            "folders": "<run>-cool<point>/step<end>",
            "measured_checkpoints": int(len(ends[["model", "step"]].drop_duplicates()))}


def averaging(config, main: dict, table) -> dict:
    spec = next(m for m in config.models if m.branches).branch_spec
    ks = sorted({int(e["average_k"]) for e in main["models"].values() if e.get("kind") == "average"})
    if ks != [spec.average]:
        raise QidlabError(f"averages of k = {ks} in the manifests; the suite file says {spec.average}")
    planned = next(m for m in config.models if m.branches).branches
    avgs = table[table.model.str.contains("-lawa")]
    return {"method": "LAWA (Kaddour 2022): the float32 mean of a run's weights, saved in the model's dtype",
            "k": spec.average, "span": spec.average_span,
            "where": "at each branch point of every run: the last k stable-phase snapshots, spaced over the last "
                     f"{spec.average_span:.0%} of the steps to the point",
            "steps": {str(b.start): list(b.average_steps) for b in planned},
            "folders": f"<run>-lawa{spec.average}/step<point>",
            "measured_checkpoints": int(len(avgs[["model", "step"]].drop_duplicates()))}


def cosine_runs(suites: dict, schedules: dict, table) -> dict:
    out = {}
    for suite, (manifest, _) in suites.items():
        schedule = schedules[suite][0]
        if schedule["schedule"] != "cosine":
            continue
        rows = table[table.suite == suite]
        out[suite] = {"steps": schedule["steps"], "tokens": schedule["steps"] * int(manifest["tokens_per_step"]),
                      "warmup": schedule["warmup"], "min_lr_ratio": schedule["min_lr_ratio"],
                      "models": sorted(set(rows.model), key=lambda m: manifest["models"][m]["n_params"]),
                      "planned": sorted(manifest["models"], key=lambda m: manifest["models"][m]["n_params"]),
                      "peak_lr": {m: manifest["models"][m]["lr"] for m in sorted(set(rows.model))},
                      "measured_steps": sorted(int(s) for s in rows.step.unique())}
    return {"suites": out, "note": "cosine decay to 10% of the peak lr, the same data, seed, batch, warmup and "
                                   "peak lr as each size's constant-lr run in c2-en (session 1's swept rate, "
                                   "not swept again); measured where the constant-lr run has a checkpoint at "
                                   "the same D, and at the end"}


def peak_lr_arms(main: dict) -> dict:
    variants = {n: e for n, e in main["models"].items() if "lr_of" in e and e.get("kind", "run") == "run"}
    bases = sorted({e["lr_of"] for e in variants.values()})
    if len(bases) != 1:
        raise QidlabError(f"peak-lr variants of {bases}: expected one size")
    base = bases[0]
    arms = [{"model": base, "factor": 1.0, "peak_lr": float(main["models"][base]["lr"])}]
    arms += [{"model": n, "factor": float(e["lr_factor"]), "peak_lr": float(e["lr"])} for n, e in variants.items()]
    return {"size": base, "arms": sorted(arms, key=lambda a: a["factor"]),
            "note": "all else fixed (data, seed, schedule, branches, averages); the variants' rates are the swept "
                    "rate times the factor, not swept themselves"}


def prefix_policy(suites: dict) -> dict:
    flags = {suite: manifest.get("bos_is_eos") for suite, (manifest, _) in suites.items()}
    if set(flags.values()) != {True}:
        raise QidlabError(f"bos_is_eos is not true in every suite manifest: {flags}")
    return {"bos_is_eos": True, "suites": sorted(flags),
            "text": "the tokenizer's BOS is its EOS (qidlab.train.data): training reads doc <|eos|> doc <|eos|> ..., "
                    "and the scorer prepends BOS (= EOS) to each eval document, the context a document starts from "
                    "in training: a trained prefix (the 2026 set was scored after a <|bos|> its models never saw)"}


def unit() -> dict:
    study = tomllib.loads(Path(STUDY).read_text())
    declared = study["scoring"]["unit"]
    return {"loss": declared, "words": "bits per byte (nats summed over a document / ln 2 / its UTF-8 bytes; "
                                       "ratios of sums over documents)",
            "source": f"[scoring] unit in {STUDY}, in every measurement's config_json (the manifest's configs)",
            "columns": ["loss16", "loss", "qid", "qid_ci_low", "qid_ci_high"],
            "comparison": "qidlab-gpu-2026 is in nats per token; for one tokenizer and eval set the two differ by a "
                          "constant factor (tokens / bytes / ln 2), so exponents in N and D are unit-free"}


def calls() -> list[dict]:
    out = []
    for call in CALLS:
        text = Path(call["job_log"]).read_text()
        done = re.search(r"\[(\d+)s\] job done", text)
        store = re.findall(r"\+(\d+) measurements from \d+ stores", text)
        swept = "learning rates chosen" in text
        out.append({**call, "device": "one NVIDIA H200", "date": "2026-12-04",
                    "command": " ".join([*(["LR_SWEEP=1"] if swept else []), *([call["env"]] if "env" in call else []),
                                         "bash campaign/job.sh", call["plan"]]),
                    "runs": plan_lines(call["plan"]), "wall_s": int(done.group(1)) if done else None,
                    "store_measurements_after": int(store[-1]) if store else None})
    return out


def whole_stores() -> dict:
    """Where the per-document losses are: the whole stores on the branch (one per call that returned
    one, ``kept_files``), checked against the sha256 files committed beside the calls' logs."""
    folders = sorted({Path(c["job_log"]).parent for c in CALLS if (Path(c["job_log"]).parent / "whole-stores.sha256").is_file()})
    kept = {k: v for folder in folders for k, v in _sums(folder / "whole-stores.sha256").items()}
    on_branch = _branch_sums()
    if on_branch is not None and on_branch != kept:
        raise QidlabError(f"the whole-stores.sha256 files of {', '.join(map(str, folders))} and "
                          f"{WHOLE_STORES_BRANCH}:SHA256SUMS differ")
    lost = plan_models(CALLS[1]["plan"])  # session 1 call 2's store did not come back
    return {
        "where": f"git branch {WHOLE_STORES_BRANCH} of the qidlab repository (README.md and SHA256SUMS there), "
                 "not in the main tree; each file a gzipped qidlab store (schema 3) with per-document losses",
        "files": kept_files(kept),
        "missing": [{"what": "session 1 call 2's whole store (" + ", ".join(lost) + "; the warm machine's store "
                             "also held call 1's models, whose own store is kept)",
                     "status": "did not come back (over the 8 files a call returns)"}],
        "per_document_losses_missing_for": lost,
        "note": f"the {len(lost)} sizes of session 1's call 2 have QiD and CIs here but no per-document losses in the "
                "repository: re-measure them when their CIs must be recomputed",
    }


def kept_files(kept: dict[str, str]) -> list[dict]:
    """One entry per whole store on the branch: the call that returned it (``CALLS``' ``whole_store``
    "<file> on branch ...") and the calls before it on the same warm machine whose measurements it
    holds ("contained in call N's"), with its sha256 from ``kept``; every kept file named by a call."""
    out, held = [], []
    for call in CALLS:
        found = re.match(r"(\S+\.db\.gz) on branch ", call["whole_store"])
        if call["whole_store"].startswith("contained in call"):
            held.append(call["call"])
            continue
        if found:
            calls = [*held, call["call"]]
            span = f"call {calls[0]}" if len(calls) == 1 else f"calls {calls[0]}-{calls[-1]}"
            models = ", ".join(dict.fromkeys(plan_models(call["plan"])))
            out.append({"file": found.group(1), "sha256": kept.get(found.group(1)),
                        "covers": f"session {call['session']} {span}: {call['plan']} ({models})"})
        held = []
    named = {f["file"] for f in out}
    if named != set(kept):
        raise QidlabError(f"whole stores named by CALLS {sorted(named)} and kept (whole-stores.sha256) {sorted(kept)} differ")
    return out


def _sums(path: Path) -> dict[str, str]:
    return {name: digest for digest, name in (line.split() for line in path.read_text().splitlines() if line.strip())}


def _branch_sums() -> dict[str, str] | None:
    """The whole-stores branch's SHA256SUMS, if this checkout has the branch."""
    try:
        text = subprocess.run(["git", "show", f"{WHOLE_STORES_BRANCH}:SHA256SUMS"], cwd=ROOT, capture_output=True,
                              check=False, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if text.returncode != 0:
        return None
    return {name: digest for digest, name in (line.split() for line in text.stdout.splitlines() if line.strip())}


if __name__ == "__main__":
    sys.exit(main())
