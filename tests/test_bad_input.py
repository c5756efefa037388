"""Bad input a user can give (issue 18): each one clear error, never a silent acceptance."""

import pytest

from qidlab.errors import QidlabError
from qidlab.sweep import load_study
from qidlab.tomlfile import Key, check_table

from test_study import GOOD


# ---- the one TOML table validator ---------------------------------------------------------------

SCHEMA = {"name": Key("str", required=True), "n": Key("int", min=1), "frac": Key("number", min=0, max=1),
          "lr": Key("number", min=0, above=True), "unit": Key(choices=("a", "b")),
          "steps": Key("list", items="int", min=0), "flag": Key("bool")}


@pytest.mark.parametrize("table, match", [
    ({"name": "x", "nme": 1}, "unknown key 'nme' in \\[t\\]; did you mean name\\?"),
    ({"name": "x", "zzz": 1}, "unknown key 'zzz' in \\[t\\] \\(known: flag, frac, lr, n, name, steps, unit\\)"),
    ({}, "\\[t\\] needs 'name'"),
    ({"name": 3}, "name must be a string, got 3"),
    ({"name": "x", "n": 0}, "n must be a positive integer, got 0"),
    ({"name": "x", "n": True}, "n must be a positive integer, got True"),
    ({"name": "x", "n": 2.5}, "n must be a positive integer, got 2.5"),
    ({"name": "x", "frac": 1.5}, "frac must be a number >= 0 and <= 1, got 1.5"),
    ({"name": "x", "lr": 0}, "lr must be a number > 0, got 0"),
    ({"name": "x", "unit": "c"}, "unit must be one of a, b, not 'c'"),
    ({"name": "x", "steps": 64}, "steps must be a list of integers >= 0, got 64"),
    ({"name": "x", "steps": [64, -1]}, "steps must be a list of integers >= 0"),
    ({"name": "x", "flag": "yes"}, "flag must be true or false"),
])
def test_check_table_refuses(table, match):
    with pytest.raises(QidlabError, match=match):
        check_table(table, SCHEMA, "f.toml", "[t]")


def test_check_table_accepts_a_good_table():
    table = {"name": "x", "n": 3, "frac": 1, "lr": 1e-3, "unit": "b", "steps": [0, 64], "flag": False}
    assert check_table(table, SCHEMA, "f.toml", "[t]") is table


# ---- study files: typo'd keys were silently ignored (defect 5) ---------------------------------

@pytest.mark.parametrize("old, new, match", [
    ('store = "tiny.db"', 'stor = "x.db"', "unknown key 'stor' in \\[study\\]; did you mean store\\?"),
    ('models = ["m1"]', 'step = [64]', "unknown key 'step' in \\[checkpoints\\]; did you mean steps\\?"),
    ("n_docs = 50", "ndocs = 2", "unknown key 'ndocs' in eval_sets\\[0\\]; did you mean n_docs\\?"),
    ("n_samples = 8", "nsamples = 4", "unknown key 'nsamples' in \\[calibration\\]; did you mean n_samples\\?"),
    ('models = ["m1"]', 'steps = 64', "\\[checkpoints\\] steps must be a list of integers >= 0, got 64"),
    ('models = ["m1"]', 'models = "m1"', "\\[checkpoints\\] models must be a list of strings"),
    ("n_docs = 50", "n_docs = 0", "eval_sets\\[0\\] n_docs must be a positive integer, got 0"),
    ("n_samples = 8", "n_samples = -1", "\\[calibration\\] n_samples must be a positive integer"),
    ("seq_len = 32", "seq_len = 3.5", "\\[calibration\\] seq_len must be a positive integer"),
    ('store = "tiny.db"', 'store = 3', "\\[study\\] store must be a string, got 3"),
    ('store = "tiny.db"', 'hessian_precision = "fp8"', "hessian_precision must be one of float32, tf32, bf16"),
    ('store = "tiny.db"', 'on_gptq_failure = "skip"', "on_gptq_failure must be one of error, rtn"),
])
def test_each_study_typo_is_refused(tmp_path, old, new, match):
    assert old in GOOD
    path = tmp_path / "study.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(QidlabError, match=match):
        load_study(path)


@pytest.mark.parametrize("scoring, match", [
    ("max_lenght = 512", "unknown key 'max_lenght' in \\[scoring\\]; did you mean max_length\\?"),
    ("bootstrap = -1", "\\[scoring\\] bootstrap must be an integer >= 0"),
    ("max_length = 0", "\\[scoring\\] max_length must be a positive integer"),
])
def test_each_scoring_typo_is_refused(tmp_path, scoring, match):
    path = tmp_path / "study.toml"
    path.write_text(GOOD + f"\n[scoring]\n{scoring}\n")
    with pytest.raises(QidlabError, match=match):
        load_study(path)


def test_hub_and_gptq_keys_are_allowed(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(GOOD.replace('store = "tiny.db"', 'store = "tiny.db"\nhessian_precision = "bf16"\n'
                                 'on_gptq_failure = "rtn"').replace('models = ["m1"]', 'models = ["m1"]\n'
                                 'steps = [0, 64]\nallow_pickle = true'))
    study = load_study(path)
    assert study.steps == (0, 64) and study.hessian_precision == "bf16" and study.on_gptq_failure == "rtn"


# ---- suite files: the same validator --------------------------------------------------------------

SUITE = """
[suite]
name = "s"
corpus = "corpus"
seq_len = 32
batch_size = 4
steps = 40

[[models]]
name = "h32-l1"
hidden = 32
layers = 1
heads = 4
lr = 3e-3
"""


@pytest.mark.parametrize("old, new, match", [
    ("steps = 40", "stpes = 40", "unknown key 'stpes' in \\[suite\\]; did you mean steps\\?"),
    ("steps = 40", "steps = 40\ncheckpoints = { evry = 8 }", "unknown key 'evry' in \\[suite\\] checkpoints; did you "
                                                            "mean every\\?"),
    ("lr = 3e-3", "lr = 3e-3\nlayer = 2", "unknown key 'layer' in models\\[0\\]; did you mean layers\\?"),
    ("steps = 40", "steps = 40.5", "\\[suite\\] steps must be a positive integer, got 40.5"),
    ("steps = 40", "steps = 40\nwarmup = -1", "\\[suite\\] warmup must be an integer >= 0, got -1"),
    ("steps = 40", "steps = 40\nmin_lr_ratio = 2", "min_lr_ratio must be a number >= 0 and <= 1, got 2"),
    ("steps = 40", "steps = 40\ndecay_fraction = 0", "decay_fraction must be a number > 0 and <= 1"),
    ("steps = 40", "steps = 40\nepochs = true", "epochs must be a number > 0, got True"),
    ('corpus = "corpus"', "corpus = 3", "\\[suite\\] corpus must be a string, got 3"),
    ("seq_len = 32\n", "", "\\[suite\\] needs 'seq_len'"),
    ("hidden = 32", "hidden = '32'", "models\\[0\\] hidden must be a positive integer, got '32'"),
    ("name = \"h32-l1\"", "name = 1", "models\\[0\\] name must be a string, got 1"),
])
def test_each_suite_typo_is_refused(tmp_path, old, new, match):
    from qidlab.train.config import load_suite_config

    assert old in SUITE
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.replace(old, new, 1))
    with pytest.raises(QidlabError, match=match):
        load_suite_config(path)
