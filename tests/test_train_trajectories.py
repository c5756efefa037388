"""train/trajectories.py: per-checkpoint columns (kind, arm, seed, lr reached, decay) from a suite
manifest as qidlab.train writes it (a real suite trained on the CPU) and from hand-made ones."""

from __future__ import annotations

import math
import tomllib

import pandas as pd
import pytest

from qidlab.errors import QidlabError
from qidlab.train.schedule import lr_multiplier
from qidlab.train.trajectories import COLUMNS, MEANINGS, trajectory_columns, with_trajectories

SCHED = {"schedule": "constant", "steps": 64, "warmup": 4, "min_lr_ratio": 0.1, "decay_fraction": 0.2}
MANIFEST = {
    "suite": "s", "tokens_per_step": 256,
    "models": {
        "m": {"lr": 0.002},
        "m-seed1": {"lr": 0.002, "base_model": "m", "kind": "run", "run": "seed1"},
        "m-cool8": {"lr": 0.002, "base_model": "m", "kind": "branch", "base": "m", "branch_from": 8},
        "m-seed1-cool8": {"lr": 0.002, "base_model": "m", "kind": "branch", "base": "m-seed1", "run": "seed1",
                          "branch_from": 8},
        "m-lawa3": {"lr": 0.002, "base_model": "m", "kind": "average", "base": "m", "average_k": 3},
        "m-lr2x": {"lr": 0.004, "lr_of": "m", "lr_factor": 2.0},
        "m-lr2x-cool8": {"lr": 0.004, "base_model": "m-lr2x", "kind": "branch", "base": "m-lr2x", "branch_from": 8},
    },
}


def _frame(rows):
    return pd.DataFrame(rows, columns=["suite", "model", "step", "qid"])


def test_runs_branches_averages_and_seeds_get_their_columns():
    rows = [("s", "m", 0, 0.1), ("s", "m", 2, 0.1), ("s", "m", 32, 0.2), ("s", "m-cool8", 9, 0.3),
            ("s", "m-seed1-cool8", 9, 0.3), ("s", "m-lawa3", 8, 0.1), ("s", "m-lr2x", 32, 0.4), ("s", "m", 32, 0.5)]
    out = with_trajectories(_frame(rows), {"s": (MANIFEST, SCHED, 0)})
    assert len(out) == len(rows) and set(COLUMNS) <= set(out.columns)
    by = {(r.model, r.step): r for r in out.itertuples()}
    assert by["m", 0].lr == 0 and by["m", 0].decay == 0  # no update yet
    assert by["m", 2].lr == pytest.approx(0.002 * 2 / 4) and by["m", 2].decay == 0  # warmup is not decay
    assert by["m", 32].lr_fraction == 1 and by["m", 32].kind == "run" and math.isnan(by["m", 32].branch_from)
    branch = by["m-cool8", 9]
    assert (branch.kind, branch.trajectory, branch.arm, branch.lr, branch.decay) == ("branch", "m", "m", 0, 1)
    assert branch.decay_tokens == 256 and branch.branch_from == 8
    assert by["m-seed1-cool8", 9].seed == 1 and by["m-seed1-cool8", 9].trajectory == "m-seed1"
    assert by["m-lawa3", 8].kind == "average" and by["m-lawa3", 8].branch_from == 8 and by["m-lawa3", 8].decay == 0
    assert by["m-lr2x", 32].peak_lr == 0.004 and by["m-lr2x", 32].arm == "m-lr2x"


def test_lr_factor_marks_the_reference_lr_arm_and_its_branches_share_it():
    rows = [("s", "m", 32, 0.1), ("s", "m-seed1", 32, 0.1), ("s", "m-cool8", 9, 0.1), ("s", "m-lawa3", 8, 0.1),
            ("s", "m-lr2x", 32, 0.1), ("s", "m-lr2x-cool8", 9, 0.1)]
    out = trajectory_columns(_frame(rows), {"s": (MANIFEST, SCHED, 0)}).set_index("model")
    assert out.lr_factor.to_dict() == {"m": 1.0, "m-seed1": 1.0, "m-cool8": 1.0, "m-lawa3": 1.0, "m-lr2x": 2.0,
                                       "m-lr2x-cool8": 2.0}
    bad = {**MANIFEST, "models": {"m-lr2x": {"lr": 0.004, "lr_of": "m"}}}
    with pytest.raises(QidlabError, match="lr_of 'm' without lr_factor"):
        trajectory_columns(_frame([("s", "m-lr2x", 1, 0.0)]), {"s": (bad, SCHED, 0)})


