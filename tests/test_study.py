"""Study files: parsing, expansion into jobs, and one clear error for each malformed file."""

import pytest

from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.sweep import load_study

GOOD = """
[study]
name = "tiny"
store = "tiny.db"

[checkpoints]
root = "suite"
models = ["m1"]

[[eval_sets]]
name = "heldout"
source = "eval.txt"
n_docs = 50
max_chars = 300

[calibration]
source = "train.txt"
n_samples = 8
seq_len = 32

[[methods]]
method = "rtn"
bits = [2, 3, 4]
group_size = ["channel", 32]

[[methods]]
method = "gptq"
bits = 3
group_size = 32
"""


def test_study_expands_every_combination(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(GOOD)
    study = load_study(path)
    assert study.name == "tiny" and study.store == tmp_path / "tiny.db"
    assert study.checkpoint_root == tmp_path / "suite" and study.models == ("m1",)
    assert len(study.methods) == 7
    rtn = [m for m in study.methods if m["method"] == "rtn"]
    assert {(m["bits"], m["group_size"]) for m in rtn} == {(b, g) for b in (2, 3, 4) for g in (None, 32)}
    assert study.calibration.n_samples == 8 and study.eval_sets[0].n_docs == 50
    assert study.eval_sets[0].max_chars == 300


@pytest.mark.parametrize("text,message", [
    ("[study\nname=", "not valid TOML"),
    ("[study]\n[checkpoints]\nroot='s'\n[[methods]]\nmethod='rtn'\n", "at least one \\[\\[eval_sets\\]\\]"),
    ("[study]\n[checkpoints]\nroot='s'\n[[eval_sets]]\nname='e'\nsource='x'\n", "at least one \\[\\[methods\\]\\]"),
    ("[study]\n[checkpoints]\n[[eval_sets]]\nname='e'\nsource='x'\n[[methods]]\nmethod='rtn'\n", "needs 'root'"),
    ("[study]\n[checkpoints]\nroot='s'\n[[eval_sets]]\nsource='x'\n[[methods]]\nmethod='rtn'\n", "needs 'name' and 'source'"),
    ("[study]\n[checkpoints]\nroot='s'\n[[eval_sets]]\nname='e'\nsource='x'\n[[methods]]\nbits=3\n", "needs 'method'"),
    ("[study]\n[bogus]\n", "unknown section"),
    ("[study]\n[checkpoints]\nroot='s'\n[[eval_sets]]\nname='e'\nsource='x'\nn_docs='many'\n[[methods]]\nmethod='rtn'\n",
     "eval_sets\\[0\\]"),
    ("[study]\n[checkpoints]\nroot='s'\n[[eval_sets]]\nname='e'\nsource='x'\nmax_chars=0\n[[methods]]\nmethod='rtn'\n",
     "max_chars must be a positive integer"),
])
def test_malformed_study_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(QidlabError, match=message):
        load_study(path)


def test_sweep_command_reports_a_bad_study_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[study\n")
    assert main(["sweep", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.db").exists()


@pytest.mark.parametrize("scoring,message", [
    ("unit = 'nats_per_char'", "unit must be one of"),
    ("prefix = 'start'", "prefix must be one of"),
    ("windows = 'disjoint'\nstride = 8", "stride applies to sliding windows only"),
    ("unit = 'nats_per_ref_token'", "needs reference_tokenizer"),
    ("window = 3", "unknown key"),
])
def test_bad_scoring_section(tmp_path, scoring, message):
    path = tmp_path / "s.toml"
    path.write_text(GOOD + f"\n[scoring]\n{scoring}\n")
    with pytest.raises(QidlabError, match=message):
        load_study(path)


def test_study_device(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    assert load_study(path).device == "auto"
    path.write_text(GOOD.replace('store = "tiny.db"', 'store = "tiny.db"\ndevice = "tpu"'))
    with pytest.raises(QidlabError, match="device must be"):
        load_study(path)


def test_measurement_identity_is_the_inputs_content_not_their_paths(tmp_path):
    """The same job from another folder is the same measurement (stores from several jobs merge)."""
    from qidlab.store import config_hash
    from qidlab.sweep.run import measurement_config

    hashes = []
    for where in ("a", "b/c"):
        folder = tmp_path / where
        folder.mkdir(parents=True)
        (folder / "train.txt").write_text("def f():\n    return 1\n\n\nclass A:\n    pass\n")
        (folder / "study.toml").write_text(GOOD)
        study = load_study(folder / "study.toml")
        hashes.append([config_hash(measurement_config(m, study)) for m in study.methods])
    assert hashes[0] == hashes[1]
    (tmp_path / "a" / "train.txt").write_text("other calibration text\n")
    study = load_study(tmp_path / "a" / "study.toml")
    changed = [config_hash(measurement_config(m, study)) for m in study.methods]
    gptq = [i for i, m in enumerate(study.methods) if m["method"] == "gptq"]
    assert all(changed[i] != hashes[0][i] for i in gptq)
    (tmp_path / "a" / "train.txt").unlink()
    with pytest.raises(QidlabError, match="calibration source does not exist"):
        measurement_config(study.methods[gptq[0]], study)
