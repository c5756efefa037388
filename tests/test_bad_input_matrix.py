"""The bad-input matrix (issue 18): over 90 bad inputs across the command line, each one
exit status 2, exactly one line on stderr naming the problem, no traceback, and nothing in the
fixture folder, the case's own folder or the store changed (a before/after snapshot of names,
sizes and sha256 of every file).

Fixtures are built once for the module: a tiny two-checkpoint suite (steps 0 and 4 of a 1-layer
GPT-NeoX), a store measured from it by a real sweep, a foreign SQLite file (not a qidlab store),
a store of a future schema version, a non-SQLite file, corrupt checkpoints (truncated
safetensors, config.json that is not JSON, pickle-only weights) and study/suite files with one
mistake each. Most cases run ``qidlab.cli.main`` in this process; the full-disk cases run
``python -m qidlab`` in a subprocess.

Read-only outputs: a folder with mode 0555. Under root (which writes anywhere) the read-only
folder is ``/sys``, which sysfs refuses to create files in even for root.

Full disk: simulated, since a small tmpfs needs root. The subprocess runs under
``RLIMIT_FSIZE`` (set in ``preexec_fn``) with SIGXFSZ ignored, so a write past the limit fails
with ``OSError(EFBIG, "File too large")`` the way a full disk fails with ENOSPC.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import make_tiny_checkpoint, write_study_texts

SRC = Path(__file__).resolve().parents[1] / "src"

STUDY = """[study]
name = "tiny"
store = "tiny.db"

[checkpoints]
root = "suite"

[[eval_sets]]
name = "heldout"
source = "eval.txt"
n_docs = 4

[calibration]
source = "train.txt"
n_samples = 2
seq_len = 16

[[methods]]
method = "rtn"
bits = [4]
group_size = 32
"""

SUITE = """[suite]
name = "s"
corpus = "corpus"
seq_len = 16
batch_size = 2
steps = 4

[[models]]
name = "h16-l1"
hidden = 16
layers = 1
heads = 2
lr = 3e-3
"""

#: study files with one mistake each: name -> (text replaced, replacement)
STUDY_EDITS = {
    "stor": ('store = "tiny.db"', 'stor = "x.db"'),
    "step": ('root = "suite"', 'root = "suite"\nstep = [64]'),
    "ndocs": ("n_docs = 4", "ndocs = 2"),
    "nsamples": ("n_samples = 2", "nsamples = 4"),
    "ndocs0": ("n_docs = 4", "n_docs = 0"),
    "bits0": ("bits = [4]", "bits = [0]"),
    "nomethod": ('method = "rtn"', 'method = "rnt"'),
    "badtoml": ('name = "tiny"', 'name = "tiny'),
    "noeval": ('source = "eval.txt"', 'source = "no-such-eval.txt"'),
    "nosuite": ('root = "suite"', 'root = "no-such-suite"'),
    "section": ("[calibration]", "[calibraton]"),
    "pickle": ('root = "suite"', 'root = "pickle-suite"'),
    "trunc": ('root = "suite"', 'root = "trunc-suite"'),
    "badcfg": ('root = "suite"', 'root = "badcfg-suite"'),
    "gsize": ("group_size = 32", "group_size = -3"),
    "scoring": ("group_size = 32", "group_size = 32\n\n[scoring]\nbootstrap = -1"),
}

#: suite files with one mistake each
SUITE_EDITS = {
    "stpes": ("steps = 4", "stpes = 4"),
    "badtoml": ('name = "s"', 'name = s'),
    "hidden": ("hidden = 16", "hidden = 0"),
    "lr": ("lr = 3e-3", "lr = -1"),
    "layer": ("layers = 1", "layer = 1"),
}


def _step(suite: Path) -> Path:
    return suite / "m1" / "step4"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """The module's fixture folder (see the module docstring); built once, never changed by a case."""
    root = tmp_path_factory.mktemp("matrix")
    make_tiny_checkpoint(root / "suite", hidden=32, layers=1, steps=4, save_steps=[0, 4], model_name="m1",
                         vocab_size=300, seq_len=32, batch_size=4)
    write_study_texts(root, 30, 15)
    (root / "study.toml").write_text(STUDY)
    from qidlab.sweep import load_study, run_study

    run_study(load_study(root / "study.toml"), progress=False)
    # corrupt checkpoints, each a one-model suite and a bare folder
    for name, spoil in (("trunc", _truncate), ("badcfg", _bad_config), ("pickle", _pickle_only)):
        shutil.copytree(root / "suite" / "m1" / "step4", root / f"{name}-suite" / "m1" / "step4")
        spoil(root / f"{name}-suite" / "m1" / "step4")
    for name, (old, new) in STUDY_EDITS.items():
        assert old in STUDY, name
        (root / f"study-{name}.toml").write_text(STUDY.replace(old, new, 1))
    (root / "suite.toml").write_text(SUITE)
    for name, (old, new) in SUITE_EDITS.items():
        assert old in SUITE, name
        (root / f"suite-{name}.toml").write_text(SUITE.replace(old, new, 1))
    _stores(root)
    from test_cli import synthetic_rows, write_csv

    rows = synthetic_rows()
    write_csv(root / "t.csv", rows)
    write_csv(root / "t-zero-n.csv", [{**r, "n_params": 0.0} if i == 3 else r for i, r in enumerate(rows)])
    write_csv(root / "t-text.csv", [{**r, "qid": "abc"} if i == 2 else r for i, r in enumerate(rows)])
    write_csv(root / "t-nan.csv", [{**r, "qid": float("nan")} for r in rows])
    (root / "empty.csv").write_text("")
    (root / "header.csv").write_text("n_params,tokens,bits,qid\n")
    (root / "t.txt").write_text("n_params tokens\n")
    (root / "not-json.json").write_text("{this is not json")
    (root / "a-file").write_text("a file where a folder is expected\n")
    (root / "full").mkdir()
    (root / "full" / "x").write_text("not empty\n")
    (root / "empty-folder").mkdir()
    return root


