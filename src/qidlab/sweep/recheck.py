"""Recompute a store's QiD and their 95% CIs from its per-document losses (``doc_losses``): the check
that a store, or a campaign's whole store kept beside its data set, holds what every number was made
from. Each quantized measurement is paired with the 16-bit reference of its checkpoint, eval set and
scoring settings, and ``evaluate.paired_bootstrap_qid`` runs again with the measurement's own unit
and replicate count and the sweep's seed (0): the same documents in the same order give the same
numbers, to rounding.

Losses in the measurement's unit (``[scoring] unit``; nats per token by default). Units that need
counts the store does not keep per document (``nats_per_ref_token``, ``nats_per_word``) are
reported as not recomputable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import QidlabError
from ..evaluate import paired_bootstrap_qid
from ..evaluate.score import DocScores
from ..store import read_doc_losses

RECOMPUTABLE = ("nats_per_token", "bits_per_byte")
SEED = 0  # the sweep's bootstrap seed (sweep/run.py)
TOLERANCE = 1e-9  # the largest difference from the stored number taken as equal (loss unit)


def recheck(path: str | Path, *, sample: int | None = None, seed: int = 0) -> list[dict]:
    """One row per quantized measurement (or ``sample`` of them, drawn with ``seed``): ``id``,
    ``method``, ``unit``, the stored and recomputed ``qid``, ``lo``, ``hi``, ``loss`` and ``loss16``,
    and ``diff`` (the largest absolute difference), or ``error`` where it cannot be recomputed."""
    tables = read_doc_losses(path)
    measured, docs = tables["measurements"], tables["doc_losses"]
    if measured.empty:
        raise QidlabError(f"{path}: the store has no measurements")
    scores = {int(mid): frame for mid, frame in docs.groupby("measurement_id", sort=False)}
    configs = [json.loads(text) for text in measured.config_json]
    refs = {_key(row, cfg): int(row.id) for row, cfg in zip(measured.itertuples(), configs) if row.method == "none"}
    rows = [(row, cfg) for row, cfg in zip(measured.itertuples(), configs) if row.method != "none"]
    if sample is not None and sample < len(rows):
        pick = np.random.default_rng(seed).choice(len(rows), size=sample, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    return [_one(row, cfg, refs.get(_key(row, cfg)), scores) for row, cfg in rows]


def _key(row, cfg: dict) -> tuple:
    """What pairs a measurement with its 16-bit reference: checkpoint, eval set, scoring settings."""
    return int(row.checkpoint_id), int(row.eval_set_id), json.dumps(cfg.get("scoring", {}), sort_keys=True)


def _one(row, cfg: dict, ref: int | None, scores: dict) -> dict:
    scoring = cfg.get("scoring", {})
    unit, n_boot = scoring.get("unit", "nats_per_token"), int(scoring.get("bootstrap", 1000))
    out = {"id": int(row.id), "method": row.method, "unit": unit,
           "stored": {"qid": row.qid, "lo": row.qid_ci_low, "hi": row.qid_ci_high, "loss": row.loss,
                      "loss16": row.loss16}}
    problem = (f"unit {unit} needs per-document counts the store does not keep" if unit not in RECOMPUTABLE else
               "no 16-bit reference with the same scoring" if ref is None else
               "no per-document losses" if int(row.id) not in scores or ref not in scores else None)
    if problem:
        return {**out, "error": problem}
    s16, sq = _doc_scores(scores[ref]), _doc_scores(scores[int(row.id)])
    try:
        qid, lo, hi = (paired_bootstrap_qid(s16, sq, n_boot=n_boot, seed=SEED, unit=unit) if n_boot
                       else (sq.loss(unit) - s16.loss(unit), None, None))
    except QidlabError as exc:
        return {**out, "error": str(exc)}
    again = {"qid": qid, "lo": lo, "hi": hi, "loss": sq.loss(unit), "loss16": s16.loss(unit)}
    diffs = [abs(again[k] - out["stored"][k]) for k in again if again[k] is not None and out["stored"][k] is not None]
    return {**out, "recomputed": again, "diff": max(diffs)}


def _doc_scores(frame) -> DocScores:
    return DocScores(nll_sum=frame.nll_sum.to_numpy(np.float64), n_tokens=frame.n_tokens.to_numpy(np.int64),
                     n_bytes=frame.n_bytes.to_numpy(np.int64))
