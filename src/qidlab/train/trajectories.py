"""Where each trained checkpoint sits in its training, as columns of a measurement table: for
telling tokens from learning-rate decay apart (issue 17; Catalan-Tatjer et al. 2025).

A suite's manifest (``qidlab-suite.toml``, written by ``train/loop.py``) names every folder a model's
training wrote: main runs, seed runs (``run = "seed<S>"``), cooldown branches (``kind = "branch"``,
``base``, ``branch_from``) and weight averages (``kind = "average"``, ``base``, ``average_k``), each
with its peak ``lr``. With the suite's schedule (``SuiteConfig.schedule_dict()``) that gives, per
checkpoint (suite, model, step), the columns of ``COLUMNS``:

* ``kind``: "run" | "branch" (a cooldown's end) | "average" (LAWA at a branch point);
* ``trajectory``: the run folder the checkpoint belongs to (a branch's or average's ``base``);
* ``arm``: the model entry the suite file names (``base_model``: a size, or a size's peak-lr
  variant such as ``h384-l4-lr2x``); seed runs, branches and averages share their arm;
* ``seed``: the run's seed (``run = "seed<S>"``, else the suite's);
* ``schedule``: the run's schedule ("constant", "cosine", "wsd"), also for its branches and averages;
* ``peak_lr``: the peak learning rate; ``lr``: the rate of the last update before the checkpoint
  (0 at a branch's end, the run's rate at the branch point for an average, 0 at step 0);
  ``lr_fraction`` = ``lr / peak_lr``;
* ``decay``: how far the rate had decayed, ``1 - lr_fraction`` past the warmup, 0 before it;
* ``decay_tokens``: tokens trained while the rate decayed (a branch: since it left the run; a cosine
  run: since the warmup ended; a constant run and an average: 0);
* ``branch_from``: the run's step a branch left or an average ends at (NaN for runs);
* ``lr_factor``: the arm's peak lr as a multiple of its size's reference lr (``lr_factor`` of an arm
  trained with ``lr_of``; 1.0 for an arm with an lr of its own): ``lr_factor = 1`` selects each
  size's reference-lr runs (seed runs, branches and averages share their arm's);
* ``batch_order``: how the run's batches were drawn: "contiguous" (``B`` consecutive sequences of a
  token file whose documents are in the run's seeded order: every main run, and seed runs trained
  with ``seed_data = "documents"``) or "shuffled" (``B`` sequences drawn at random from across the
  corpus: seed runs trained with ``seed_data = "sequences"``, which every seed run trained before
  that key existed was). The manifest's ``batch_order`` where it records one; else "shuffled" for a
  seed run and "contiguous" otherwise. Branches and averages share their run's.

Pure: dictionaries and a pandas frame in, a frame out (no files read).
"""

from __future__ import annotations

import math
import re

from qidlab.errors import QidlabError
from qidlab.train.branches import BATCH_ORDERS
from qidlab.train.schedule import lr_multiplier

COLUMNS = ("kind", "trajectory", "arm", "seed", "schedule", "peak_lr", "lr", "lr_fraction", "decay",
           "decay_tokens", "branch_from", "lr_factor", "batch_order")
KEYS = ("suite", "model", "step")
#: Each of ``COLUMNS`` in words, with its unit (a published data set's manifest records them).
MEANINGS = {
    "kind": "what the checkpoint is: run (a training run's), branch (a cooldown branch's end) or average "
            "(LAWA weight average at a branch point)",
    "trajectory": "the run folder the checkpoint belongs to (a branch's or average's base run)",
    "arm": "the suite file's model entry: a size or a size's peak-lr variant (seed runs, branches and "
           "averages share it)",
    "seed": "the run's seed (initialisation and data order)",
    "schedule": "the run's learning-rate schedule (constant, cosine or wsd), also for its branches and averages",
    "peak_lr": "the run's peak learning rate",
    "lr": "learning rate of the last update before the checkpoint (0 at a branch's end and at step 0)",
    "lr_fraction": "lr / peak_lr",
    "decay": "how far the rate had decayed: 1 - lr_fraction past the warmup, 0 before it",
    "decay_tokens": "training tokens seen while the rate decayed (a branch: since it left its run; a cosine run: "
                    "since the warmup ended; constant runs and averages: 0)",
    "branch_from": "the run's step a branch left or an average ends at (NaN for runs)",
    "lr_factor": "the arm's peak lr over its size's reference peak lr (the suite file's lr_factor of a model "
                 "trained with lr_of; 1 for a model with an lr of its own)",
    "batch_order": "how the run's batches were drawn: contiguous (consecutive sequences of a token file in the "
                   "run's seeded document order) or shuffled (sequences drawn at random from across the corpus); "
                   "branches and averages share their run's",
}
_SEED = re.compile(r"^seed(\d+)$")