def _truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _bad_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "gpt_neox", "hidden_size": ')


def _pickle_only(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def _stores(root: Path) -> None:
    """foreign.db (SQLite, not qidlab's), future.db (schema version +1), not-sqlite.db (text)."""
    from qidlab.store import Store
    from qidlab.store.db import SCHEMA_VERSION

    conn = sqlite3.connect(root / "foreign.db")
    with conn:
        conn.execute("CREATE TABLE people (name TEXT, age INTEGER)")
        conn.execute("INSERT INTO people VALUES ('ada', 36)")
    conn.close()
    shutil.copy(root / "tiny.db", root / "future.db")
    Store(root / "future.db").close()  # the copy's own connection (and its WAL) closed
    conn = sqlite3.connect(root / "future.db")
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(int(SCHEMA_VERSION) + 1),))
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    (root / "not-sqlite.db").write_bytes(b"this is not a database, but it is long enough to have a header\n" * 20)


@pytest.fixture(scope="module")
def ro(tmp_path_factory):
    """A folder no file can be created in (see the module docstring)."""
    folder = tmp_path_factory.mktemp("ro")
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root: the mode is not enforced
        folder.chmod(0o755)
        probe = Path("/sys/qidlab-probe")
        try:
            probe.write_text("")
        except OSError:
            yield Path("/sys")
            return
        probe.unlink()
        pytest.skip("no read-only folder on this machine (root, and /sys writable)")
    yield folder
    folder.chmod(0o755)


def snapshot(*folders: Path) -> dict[str, tuple[int, str]]:
    """path -> (size, sha256) of every file and "dir" for every folder under ``folders``."""
    out = {}
    for folder in folders:
        if str(folder) == "/sys":
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_dir():
                out[str(path)] = (0, "dir")
            else:
                data = path.read_bytes()
                out[str(path)] = (len(data), hashlib.sha256(data).hexdigest())
    return out


# ---- the cases --------------------------------------------------------------------------------
# Each: (argv with {fx} = fixture folder, {tmp} = the case's folder, {ro} = a read-only folder;
#        a text the one error line must contain)

C = pytest.param
LAW = ["--law", "ouyang2024"]
OK_SET = ["--set", "n_params=7B", "tokens=1T", "bits=4"]

