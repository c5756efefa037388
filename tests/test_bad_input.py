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
    assert study.allow_pickle is True  # a local suite folder honours it too (load_checkpoint)


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


# ---- the command line (issue 18 defects 8, 10, 11, 15 and newcomer items) -----------------------

def one_error_line(capsys, *argv) -> str:
    """Run ``qidlab *argv``: exit status 2, nothing on stdout, exactly one line on stderr."""
    from qidlab.cli import main

    capsys.readouterr()
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_version(capsys):
    from qidlab import __version__
    from qidlab.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"qidlab {__version__}"


def test_a_misspelt_command_gets_a_did_you_mean(capsys):
    assert "unknown command 'lwas'; did you mean laws?" in one_error_line(capsys, "lwas")
    assert "did you mean" not in one_error_line(capsys, "xyzzy")
    assert "unknown action 'mrege'; did you mean merge?" in one_error_line(capsys, "store", "mrege")
    assert "unknown action 'biuld'; did you mean build?" in one_error_line(capsys, "corpus", "biuld")


def test_min_bits_refuses_a_budget_that_is_not_positive(capsys):
    for budget in ("-0.1", "0"):
        err = one_error_line(capsys, "min-bits", "--law", "ouyang2024", "--set", "n_params=7B", "tokens=1T",
                             "--budget", budget)
        assert "--budget must be a positive number" in err


def test_predict_that_overflows_is_one_line_and_no_warning(capsys):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        err = one_error_line(capsys, "predict", "--law", "ouyang2024", "--set", "n_params=1e-300", "tokens=1e12",
                             "bits=4")
    assert "loss = inf at n_params=1e-300" in err and "far outside" in err


def _fit_csv(tmp_path, qid):
    from test_cli import synthetic_rows, write_csv

    rows = synthetic_rows()
    for i, row in enumerate(rows):
        row["qid"] = qid(i, row["qid"])
    return write_csv(tmp_path / "fit.csv", rows)


def test_fit_of_equal_targets_says_r2_is_undefined(capsys, tmp_path):
    from qidlab.cli import main

    path = _fit_csv(tmp_path, lambda i, q: 0.25)
    capsys.readouterr()
    assert main(["fit", str(path), "--law", "ouyang2024"]) == 0
    out = capsys.readouterr().out
    assert "R2(log) n/a (every qid is the same" in out and "nan" not in out


def test_fit_reports_empty_targets_like_non_positive_ones(capsys, tmp_path):
    import json

    from qidlab.cli import main

    path = _fit_csv(tmp_path, lambda i, q: float("nan") if i in (3, 7) else (-0.01 if i == 5 else q))
    capsys.readouterr()
    assert main(["fit", str(path), "--law", "ouyang2024", "--json"]) == 0
    (fit,) = json.loads(capsys.readouterr().out)["fits"]
    assert fit["n_missing"] == 2 and fit["n_nonpositive"] == 1 and fit["n"] == 27 - 3
    assert main(["fit", str(path), "--law", "ouyang2024"]) == 0
    out = capsys.readouterr().out
    assert "2 points with qid empty (NaN): dropped" in out and "1 point with qid <= 0" in out
    empty = _fit_csv(tmp_path, lambda i, q: float("nan"))
    assert "qid is empty (NaN) in all 27 rows" in one_error_line(capsys, "fit", str(empty), "--law", "ouyang2024")