def folder_entries(manifest: dict, schedule: dict, suite_seed: int = 0) -> dict[str, dict]:
    """``{folder: entry}`` of one suite manifest (parsed TOML): each folder's kind, trajectory, arm,
    seed, schedule and peak lr; ``schedule`` is the suite's ``schedule_dict()`` (``schedule``,
    ``steps``, ``warmup``, ``min_lr_ratio``, ``decay_fraction``)."""
    models = manifest.get("models")
    if not isinstance(models, dict) or not models:
        raise QidlabError("a suite manifest needs a [models.<folder>] table per folder")
    out = {}
    for folder, m in models.items():
        kind = m.get("kind", "run")
        if kind not in ("run", "branch", "average"):
            raise QidlabError(f"suite manifest: folder {folder!r} has kind {kind!r} (run, branch or average)")
        if "lr" not in m:
            raise QidlabError(f"suite manifest: folder {folder!r} has no lr")
        run = m.get("run")
        seed = int(_SEED.match(run).group(1)) if isinstance(run, str) and _SEED.match(run) else suite_seed
        arm = m.get("base_model", folder)
        order = m.get("batch_order", "shuffled" if seed != suite_seed else "contiguous")
        if order not in BATCH_ORDERS:
            raise QidlabError(f"suite manifest: folder {folder!r} has batch_order {order!r} ({' or '.join(BATCH_ORDERS)})")
        out[folder] = {"kind": kind, "trajectory": m.get("base", folder) if kind != "run" else folder,
                       "arm": arm, "seed": seed, "schedule": schedule["schedule"],
                       "peak_lr": float(m["lr"]), "branch_from": m.get("branch_from"),
                       "lr_factor": _lr_factor(models.get(arm, m)), "batch_order": order}
    return out


def _lr_factor(entry: dict) -> float:
    """An arm's ``lr_factor`` (its peak lr over its ``lr_of`` reference's); 1.0 without ``lr_of``."""
    if "lr_of" not in entry:
        return 1.0
    if "lr_factor" not in entry:
        raise QidlabError(f"suite manifest: lr_of {entry['lr_of']!r} without lr_factor")
    return float(entry["lr_factor"])


def checkpoint_row(entry: dict, step: int, schedule: dict, tokens_per_step: int) -> dict:
    """The ``COLUMNS`` of the checkpoint at ``step`` of a folder (``folder_entries``)."""
    kind, peak = entry["kind"], entry["peak_lr"]
    warmup = int(schedule.get("warmup", 0))
    run_factor = (lambda s: 0.0 if s <= 0 else lr_multiplier(s - 1, **schedule))
    if kind == "branch":
        if entry["branch_from"] is None:
            raise QidlabError(f"suite manifest: branch {entry['trajectory']!r} has no branch_from")
        start = int(entry["branch_from"])
        fraction, decay_tokens, branch_from = 0.0, (step - start) * tokens_per_step, start
    elif kind == "average":
        fraction, decay_tokens, branch_from = run_factor(step), 0, step
    else:
        fraction, branch_from = run_factor(step), math.nan
        decay_tokens = max(0, step - warmup) * tokens_per_step if schedule["schedule"] == "cosine" else 0
        if schedule["schedule"] == "wsd":
            start = schedule["steps"] - schedule.get("decay_fraction", 0.2) * schedule["steps"]
            decay_tokens = max(0.0, step - start) * tokens_per_step
    decay = 0.0 if kind != "branch" and step <= warmup else 1.0 - fraction
    return {**{k: entry[k] for k in ("kind", "trajectory", "arm", "seed", "schedule", "peak_lr")},
            "lr": peak * fraction, "lr_fraction": fraction, "decay": decay, "decay_tokens": float(decay_tokens),
            "branch_from": float(branch_from), "lr_factor": float(entry["lr_factor"]),
            "batch_order": entry["batch_order"]}


def trajectory_columns(checkpoints, suites: dict):
    """A frame of ``KEYS`` + ``COLUMNS``, one row per distinct (suite, model, step) of
    ``checkpoints`` (a frame with those columns, e.g. a measurement table).
    ``suites``: ``{suite: (manifest, schedule, seed)}`` (parsed manifest, ``schedule_dict()``, the
    suite's seed). A checkpoint of a suite or folder the manifests do not name is one ``QidlabError``."""
    import pandas as pd

    rows, entries_of = [], {}  # each suite's folder entries, read once
    for suite, model, step in checkpoints[list(KEYS)].drop_duplicates().itertuples(index=False):
        if suite not in suites:
            raise QidlabError(f"no suite manifest for suite {suite!r} (have: {', '.join(sorted(suites))})")
        manifest, schedule, seed = suites[suite]
        if suite not in entries_of:
            entries_of[suite] = folder_entries(manifest, schedule, seed)
        entries = entries_of[suite]
        if model not in entries:
            raise QidlabError(f"suite {suite!r}: its manifest has no folder {model!r}")
        rows.append({"suite": suite, "model": model, "step": int(step),
                     **checkpoint_row(entries[model], int(step), schedule, int(manifest["tokens_per_step"]))})
    return pd.DataFrame(rows, columns=[*KEYS, *COLUMNS])


def with_trajectories(measurements, suites: dict):
    """``measurements`` with the ``COLUMNS`` joined on (suite, model, step) (``trajectory_columns``)."""
    table = trajectory_columns(measurements, suites)
    merged = measurements.drop(columns=[c for c in COLUMNS if c in measurements.columns])
    merged = merged.assign(step=merged["step"].astype(int)).merge(table, on=list(KEYS), how="left")
    return merged