LAW_CASES = [
    C(["laws", "nosuch"], "unknown law 'nosuch'", id="laws-unknown"),
    C(["fit", "{fx}/t.csv"], "needs --law LAW", id="fit-no-law"),
    C(["fit", "{fx}/t.csv", "--law", "ouyang2042"], "did you mean", id="fit-law-typo"),
    C(["fit", "{fx}/t.csv", *LAW, "--by", "nosuch"], "nosuch", id="fit-by-unknown"),
    C(["fit", "{fx}/missing.csv", *LAW], "missing.csv", id="fit-missing-file"),
    C(["fit", "{fx}/empty.csv", *LAW], "empty.csv", id="fit-empty-file"),
    C(["fit", "{fx}/header.csv", *LAW], "header.csv", id="fit-header-only"),
    C(["fit", "{fx}/t.txt", *LAW], "t.txt", id="fit-unknown-extension"),
    C(["fit", "{fx}/t-text.csv", *LAW], "'abc'", id="fit-text-cell"),
    C(["fit", "{fx}/t-zero-n.csv", *LAW], "n_params", id="fit-zero-n"),
    C(["fit", "{fx}/t-nan.csv", *LAW], "qid is empty (NaN) in all", id="fit-all-nan"),
    C(["fit", "{fx}/t.csv", *LAW, "--bootstrap", "-1"], "--bootstrap", id="fit-negative-bootstrap"),
    C(["fit", "{fx}/t.csv", *LAW, "--bootstrap", "x"], "--bootstrap", id="fit-bootstrap-not-int"),
    C(["fit", "{fx}/t.csv", *LAW, "--resample", "nosuch"], "--resample: no column 'nosuch'", id="fit-resample-unknown"),
    C(["fit", "{fx}/t.csv", *LAW, "--drop-highest", "-1"], "--drop-highest", id="fit-drop-negative"),
    C(["fit", "{fx}/t.csv", *LAW, "--drop-highest", "1000"], "--drop-highest", id="fit-drop-all"),
    C(["fit", "{fx}/t.csv", *LAW, "--target", "nosuch"], "nosuch", id="fit-target-unknown"),
    C(["fit", "{fx}/t.csv", *LAW, "--grid", "alpha"], "--grid expects NAME=VALUE", id="fit-grid-no-equals"),
    C(["fit", "{fx}/t.csv", *LAW, "--grid", "nosuch=1"], "has no parameter 'nosuch'", id="fit-grid-unknown"),
    C(["fit", "{fx}/t.csv", *LAW, "--grid", "alpha=x"], "'x'", id="fit-grid-not-number"),
    C(["fit", "{fx}/t.csv", *LAW, "--where", "nosuch=1"], "nosuch", id="fit-where-unknown-column"),
    C(["fit", "{fx}/t.csv", *LAW, "--where", "tokens>abc"], "abc", id="fit-where-not-number"),
    C(["fit", "{fx}/t.csv", *LAW, "--where", "tokens>1e30"], "tokens>1e30", id="fit-where-no-rows"),
    C(["fit", "{fx}/t.csv", *LAW, "--nonpositive", "floor", "--floor", "-1"], "floor for non-positive targets must be > 0", id="fit-floor-negative"),
    C(["fit", "{fx}/t.csv", *LAW, "--method", "huber", "--huber-delta", "0"], "huber delta must be > 0", id="fit-huber-zero"),
    C(["fit", "{fx}/t.csv", *LAW, "--holdout", "nosuch"], "--holdout: no column 'nosuch'", id="fit-holdout-unknown"),
    C(["fit", "{fx}/t.csv", *LAW, "--out", "{tmp}/no-such-folder/fit.json"], "No such file or directory",
      id="fit-out-missing-folder"),
    C(["fit", "{fx}/t.csv", *LAW, "--out", "{ro}/fit.json"], "fit.json: cannot be written", id="fit-out-read-only"),
    C(["fit", "{fx}/t.csv", *LAW, "--out", "{fx}/empty-folder"], "empty-folder", id="fit-out-folder"),
    C(["fit", "{fx}/t.csv", *LAW, "--out", "{fx}/a-file/fit.json"], "a-file", id="fit-out-under-a-file"),
    C(["fit", "{fx}/foreign.db", *LAW], "not a qidlab store", id="fit-foreign-store"),
    C(["fit", "{fx}/future.db", *LAW], "a newer qidlab wrote it", id="fit-future-store"),
    C(["fit", "{fx}/not-sqlite.db", *LAW], "not-sqlite.db", id="fit-not-sqlite"),
    C(["fit", "{fx}/empty-folder", *LAW], "empty-folder", id="fit-folder-not-dataset"),
    C(["fit", "nosuch-dataset", *LAW], "nosuch-dataset", id="fit-unknown-dataset"),
    C(["predict", *LAW, "--set", "n_params=abc", "tokens=1T", "bits=4"], "n_params='abc'", id="predict-not-number"),
    C(["predict", *LAW, "--set", "n_params", "tokens=1T"], "--set expects NAME=VALUE", id="predict-no-equals"),
    C(["predict", *LAW, *OK_SET, "nosuch=1"], "has no input 'nosuch'", id="predict-unknown-input"),
    C(["predict", "--law", "nosuch", *OK_SET], "unknown law 'nosuch'", id="predict-unknown-law"),
    C(["predict", *LAW, *OK_SET, "--fit", "{fx}/missing.json"], "missing.json", id="predict-fit-missing"),
    C(["predict", *LAW, *OK_SET, "--fit", "{fx}/not-json.json"], "not-json.json", id="predict-fit-not-json"),
    C(["predict", *LAW, *OK_SET, "--constants", "nosuch"], "nosuch", id="predict-constants-unknown"),
    C(["predict", *LAW, "--set", "n_params=-7B", "tokens=1T", "bits=4"], "n_params", id="predict-negative-n"),
    C(["predict", *LAW, "--set", "tokens=1T", "bits=4"], "n_params", id="predict-missing-input"),
    C(["predict", *LAW, "--set", "n_params=1e-300", "tokens=1e12", "bits=4"], "far outside", id="predict-overflow"),
    C(["solve", *LAW, "--set", "n_params=7B", "bits=4", "--for", "nosuch", "--target", "qid=0.2"], "nosuch",
      id="solve-for-unknown"),
    C(["solve", *LAW, "--set", "n_params=7B", "bits=4", "--for", "tokens", "--target", "loss=2"],
      "use --target qid=VALUE", id="solve-wrong-quantity"),
    C(["solve", *LAW, "--set", "n_params=7B", "bits=4", "--for", "tokens", "--target", "qid=abc"], "abc",
      id="solve-target-not-number"),
    C(["solve", *LAW, "--set", "n_params=7B", "bits=4", "--for", "tokens", "--target", "qid=-1"], "qid",
      id="solve-unreachable"),
    C(["table1", *LAW, "--sizes", ","], "--sizes needs at least one value", id="table1-no-sizes"),
    C(["table1", *LAW, "--bits", "abc"], "abc", id="table1-bits-not-number"),
    C(["project", *LAW, "--points", "1"], "--points must be at least 2", id="project-one-point"),
    C(["project", *LAW, "--vocab-size", "1"], "--vocab-size must be at least 2", id="project-vocab"),
    C(["project", *LAW, "--max-tokens", "lots"], "lots", id="project-max-tokens"),
    C(["project", *LAW, "--csv", "{ro}/p.csv"], "p.csv: cannot be written", id="project-csv-read-only"),
    C(["training-level", *LAW, "--set", "n_params=7B", "bits=4", "--qid", "-1"], "qid must be a positive number", id="training-level-neg"),
    C(["training-level", *LAW, "--set", "bits=4", "--qid", "0.1"], "needs --set n_params", id="training-level-no-n"),
    C(["min-bits", *LAW, "--set", "n_params=7B", "tokens=1T", "--budget", "-0.1"], "--budget must be a positive",
      id="min-bits-negative"),
    C(["critical-tokens", *LAW, "--set", "n_params=7B"], "ouyang2024", id="critical-tokens-wrong-law"),
    C(["optimal-format", *LAW, "--bits", "4"], "defined for sun2025", id="optimal-format-wrong-law"),
    C(["optimal-format", "--law", "sun2025", "--bits", "0"], "needs at least 3 bits", id="optimal-format-zero-bits"),
    C(["lwas"], "did you mean laws?", id="command-typo"),
]

