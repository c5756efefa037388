"""Quantization configs stay objects from the study file to the store: what a sweep stores (config
JSON, its hash, the data-contract columns) and prints (the progress label) is pinned to what the
dict-based sweep of before stored and printed, for every method."""

from __future__ import annotations

import json
import sqlite3

import pytest

import qidlab.sweep.run as sweep_run
from qidlab.quantize.config import Reference16
from qidlab.sweep import load_study, run_study

STUDY = """
[study]
name = "configs"
store = "s.db"

[checkpoints]
root = "suite"

[[eval_sets]]
name = "heldout"
source = "eval.txt"
n_docs = 3

[calibration]
source = "train.txt"
n_samples = 4
seq_len = 8

[[methods]]
method = "rtn"
bits = [2, 4]
group_size = ["channel", 32]

[[methods]]
method = "rtn"
bits = 3
symmetric = false
modules = ["*.mlp.*"]

[[methods]]
method = "gptq"
bits = [3, 4]
group_size = "channel"
shared_hessian = [true, false]

[[methods]]
method = "gptq"
bits = 2
group_size = 64
damp = 0.05
act_order = true
static_groups = true

[[methods]]
method = "awq"
bits = 4
group_size = [32, "channel"]
duo_scaling = true

[[methods]]
method = "nf4"
block_size = 32

[[methods]]
method = "fp4"

[[methods]]
method = "fp"
exp_bits = 2
man_bits = 1
block_size = [32, 64]

[[methods]]
method = "ternary"
group_size = ["channel", 64]
"""


def _setup(folder):
    """A study whose one checkpoint is a bare folder, config and one tensor (the executor is faked: nothing
    is loaded)."""
    step = folder / "suite" / "m1" / "step10"
    step.mkdir(parents=True)
    (step / "config.json").write_text("{}")
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(1, dtype=np.float32)}, str(step / "model.safetensors"))  # checked before a sweep
    (folder / "suite" / "qidlab-suite.toml").write_text("tokens_per_step = 100\n")
    (folder / "eval.txt").write_text("one document\n\nanother document\n\na third one\n")
    (folder / "train.txt").write_text("def f():\n    return 1\n\n\nclass A:\n    pass\n")
    (folder / "study.toml").write_text(STUDY)


def _fake_execute(plan, eval_sets, study, executor, address):
    """What measure_checkpoint yields, with made-up losses: every job of the plan, as it comes."""
    def stream(todo):
        yield sweep_run.CheckpointInfo(n_params=10, n_params_total=20, tokens=None, content_hash="sha256:ab")
        for cfg in todo:
            for es in eval_sets:
                yield sweep_run.Result(cfg, es.name, 2.0, 2.5, 0.5, (0.4, 0.6), 3, ((1.0,), (3,), (9,)))
    return [(ref, stream(todo)) for ref, todo in plan]


def _rows(db) -> list[list]:
    with sqlite3.connect(db) as conn:
        return [list(r) for r in conn.execute(
            "SELECT method, bits, group_size, exp_bits, man_bits, block_size, config_hash, config_json "
            "FROM measurements ORDER BY id")]


PINNED = [  # (progress label, method, bits, group_size, exp_bits, man_bits, block_size, config_hash)
    ('16-bit', 'none', 16.0, None, None, None, None, '0fd3e02c80e76427'),
    ('rtn 2-bit per-channel', 'rtn', 2.0, None, None, None, None, 'd17169318b57da03'),
    ('rtn 2-bit g32', 'rtn', 2.0, 32, None, None, None, 'd14f2f0d345afe06'),
    ('rtn 4-bit per-channel', 'rtn', 4.0, None, None, None, None, '0c1773cabab41542'),
    ('rtn 4-bit g32', 'rtn', 4.0, 32, None, None, None, 'b9f08783847b715c'),
    ('rtn 3-bit modules *.mlp.* no symmetric', 'rtn', 3.0, None, None, None, None, '7cd5aee0841c705f'),
    ('gptq 3-bit per-channel shared_hessian', 'gptq', 3.0, None, None, None, None, 'b4afc1bba97219e4'),
    ('gptq 3-bit per-channel no shared_hessian', 'gptq', 3.0, None, None, None, None, 'af9f71f337bd4b03'),
    ('gptq 4-bit per-channel shared_hessian', 'gptq', 4.0, None, None, None, None, 'b818b5da9fe9658b'),
    ('gptq 4-bit per-channel no shared_hessian', 'gptq', 4.0, None, None, None, None, 'ffa5c85f37a4b169'),
    ('gptq 2-bit g64 act_order damp 0.05 static_groups', 'gptq', 2.0, 64, None, None, None,
     'e29df0d0fec4f975'),
    ('awq 4-bit g32 duo_scaling', 'awq', 4.0, 32, None, None, None, 'd4bc6d087d42b9dd'),
    ('awq 4-bit per-channel duo_scaling', 'awq', 4.0, None, None, None, None, '588b01aa95144dbc'),
    ('nf4 block 32', 'nf4', 4.0, None, None, None, 32, 'c73a5e07931a4545'),
    ('fp4', 'fp4', 4.0, None, None, None, 64, '7bf980235a358247'),
    ('fp e2m1 block 32', 'fp', 4.0, None, 2, 1, 32, 'dbf4792953178666'),
    ('fp e2m1 block 64', 'fp', 4.0, None, 2, 1, 64, '20dba419062b911d'),
    ('ternary per-channel', 'ternary', 1.584962500721156, None, None, None, None, '2c7f1112052c71a9'),
    ('ternary g64', 'ternary', 1.584962500721156, 64, None, None, None, '3c9e39ccc3e4fd9f'),
]