def test_a_closed_pipe_ends_quietly():
    """`qidlab laws --json | head -1`: the reader has gone before qidlab writes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    read, write = os.pipe()
    os.close(read)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run([sys.executable, "-m", "qidlab", "laws", "--json"], stdout=write,
                              stderr=subprocess.PIPE, env=env, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == b""


def test_demo_without_the_measure_extra_says_what_to_install(capsys, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # importlib's find_spec: not installed
    out = tmp_path / "demo"
    err = one_error_line(capsys, "demo", "--out", str(out))
    assert "missing: transformers" in err and "pip install -c constraints.txt 'qidlab[measure]'" in err
    assert not out.exists()


def test_a_misspelt_suite_manifest_key_gets_a_did_you_mean(tmp_path):
    from qidlab.checkpoints.discover import read_manifest

    (tmp_path / "qidlab-suite.toml").write_text("tokens_per_stp = 5\n")
    with pytest.raises(QidlabError, match="unknown key 'tokens_per_stp' in the suite manifest; did you mean "
                                          "tokens_per_step\\?"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("old, new, match", [
    ("steps = 40", "steps = 40\nlr_sweep = { factor = [1, 2] }", "unknown key 'factor' in lr_sweep; did you mean "
                                                                 "factors\\?"),
    ("steps = 40", "steps = 40\nlr_sweep = { eval_batches = 0 }", "lr_sweep.eval_batches must be a positive integer"),
    ("lr = 3e-3", "lr = 3e-3\nqat = { weight = { method = 'rtn', bits = 4 } }",
     "unknown key 'weight' in \\[models.qat\\]; did you mean weights\\?"),
    ("lr = 3e-3", "lr = 3e-3\nqat = { activations = { bit = 8 } }", "unknown key 'bit' in qat.activations; did you "
                                                                      "mean bits\\?"),
])
def test_each_suite_subtable_typo_is_refused(tmp_path, old, new, match):
    test_each_suite_typo_is_refused(tmp_path, old, new, match)


def test_train_sweep_and_quantize_without_the_measure_extra_say_what_to_install(capsys, tmp_path, monkeypatch):
    import sys

    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    study = tmp_path / "study.toml"
    study.write_text(GOOD)
    (tmp_path / "suite").mkdir()
    monkeypatch.setitem(sys.modules, "torch", None)
    for argv in (["train", str(suite), "--out", str(tmp_path / "out")], ["sweep", str(study)],
                 ["quantize", str(tmp_path / "suite"), "--method", "rtn", "--out", str(tmp_path / "q")]):
        err = one_error_line(capsys, *argv)
        assert "needs the measure extra (missing: torch)" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml", "suite", "suite.toml"]


def test_train_refuses_an_unknown_model_or_a_missing_corpus_before_writing(capsys, tmp_path):
    """Defect 12: `--models nosuch` trained the tokenizer and wrote data first; a missing corpus
    left an empty folder."""
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    err = one_error_line(capsys, "train", str(suite), "--out", str(out), "--models", "h32-l2")
    assert "has no model(s) h32-l2; did you mean h32-l1?" in err
    assert not out.exists()
    one_error_line(capsys, "train", str(suite), "--out", str(out))  # no corpus folder
    assert not out.exists()


@pytest.mark.parametrize("argv", [["sweep", "{d}"], ["train", "{d}", "--out", "{d}/x"]])
def test_a_folder_where_a_toml_file_is_expected(capsys, tmp_path, argv):
    """Defect 2: `qidlab sweep some-folder`, `qidlab train a-folder --out x`."""
    err = one_error_line(capsys, *[a.format(d=tmp_path) for a in argv])
    assert "a folder, not a" in err
    assert list(tmp_path.iterdir()) == []


def test_a_store_that_is_not_sqlite_or_not_writable_is_one_error(tmp_path):
    """Defects 3 and 1: `sweep --store not-sqlite.db`, `sweep --store RO/x.db` gave tracebacks."""
    import os

    from qidlab.store import Store

    bad = tmp_path / "not-sqlite.db"
    bad.write_bytes(b"this is not a database, but it is long enough to have a header" * 20)
    before = bad.read_bytes()
    with pytest.raises(QidlabError, match="not-sqlite.db: not a readable SQLite store"):
        Store(bad)
    assert bad.read_bytes() == before
    with pytest.raises(QidlabError, match="a folder, not a store file"):
        Store(tmp_path)
    with pytest.raises(QidlabError, match="cannot open the store for writing"):
        Store(tmp_path / "no-such-folder" / "x.db")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):  # (root may write anywhere)
            with pytest.raises(QidlabError, match="cannot open the store for writing"):
                Store(ro / "x.db")
    finally:
        ro.chmod(0o755)


def test_a_store_from_a_newer_qidlab_is_refused_by_every_reader(capsys, tmp_path):
    """Defect 6: fit and export read a store of a newer schema version without a word."""
    import sqlite3

    from qidlab.store import Store, read_canonical
    from qidlab.store.db import SCHEMA_VERSION

    path = tmp_path / "future.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(int(SCHEMA_VERSION) + 1),))
    conn.close()
    before = path.read_bytes()
    with pytest.raises(QidlabError, match="a newer qidlab wrote it"):
        read_canonical(path)
    for argv in (["fit", str(path), "--law", "ouyang2024"], ["export", str(path)],
                 ["plot", "fig2", str(path), "--out", str(tmp_path / "f.png")]):
        assert "a newer qidlab wrote it" in one_error_line(capsys, *argv)
    with pytest.raises(QidlabError, match=f"store schema version {int(SCHEMA_VERSION) + 1}"):
        Store(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["future.db"]


def test_fit_where_selects_rows_before_n_and_d_are_checked(capsys, tmp_path):
    """Defect 7: a store from `qidlab train` has step 0 (D = 0); `--where 'tokens>0'` must leave it out
    before the table is refused for it."""
    import json

    from qidlab.cli import main
    from test_cli import synthetic_rows, write_csv

    rows = synthetic_rows()
    rows += [{**rows[0], "tokens": 0.0, "qid": 1.0}]  # a step-0 checkpoint
    path = write_csv(tmp_path / "with-step0.csv", rows)
    assert "column 'tokens', row 28: 0 must be > 0" in one_error_line(capsys, "fit", str(path), "--law", "ouyang2024")
    assert main(["fit", str(path), "--law", "ouyang2024", "--where", "tokens>0", "--json"]) == 0
    (fit,) = json.loads(capsys.readouterr().out)["fits"]
    assert fit["n"] == 27


def test_an_output_that_cannot_be_written_is_one_line(capsys, tmp_path):
    """Defect 1 (in part): `fit --out RO/fit.json`, `export --out RO/x.csv` gave tracebacks."""
    from test_cli import synthetic_rows, write_csv

    table = write_csv(tmp_path / "t.csv", synthetic_rows())
    missing = tmp_path / "no-such-folder"
    err = one_error_line(capsys, "fit", str(table), "--law", "ouyang2024", "--out", str(missing / "fit.json"))
    assert str(missing / "fit.json") in err and "No such file or directory" in err
    err = one_error_line(capsys, "fit", str(table), "--law", "ouyang2024", "--out", str(tmp_path))
    assert "Is a directory" in err
    assert not missing.exists()