STORE_CASES = [
    C(["export", "{fx}/missing.db"], "no such store", id="export-missing"),
    C(["export", "{fx}/foreign.db"], "not a qidlab store", id="export-foreign"),
    C(["export", "{fx}/future.db"], "a newer qidlab wrote it", id="export-future"),
    C(["export", "{fx}/not-sqlite.db"], "not a readable SQLite store", id="export-not-sqlite"),
    C(["export", "{fx}/empty-folder"], "empty-folder", id="export-folder"),
    C(["export", "{fx}/tiny.db", "--format", "parquet"], "--format parquet needs --out", id="export-parquet-no-out"),
    C(["export", "{fx}/tiny.db", "--out", "{ro}/x.csv"], "x.csv: cannot be written", id="export-read-only"),
    C(["export", "{fx}/tiny.db", "--out", "{tmp}/no-such-folder/x.csv"], "no-such-folder", id="export-missing-folder"),
    C(["export", "{fx}/tiny.db", "--out", "{fx}/empty-folder"], "empty-folder", id="export-out-folder"),
    C(["export", "{fx}/tiny.db", "--format", "xlsx"], "invalid choice", id="export-format"),
    C(["store", "merge", "{fx}/foreign.db", "--out", "{tmp}/m.db"], "not a qidlab store", id="merge-foreign"),
    C(["store", "merge", "{fx}/future.db", "--out", "{tmp}/m.db"], "future.db", id="merge-future"),
    C(["store", "merge", "{fx}/missing.db", "--out", "{tmp}/m.db"], "missing.db", id="merge-missing"),
    C(["store", "merge", "{fx}/tiny.db", "--out", "{ro}/m.db"], "cannot open the store for writing", id="merge-read-only"),
    C(["store", "merge", "{fx}/tiny.db", "--out", "{fx}/not-sqlite.db"], "not-sqlite.db", id="merge-into-not-sqlite"),
    C(["store", "merge", "{fx}/tiny.db", "--out", "{fx}/foreign.db"], "not a qidlab store", id="merge-into-foreign"),
    C(["store", "merge", "{fx}/tiny.db", "--out", "{fx}/future.db"], "future.db", id="merge-into-future"),
    C(["store", "mrege", "{fx}/tiny.db"], "did you mean merge?", id="store-action-typo"),
    C(["store", "drop", "{fx}/tiny.db", "--suite", "nosuch", "--models", "m1"], "nosuch", id="drop-unknown-suite"),
    C(["store", "drop", "{fx}/tiny.db", "--suite", "suite", "--models", "m9"], "m9", id="drop-unknown-model"),
    C(["store", "drop", "{fx}/foreign.db", "--suite", "suite", "--models", "m1"], "foreign.db", id="drop-foreign"),
    C(["store", "drop", "{fx}/future.db", "--suite", "suite", "--models", "m1"], "future.db", id="drop-future"),
    C(["store", "drop", "{fx}/missing.db", "--suite", "suite", "--models", "m1"], "missing.db", id="drop-missing"),
    C(["store", "publish", "{fx}/tiny.db", "--name", "Bad Name", "--out", "{tmp}"], "Bad Name",
      id="publish-bad-name"),
    C(["store", "publish", "{fx}/tiny.db", "--name", "n", "--out", "{ro}"], "cannot be written", id="publish-read-only"),
    C(["store", "publish", "{fx}/tiny.db", "--name", "n", "--out", "{fx}/a-file"], "a-file",
      id="publish-out-is-a-file"),
    C(["store", "publish", "{fx}/tiny.db", "--name", "n", "--out", "{tmp}", "--primary", "nosuch=1"], "nosuch",
      id="publish-primary-unknown"),
    C(["store", "publish", "{fx}/future.db", "--name", "n", "--out", "{tmp}"], "future.db", id="publish-future"),
    C(["store", "publish", "{fx}/foreign.db", "--name", "n", "--out", "{tmp}"], "foreign.db", id="publish-foreign"),
]