@pytest.fixture
def swept(tmp_path, monkeypatch, capsys):
    """The study swept into its store by a faked executor: (study, stored rows, progress labels)."""
    _setup(tmp_path)
    monkeypatch.setattr(sweep_run, "_execute", _fake_execute)
    study = load_study(tmp_path / "study.toml")
    summary = run_study(study, progress=True)
    assert (summary.measured, summary.failed) == (len(PINNED), [])
    (line,) = capsys.readouterr().err.splitlines()  # not a terminal: one line per checkpoint
    assert line.startswith(f"[{len(PINNED)}/{len(PINNED)}] m1/step10: 16-bit loss 2.000; {len(PINNED) - 1} quantized")
    labels = [sweep_run._label(cfg, study) for cfg in (Reference16(), *study.methods)]
    return study, _rows(tmp_path / "s.db"), labels


def test_study_holds_config_objects_built_once(swept):
    from qidlab.quantize.config import QuantConfig

    study, _, _ = swept
    assert all(isinstance(c, QuantConfig) for c in study.methods)
    gptq = [c for c in study.methods if c.method == "gptq"]
    assert {(c.bits, c.group_size, c.shared_hessian) for c in gptq} == {
        (b, None, s) for b in (3, 4) for s in (True, False)} | {(2, 64, False)}
    assert study.methods[4].modules == ("*.mlp.*",) and study.methods[4]["symmetric"] is False


def test_stored_configs_and_hashes_are_those_of_the_dict_sweep(swept):
    """Config JSON, its hash and the data-contract columns as the dict-based sweep stored them."""
    from qidlab.store import config_hash

    _, rows, _ = swept
    assert [tuple(r[:7]) for r in rows] == [p[1:] for p in PINNED]
    for *_, stored_hash, cfg_json in rows:  # the JSON is what the hash hashes, so it is pinned too
        assert config_hash(json.loads(cfg_json)) == stored_hash
        assert json.dumps(json.loads(cfg_json), sort_keys=True) == cfg_json


def test_progress_labels_are_unchanged(swept):
    _, _, labels = swept
    assert labels == [p[0] for p in PINNED]


def test_a_bad_config_is_one_error_naming_the_study_file(tmp_path):
    from qidlab.errors import QidlabError

    _setup(tmp_path)
    bad = STUDY.replace('method = "fp4"', 'method = "fp4"\nblock_size = 0')
    (tmp_path / "study.toml").write_text(bad)
    with pytest.raises(QidlabError) as err:
        load_study(tmp_path / "study.toml")
    assert str(err.value) == f"{tmp_path / 'study.toml'}: methods[6]: block_size must be an integer >= 1, got 0"
    (tmp_path / "study.toml").write_text(STUDY.replace('method = "fp4"', 'method = "fp5"'))
    with pytest.raises(QidlabError, match=r"methods\[6\]: unknown quantization method 'fp5' \(did you mean"):
        load_study(tmp_path / "study.toml")


def test_configs_cross_to_a_ray_worker_intact(swept):
    """Ray sends the jobs by pickle: a config (frozen dataclass) arrives equal, with its capabilities."""
    import pickle

    study, _, _ = swept
    back = pickle.loads(pickle.dumps(study))
    assert back.methods == study.methods and back.labels == study.labels
    assert [c.needs_calibration for c in back.methods] == [c.needs_calibration for c in study.methods]
