"""A suite manifest's per-model ``run`` (which training run, e.g. the seed) reaches the store's
checkpoints and the canonical table, where a fit's bootstrap uses it to tell repeated trainings apart."""

import shutil

from test_sweep import _copy_study, suite  # noqa: F401  (the module-scoped tiny suite)

from qidlab.laws.fit import cluster_columns
from qidlab.store import read_canonical
from qidlab.sweep import load_study, run_study

ONE_METHOD = """
[study]
name = "tiny"
store = "tiny.db"

[checkpoints]
root = "suite"

[[eval_sets]]
name = "heldout"
source = "eval.txt"
n_docs = 4

[[methods]]
method = "rtn"
bits = 2
group_size = 32

[scoring]
bootstrap = 20
"""


def test_a_manifest_run_is_stored_and_exported(suite, tmp_path):  # noqa: F811
    copy = tmp_path / "copy"
    shutil.copytree(suite, copy)
    manifest = copy / "suite" / "qidlab-suite.toml"
    before = manifest.read_text() if manifest.exists() else ""
    manifest.write_text(before + '\n[models.m64]\nrun = "seed7"\n')
    summary = run_study(load_study(_copy_study(copy, tmp_path, ONE_METHOD)), progress=False)
    assert summary.failed == []
    table = read_canonical(tmp_path / "tiny.db")
    assert len(table) == 2 and set(table["run"]) == {"seed7"}
    assert cluster_columns(table) == ["suite", "model", "run"]