SWEEP_CASES = [
    C(["sweep", "{fx}/missing.toml"], "missing.toml", id="sweep-missing-file"),
    C(["sweep", "{fx}/empty-folder"], "a folder, not a", id="sweep-folder"),
    C(["sweep", "{fx}/study-badtoml.toml"], "study-badtoml.toml", id="sweep-bad-toml"),
    C(["sweep", "{fx}/study-stor.toml"], "did you mean store?", id="sweep-key-stor"),
    C(["sweep", "{fx}/study-step.toml"], "did you mean steps?", id="sweep-key-step"),
    C(["sweep", "{fx}/study-ndocs.toml"], "did you mean n_docs?", id="sweep-key-ndocs"),
    C(["sweep", "{fx}/study-nsamples.toml"], "did you mean n_samples?", id="sweep-key-nsamples"),
    C(["sweep", "{fx}/study-section.toml"], "calibraton", id="sweep-section-typo"),
    C(["sweep", "{fx}/study-ndocs0.toml"], "n_docs must be a positive integer", id="sweep-ndocs-zero"),
    C(["sweep", "{fx}/study-bits0.toml"], "bits", id="sweep-bits-zero"),
    C(["sweep", "{fx}/study-gsize.toml"], "group_size", id="sweep-group-size-negative"),
    C(["sweep", "{fx}/study-scoring.toml"], "bootstrap must be an integer >= 0", id="sweep-scoring-bootstrap"),
    C(["sweep", "{fx}/study-nomethod.toml"], "rnt", id="sweep-unknown-method"),
    C(["sweep", "{fx}/study-noeval.toml"], "no-such-eval.txt", id="sweep-missing-eval-set"),
    C(["sweep", "{fx}/study-nosuite.toml"], "no-such-suite", id="sweep-missing-suite"),
    C(["sweep", "{fx}/study.toml", "--models", "nosuch"], "no model(s) nosuch", id="sweep-unknown-model"),
    C(["sweep", "{fx}/study.toml", "--store", "{fx}/not-sqlite.db"], "not a readable SQLite store",
      id="sweep-store-not-sqlite"),
    C(["sweep", "{fx}/study.toml", "--store", "{fx}/future.db"], "store schema version", id="sweep-store-future"),
    C(["sweep", "{fx}/study.toml", "--store", "{fx}/foreign.db"], "not a qidlab store", id="sweep-store-foreign"),
    C(["sweep", "{fx}/study.toml", "--store", "{ro}/x.db"], "cannot open the store for writing", id="sweep-store-read-only"),
    C(["sweep", "{fx}/study.toml", "--store", "{fx}/empty-folder"], "a folder, not a store file",
      id="sweep-store-folder"),
    C(["sweep", "{fx}/study.toml", "--slurm-time", "5"], "only with --executor slurm", id="sweep-slurm-flag"),
    C(["sweep", "{fx}/study-pickle.toml", "--store", "{tmp}/p.db"], "[checkpoints] allow_pickle = true",
      id="sweep-pickle-checkpoint"),
    C(["sweep", "{fx}/study-trunc.toml", "--store", "{tmp}/t.db"], "model.safetensors", id="sweep-truncated-weights"),
    C(["sweep", "{fx}/study-badcfg.toml", "--store", "{tmp}/c.db"], "config.json", id="sweep-bad-config-json"),
]