def test_batch_order_is_the_manifests_else_shuffled_for_a_seed_run_made_before_the_key():
    rows = [("s", "m", 32, 0.1), ("s", "m-seed1", 32, 0.1), ("s", "m-seed1-cool8", 9, 0.1), ("s", "m-lawa3", 8, 0.1),
            ("s", "m-seed3", 32, 0.1), ("s", "m-seed3-cool8", 9, 0.1)]
    models = {**MANIFEST["models"],
              "m-seed3": {"lr": 0.002, "base_model": "m", "kind": "run", "run": "seed3", "batch_order": "contiguous"},
              "m-seed3-cool8": {"lr": 0.002, "base_model": "m", "kind": "branch", "base": "m-seed3", "run": "seed3",
                                "branch_from": 8, "batch_order": "contiguous"}}
    out = trajectory_columns(_frame(rows), {"s": ({**MANIFEST, "models": models}, SCHED, 0)}).set_index("model")
    assert out.batch_order.to_dict() == {"m": "contiguous", "m-seed1": "shuffled", "m-seed1-cool8": "shuffled",
                                         "m-lawa3": "contiguous", "m-seed3": "contiguous", "m-seed3-cool8": "contiguous"}
    bad = {**MANIFEST, "models": {"m": {"lr": 0.002, "batch_order": "random"}}}
    with pytest.raises(QidlabError, match="batch_order 'random' \\(contiguous or shuffled\\)"):
        trajectory_columns(_frame([("s", "m", 1, 0.0)]), {"s": (bad, SCHED, 0)})


def test_a_cosine_run_decays_from_the_end_of_its_warmup():
    sched = {**SCHED, "schedule": "cosine"}
    out = trajectory_columns(_frame([("s", "m", 64, 0.0), ("s", "m", 34, 0.0)]), {"s": (MANIFEST, sched, 0)})
    end, mid = out.iloc[0], out.iloc[1]
    assert end.lr_fraction == pytest.approx(lr_multiplier(63, **sched)) and end.decay > 0.89
    assert mid.decay_tokens == (34 - 4) * 256 and 0 < mid.decay < end.decay


def test_unknown_suites_and_folders_are_one_line_each():
    with pytest.raises(QidlabError, match="no suite manifest for suite 'x'"):
        trajectory_columns(_frame([("x", "m", 1, 0.0)]), {"s": (MANIFEST, SCHED, 0)})
    with pytest.raises(QidlabError, match="has no folder 'n'"):
        trajectory_columns(_frame([("s", "n", 1, 0.0)]), {"s": (MANIFEST, SCHED, 0)})
    bad = {**MANIFEST, "models": {"m": {"lr": 0.1, "kind": "soup"}}}
    with pytest.raises(QidlabError, match="kind 'soup'"):
        trajectory_columns(_frame([("s", "m", 1, 0.0)]), {"s": (bad, SCHED, 0)})


def test_a_manifest_the_trainer_wrote_names_every_folder(tmp_path):
    from tiny_models import tiny_corpus

    from qidlab.corpus import build_corpus
    from qidlab.train import load_suite_config, train_suite

    import json
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in tiny_corpus(300)))
    build_corpus("files", tmp_path / "corpus", files=[docs], compress=True)
    suite = tmp_path / "suite.toml"
    suite.write_text(f'''[suite]
name = "t"
corpus = "{tmp_path / 'corpus'}"
seq_len = 32
batch_size = 2
steps = 24
schedule = "constant"
warmup = 2
checkpoints = {{ log_spaced_until = 24, every = 1000 }}

[[models]]
name = "h32-l1"
hidden = 32
layers = 1
heads = 2
lr = 0.003
seeds = [1]
branches = {{ at = [8, 16], fraction = 0.25, average = 2, average_span = 0.5 }}

[[models]]
name = "h32-l1-lr2x"
hidden = 32
layers = 1
heads = 2
lr_of = "h32-l1"
lr_factor = 2.0
''')
    paths = train_suite(suite, tmp_path / "out", threads=1, device="cpu")
    manifest = tomllib.loads((tmp_path / "out" / "t" / "qidlab-suite.toml").read_text())
    rows = [("t", p.parent.name, int(p.name.removeprefix("step")), 0.0) for p in paths]
    out = trajectory_columns(_frame(rows), {"t": (manifest, load_suite_config(suite).schedule_dict(), 0)})
    kinds = out.groupby("kind")["model"].agg(set).to_dict()
    assert kinds["branch"] == {"h32-l1-cool8", "h32-l1-cool16", "h32-l1-seed1-cool8", "h32-l1-seed1-cool16"}
    assert kinds["average"] == {"h32-l1-lawa2", "h32-l1-seed1-lawa2"}
    assert set(out["seed"]) == {0, 1} and set(out["arm"]) == {"h32-l1", "h32-l1-lr2x"}
    assert (out.loc[out.kind == "branch", "lr"] == 0).all()
    factor = out.groupby("arm").lr_factor.agg(set).to_dict()
    assert factor == {"h32-l1": {1.0}, "h32-l1-lr2x": {2.0}}
    assert set(out.loc[out.arm == "h32-l1-lr2x", "peak_lr"]) == {0.006}


def test_every_column_has_its_meaning_in_words():
    assert set(MEANINGS) == set(COLUMNS) and all(len(MEANINGS[c]) > 10 for c in COLUMNS)
