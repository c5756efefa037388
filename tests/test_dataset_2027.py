"""The shipped data set qidlab-gpu-2027 (Campaign 2, issue 17; ``campaign/c2_dataset.py``): it loads by
name with its per-checkpoint trajectory columns, its manifest lists the design (sizes, seeds,
branches, averaging, cosine runs, peak-lr arms, prefix policy, unit, calls, whole stores) consistently
with its own rows and the committed campaign files, and the script rebuilds it byte for byte.
Units: N non-embedding parameters, D tokens, losses and QiD in bits per byte."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

import qidlab.data
from qidlab.provenance import file_sha256
from qidlab.train.trajectories import COLUMNS, MEANINGS

NAME = "qidlab-gpu-2027"
ROOT = Path(__file__).resolve().parents[1]
POINTS = [128, 244, 466, 889, 1695]
SEEDED = ("h128-l3", "h256-l4", "h512-l4", "h768-l6")
pytestmark = pytest.mark.skipif(NAME not in qidlab.data.datasets(), reason="qidlab-gpu-2027 is not shipped")


@pytest.fixture(scope="module")
def table():
    return qidlab.data.load(NAME)


@pytest.fixture(scope="module")
def manifest():
    return qidlab.data.manifest(NAME)


def test_it_loads_by_name_with_the_trajectory_columns(table, manifest):
    folder = qidlab.data.datasets()[NAME]
    assert manifest["files"]["measurements"]["sha256"] == file_sha256(folder / "measurements.parquet")
    assert len(table) == manifest["counts"]["measurements"] == 15300
    assert set(COLUMNS) <= set(table.columns) and table[list(COLUMNS)].drop(columns="branch_from").notna().all().all()
    assert manifest["columns"] == {"joined_on": ["suite", "model", "step"], "extra": list(COLUMNS), "checkpoints": 765}
    assert all(manifest["units"][c] == MEANINGS[c] for c in COLUMNS)
    assert set(table.kind) == {"run", "branch", "average"} and set(table.seed) == {0, 1, 2, 3, 4}
    # seeds 1, 2: shuffled batches (session 3); 0 (the main runs) and the replicates 3, 4: contiguous
    assert ((table.batch_order == "shuffled") == table.seed.isin([1, 2])).all()
    assert set(table.suite) == {"c2-en", "c2-en-cos1950", "c2-en-cos975", "c2-en-cos488"}
    assert qidlab.data.DEFAULT == NAME  # the default since its seed runs are in
    assert qidlab.data.SUPERSEDED["qidlab-gpu-2026"]["by"] == NAME


def test_its_unit_is_bits_per_byte(table, manifest):
    assert manifest["unit"]["loss"] == "bits_per_byte" and manifest["units"]["qid"] == "bits per byte, loss - loss16"
    assert {(c["config"]["scoring"] or {}).get("unit") for c in manifest["configs"]} == {"bits_per_byte"}
    # a 16-bit model's bits per byte on English text: about 1-3 (nats per token would be 3-6)
    assert table.loss16.between(0.8, 4).all()


def test_the_status_names_what_is_pending_and_the_seeds_per_batch_order(table, manifest):
    status, seeds = manifest["status"], manifest["seeds"]
    assert seeds["measured"] == {"contiguous": [0, 3, 4], "shuffled": [1, 2]}
    assert seeds["shuffled"] == {m: [1, 2] for m in SEEDED} and seeds["planned"] == {m: [0, 3, 4] for m in SEEDED}
    assert "not replicates" in seeds["confound"]
    runs = table[(table.suite == "c2-en") & (table.lr_factor == 1)]
    for arm in SEEDED:  # each measured seed run: its run, 5 branch ends, 5 averages (20 QiD per checkpoint)
        by_kind = runs[runs.arm == arm].groupby("seed").kind.value_counts().unstack()
        assert sorted(by_kind.index) == [0, 1, 2, 3, 4] and (by_kind["branch"] == 5 * 20).all()
        assert (by_kind["branch"] == by_kind["average"]).all()
    assert set(runs[~runs.arm.isin(SEEDED)].seed) == {0}
    # complete (after session 5): no replicate seed and no cosine run the plan names is lacking from the
    # rows; the status is computed from them, so a lacking one would make it partial again
    lacking = {(s, m) for s, e in manifest["cosine_runs"]["suites"].items() for m in e["planned"]
               if m not in set(table[table.suite == s].model)}
    missing = {(m, s) for m, planned in seeds["planned"].items() for s in planned
               if not ((table.arm == m) & (table.seed == s) & (table.batch_order == "contiguous")).any()}
    assert missing == set() and lacking == set()
    assert status["complete"] is True and status["release"] == "complete" and status["pending"] == []
    assert "COMPLETE release" in manifest["description"] and "PARTIAL" not in manifest["description"]
    assert "replicate seeds 3 and 4" in manifest["description"]
    assert "for every size" in manifest["description"] and "smallest sizes" not in manifest["description"]


def test_the_sizes_span_300x_with_bracketed_learning_rates(table, manifest):
    sizes = manifest["sizes"]
    assert len(sizes) == 9 and sizes[-1]["n_params"] / sizes[0]["n_params"] > 300
    n = table.groupby("model").n_params.first()
    for s in sizes:
        sweep = s["lr_sweep"]
        assert s["n_params"] == n[s["model"]] and s["peak_lr"] == sweep["chosen"] in sweep["lrs"][1:-1]
        assert sweep["bracketed"] is True
        assert set(table[table.arm == s["model"]].peak_lr) == {s["peak_lr"]}


def test_branches_and_averages_are_where_the_manifest_says(table, manifest):
    b, a = manifest["branches"], manifest["averaging"]
    assert b["points"] == POINTS and b["fraction"] == 0.15 and a["k"] == 5 and a["span"] == 0.1
    ends = table[table.kind == "branch"]
    assert (ends.lr == 0).all() and set(ends.branch_from) == set(map(float, POINTS))
    assert ((ends.step - ends.branch_from) == (ends.branch_from * 0.15).round()).all()
    assert len(ends[["model", "step"]].drop_duplicates()) == b["measured_checkpoints"] == (11 + 8 + 8) * 5
    avg = table[table.kind == "average"]
    assert set(avg.step) == set(POINTS) and (avg.branch_from == avg.step).all()
    assert len(avg[["model", "step"]].drop_duplicates()) == a["measured_checkpoints"] == (11 + 8 + 8) * 5
    assert all(len(v) == 5 and v[-1] == int(k) and v[0] >= int(k) * 0.9 - 1 for k, v in a["steps"].items())


def test_cosine_runs_and_peak_lr_arms(table, manifest):
    every = [s["model"] for s in manifest["sizes"]]
    cos = manifest["cosine_runs"]["suites"]
    assert {k: v["steps"] for k, v in cos.items()} == {"c2-en-cos1950": 1950, "c2-en-cos975": 975, "c2-en-cos488": 488}
    for suite, entry in cos.items():
        rows = table[table.suite == suite]
        assert entry["models"] == every == sorted(set(rows.model), key=every.index)
        assert entry["planned"] == [s["model"] for s in manifest["sizes"]]
        assert entry["min_lr_ratio"] == 0.1 and (rows.schedule == "cosine").all()
        end = rows[rows.step == entry["steps"]]
        assert len(end) and all(math.isclose(f, 0.1, abs_tol=1e-3) for f in end.lr_fraction)  # the last update's
    arms = manifest["peak_lr_arms"]
    assert arms["size"] == "h384-l4" and [x["factor"] for x in arms["arms"]] == [0.5, 1.0, 2.0]
    for arm in arms["arms"]:
        assert set(table[(table.arm == arm["model"]) & (table.suite == "c2-en")].peak_lr) == {arm["peak_lr"]}
        assert arm["peak_lr"] == pytest.approx(arm["factor"] * arms["arms"][1]["peak_lr"])


def test_the_primary_rows_are_the_reference_lr_runs(table, manifest):
    primary = manifest["primary"]
    assert primary == {"suite": "c2-en", "eval_set": "debian-en-heldout", "method": "gptq",
                       "where": ["kind=run", "lr_factor=1", "seed=0", "step>=128"]}
    rows = qidlab.data.load(NAME, where=[f"{k}={primary[k]}" for k in ("suite", "eval_set", "method")]
                            + primary["where"])
    assert set(rows.kind) == {"run"} and set(rows.schedule) == {"constant"} and set(rows.lr_fraction) == {1.0}
    assert set(rows.model) == {s["model"] for s in manifest["sizes"]}  # each size's main run: no seed runs
    assert set(rows.batch_order) == {"contiguous"} and len(rows) == 243
    assert set(table[table.lr_factor != 1].arm) == {"h384-l4-lr0.5x", "h384-l4-lr2x"}
    assert {a["model"]: a["factor"] for a in manifest["peak_lr_arms"]["arms"]} == \
        table[table.arm.str.startswith("h384-l4")].groupby("arm").lr_factor.first().to_dict()


def test_prefix_policy_eval_sets_methods_and_suite_manifests(manifest):
    assert manifest["prefix_policy"]["bos_is_eos"] is True
    assert {e["name"] for e in manifest["eval_sets"]} == {"debian-en-heldout", "brown"}
    assert {m["method"]: m["bits"] for m in manifest["methods"]} == {
        "awq": [2.0, 3.0, 4.0], "gptq": [2.0, 3.0, 4.0], "nf4": [4.0], "rtn": [2.0, 3.0, 4.0]}
    found = {s["suite"]: s["manifests"] for s in manifest["suites"]}
    committed = [ROOT / f"campaign/results/2026-12-04-c2-s{i}/manifests" for i in (2, 3, 4, 5)]
    assert [x["folder"] for x in found["c2-en"]] == ["c2-en-s1", "c2-en-s2", "c2-en-s3", "c2-en-seeds", "c2-en-seedsdoc"]
    for entries in found.values():
        for e in entries:
            file = next(f / f"{e['folder']}.toml" for f in committed if (f / f"{e['folder']}.toml").is_file())
            assert e["sha256"] == file_sha256(file) and e["content"]["bos_is_eos"] is True


def test_calls_and_whole_stores_point_at_committed_files(manifest):
    calls = manifest["calls"]
    assert [(c["session"], c["call"]) for c in calls] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (2, 4),
                                                          (3, 1), (3, 2), (3, 3), (3, 4), (3, 5),
                                                          (4, 1), (4, 2), (4, 3), (4, 4), (5, 1)]
    assert all(c["device"] == "one NVIDIA H200" and c["date"] == "2026-12-04" and 0 < c["wall_s"] <= 600
               for c in calls)
    for c in calls:
        assert all((ROOT / c[k]).is_file() for k in ("plan", "job_log", "logs", "suites", "slim_store") if k in c)
        assert ("SPLIT=1" in c["command"]) == (c["session"] >= 4)
    assert manifest["devices"] == ["cuda: NVIDIA H200"]
    whole = manifest["whole_stores"]
    sums = dict(reversed(line.split()) for i in (1, 2, 3, 4, 5) for line in
                (ROOT / f"campaign/results/2026-12-04-c2-s{i}/whole-stores.sha256").read_text().splitlines())
    assert {f["file"]: f["sha256"] for f in whole["files"]} == sums
    assert "campaign2-stores" in whole["where"]
    # session 1 call 2's store did not come back: its three sizes (of the 6 smallest) lack per-document losses
    assert sorted(whole["per_document_losses_missing_for"]) == ["h256-l4", "h384-l4", "h512-l4"]
    assert set(whole["per_document_losses_missing_for"]) < {s["model"] for s in manifest["sizes"][:6]}
    assert calls[0]["whole_store"].startswith(whole["files"][0]["file"]) and whole["files"][0]["covers"].startswith("session 1 call 1")


def test_the_script_rebuilds_it(tmp_path, manifest):
    spec = importlib.util.spec_from_file_location("c2_dataset", ROOT / "campaign" / "c2_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cwd = Path.cwd()
    assert module.main(["--out", str(tmp_path)]) == 0
    shipped, rebuilt = qidlab.data.datasets()[NAME], tmp_path / NAME
    assert file_sha256(rebuilt / "measurements.parquet") == file_sha256(shipped / "measurements.parquet")
    again = json.loads((rebuilt / "manifest.json").read_text())
    drop = ("published_with",)  # the code revision and library versions of whoever rebuilds it
    assert {k: v for k, v in again.items() if k not in drop} == {k: v for k, v in manifest.items() if k not in drop}
    assert pd.read_parquet(rebuilt / "measurements.parquet").shape == (15300, 21 + len(COLUMNS))
    assert Path.cwd() == cwd  # the script went back to the caller's folder