MEASURE_CASES = [
    C(["quantize", "{fx}/trunc-suite/m1/step4", "--method", "rtn", "--bits", "4", "--out", "{tmp}/q"],
      "model.safetensors", id="quantize-truncated-weights"),
    C(["quantize", "{fx}/badcfg-suite/m1/step4", "--method", "rtn", "--bits", "4", "--out", "{tmp}/q"],
      "config.json", id="quantize-bad-config-json"),
    C(["quantize", "{fx}/pickle-suite/m1/step4", "--method", "rtn", "--bits", "4", "--out", "{tmp}/q"],
      "pass --allow-pickle", id="quantize-pickle"),
    C(["quantize", "{fx}/empty-folder", "--method", "rtn", "--bits", "4", "--out", "{tmp}/q"], "config.json",
      id="quantize-not-a-checkpoint"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "nosuch", "--out", "{tmp}/q"], "nosuch",
      id="quantize-unknown-method"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "rtn", "--bits", "0", "--out", "{tmp}/q"], "bits",
      id="quantize-zero-bits"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "rtn", "--bits", "4", "--out", "{ro}/q"], "cannot be written",
      id="quantize-read-only"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "rtn", "--bits", "4", "--out", "{fx}/full"],
      "exists and is not empty", id="quantize-out-not-empty"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "rtn", "--bits", "4", "--out", "{fx}/a-file"], "a-file",
      id="quantize-out-is-a-file"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "gptq", "--bits", "4", "--out", "{tmp}/q"],
      "needs --calibration", id="quantize-gptq-no-calibration"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "rtn", "--bits", "4", "--set", "nosuch=1", "--out",
       "{tmp}/q"], "nosuch", id="quantize-unknown-option"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "rtn", "--bits", "4", "--revision", "main", "--out",
       "{tmp}/q"], "--revision needs a Hub repo id", id="quantize-revision-local"),
    C(["train", "{fx}/missing.toml", "--out", "{tmp}/o"], "missing.toml", id="train-missing-file"),
    C(["train", "{fx}/empty-folder", "--out", "{tmp}/o"], "a folder, not a", id="train-folder"),
    C(["train", "{fx}/suite-badtoml.toml", "--out", "{tmp}/o"], "suite-badtoml.toml", id="train-bad-toml"),
    C(["train", "{fx}/suite-stpes.toml", "--out", "{tmp}/o"], "did you mean steps?", id="train-key-typo"),
    C(["train", "{fx}/suite-layer.toml", "--out", "{tmp}/o"], "did you mean layers?", id="train-model-key-typo"),
    C(["train", "{fx}/suite-hidden.toml", "--out", "{tmp}/o"], "hidden must be a positive integer",
      id="train-hidden-zero"),
    C(["train", "{fx}/suite-lr.toml", "--out", "{tmp}/o"], "lr", id="train-lr-negative"),
    C(["train", "{fx}/suite.toml", "--out", "{tmp}/o", "--models", "nosuch"], "nosuch", id="train-unknown-model"),
    C(["train", "{fx}/suite.toml", "--out", "{tmp}/o"], "corpus", id="train-missing-corpus"),
    C(["train", "{fx}/suite.toml", "--out", "{ro}/o"], "cannot be written", id="train-out-read-only"),
    C(["train", "{fx}/suite.toml", "--out", "{tmp}/o", "--threads", "0"], "--threads: expects a positive integer", id="train-threads-zero"),
    C(["train", "{fx}/suite.toml", "--out", "{tmp}/o", "--device", "tpu"], "tpu", id="train-device-unknown"),
    C(["corpus", "build", "nosuch", "--out", "{tmp}/c"], "nosuch", id="corpus-unknown-recipe"),
    C(["corpus", "build", "files", "--out", "{tmp}/c"], "--files", id="corpus-files-without-files"),
    C(["corpus", "build", "files", "--files", "{fx}/missing.txt", "--out", "{tmp}/c"], "missing.txt",
      id="corpus-missing-file"),
    C(["corpus", "build", "files", "--files", "{fx}/train.txt", "--eval-fraction", "2", "--out", "{tmp}/c"],
      "--eval-fraction must be in [0, 1]", id="corpus-eval-fraction"),
    C(["corpus", "build", "files", "--files", "{fx}/train.txt", "--out", "{ro}/c"], "cannot be written", id="corpus-read-only"),
    C(["corpus", "biuld", "files"], "did you mean build?", id="corpus-action-typo"),
]

SHOW_CASES = [
    C(["plot", "nosuch", "{fx}/tiny.db", "--out", "{tmp}/x.png"], "nosuch", id="plot-unknown-figure"),
    C(["plot", "fig2", "{fx}/tiny.db", "--out", "{tmp}/x.txt"], "x.txt", id="plot-bad-extension"),
    C(["plot", "fig2", "{fx}/future.db", "--out", "{tmp}/x.png"], "a newer qidlab wrote it", id="plot-future"),
    C(["plot", "fig2", "{fx}/foreign.db", "--out", "{tmp}/x.png"], "not a qidlab store", id="plot-foreign"),
    C(["plot", "fig2", "{fx}/tiny.db", "--out", "{tmp}/x.png", "--dpi", "1"], "--dpi must be at least 10",
      id="plot-dpi"),
    C(["plot", "fig2", "{fx}/tiny.db", "--out", "{ro}/x.png"], "x.png: cannot be written", id="plot-read-only"),
    C(["plot", "fig2", "{fx}/tiny.db"], "plot needs NAME STORE --out FILE", id="plot-no-out"),
    C(["plot", "fig2", "{fx}/tiny.db", "--out", "{tmp}/x.png", "--sizes", "huge"], "huge", id="plot-sizes"),
    C(["report", "{fx}/foreign.db", "--out", "{tmp}/r"], "not a qidlab store", id="report-foreign"),
    C(["report", "{fx}/future.db", "--out", "{tmp}/r"], "a newer qidlab wrote it", id="report-future"),
    C(["report", "{fx}/tiny.db", "--out", "{ro}/r"], "cannot be written", id="report-read-only"),
    C(["report", "{fx}/tiny.db", "--out", "{tmp}/r", "--eval-set", "nosuch"], "nosuch", id="report-eval-set"),
    C(["report", "{fx}/tiny.db", "--out", "{tmp}/r", "--method", "nosuch"], "nosuch", id="report-method"),
    C(["demo", "--out", "{fx}/a-file"], "a-file", id="demo-out-is-a-file"),
    C(["demo", "--out", "{tmp}/d", "--threads", "0"], "--threads: expects a positive integer", id="demo-threads-zero"),
    C(["demo", "--out", "{tmp}/d", "--scale", "huge"], "invalid choice", id="demo-scale"),
    C(["tour", "--out", "{fx}/a-file"], "a-file", id="tour-out-is-a-file"),
]

CASES = LAW_CASES + STORE_CASES + SWEEP_CASES + MEASURE_CASES + SHOW_CASES


def _argv(argv, fx, tmp, ro):
    return [a.format(fx=fx, tmp=tmp, ro=ro) for a in argv]


@pytest.mark.parametrize("argv, expect", CASES)
def test_bad_input(argv, expect, fx, ro, tmp_path, capsys):
    """Exit 2, one line on stderr containing ``expect``, nothing on stdout, nothing written."""
    from qidlab.cli import main

    argv = _argv(argv, fx, tmp_path, ro)
    before = snapshot(fx, tmp_path, ro)
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err, (status, err)
    assert len(lines) == 1 and out == "", (out, err)
    assert expect in lines[0], lines[0]
    assert re.match(r"qidlab( [a-z-]+)*: error: ", lines[0]), lines[0]
    assert snapshot(fx, tmp_path, ro) == before


def test_the_matrix_has_over_90_cases():
    assert len(CASES) + len(FULL_DISK) >= 90


# ---- a full disk (simulated with RLIMIT_FSIZE, see the module docstring) ---------------------------

FULL_DISK = [
    C(["sweep", "{fx}/study.toml", "--store", "{tmp}/new.db", "--quiet"], 20_000, "new.db", id="sweep-new-store"),
    C(["export", "{fx}/tiny.db", "--out", "{tmp}/x.csv"], 200, "x.csv", id="export-csv"),
    C(["fit", "{fx}/t.csv", "--law", "ouyang2024", "--out", "{tmp}/fit.json"], 500, "fit.json", id="fit-out"),
    C(["store", "merge", "{fx}/tiny.db", "--out", "{tmp}/m.db"], 20_000, "m.db", id="merge-new-store"),
    C(["store", "publish", "{fx}/tiny.db", "--name", "n", "--out", "{tmp}"], 1_000, "File too large",
      id="publish"),
    C(["quantize", "{fx}/suite/m1/step4", "--method", "rtn", "--bits", "4", "--out", "{tmp}/q"], 20_000,
      "File too large", id="quantize"),
    C(["project", "--law", "ouyang2024", "--csv", "{tmp}/p.csv"], 500, "p.csv", id="project-csv"),
]


def run_limited(argv, cwd: Path, limit: int) -> subprocess.CompletedProcess:
    """``python -m qidlab *argv`` with files limited to ``limit`` bytes (SIGXFSZ ignored: EFBIG)."""

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "qidlab", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=limited, timeout=300)


@pytest.mark.parametrize("argv, limit, expect", FULL_DISK)
def test_a_full_disk(argv, limit, expect, fx, tmp_path):
    """Disk full (defect 4): one line, and no file left behind: no store without tables, no WAL,
    no half-written output."""
    argv = _argv(argv, fx, tmp_path, "")
    before = snapshot(fx, tmp_path)
    done = run_limited(argv, tmp_path, limit)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, (done.returncode, done.stderr)
    assert len(lines) == 1 and expect in lines[0], done.stderr
    assert snapshot(fx, tmp_path) == before


def test_no_wal_or_shm_is_left_after_commands(fx, tmp_path, capsys):
    """A sweep, an export and a fit of its store leave the store alone: no ``-wal``/``-shm`` beside it."""
    from qidlab.cli import main

    assert not list(fx.glob("*.db-*"))  # after the fixture's sweep
    assert main(["export", str(fx / "tiny.db"), "--out", str(tmp_path / "x.csv")]) == 0
    assert main(["fit", str(fx / "tiny.db"), "--law", "ouyang2024", "--holdout", ""]) in (0, 2)
    assert main(["store", "merge", str(fx / "tiny.db"), "--out", str(tmp_path / "m.db")]) == 0
    capsys.readouterr()
    assert not list(fx.glob("*.db-*")) and not list(tmp_path.glob("*.db-*"))


def test_a_step_folder_without_config_json_gets_a_note(fx, tmp_path, capsys):
    """Defect 13: a suite's step folder without config.json was skipped with no notice."""
    from qidlab.checkpoints import discover

    shutil.copytree(fx / "suite", tmp_path / "suite")
    (tmp_path / "suite" / "m1" / "step8").mkdir()  # e.g. a copy cut short
    capsys.readouterr()
    refs = discover(tmp_path / "suite")
    assert [r.step for r in refs] == [0, 4]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"qidlab: note: {tmp_path / 'suite' / 'm1' / 'step8'} has no config.json: skipped"]


def test_idle_cores_is_between_one_and_the_usable_cores():
    from qidlab.torchenv import idle_cores

    assert 1 <= idle_cores() <= len(os.sched_getaffinity(0))
