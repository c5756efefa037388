"""campaign/keep_whole_store.py on a real tiny store: the gzip parts joined, rechecked from their
per-document losses, committed to the whole-stores branch of a scratch git repository (file,
SHA256SUMS, README row) without touching its working tree, and the sha256 line written to the
results folder; a tampered store, a name already kept and missing parts are refused with exit 2."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from tiny_models import make_tiny_checkpoint, write_study_texts

from qidlab.sweep import load_study, run_study

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

STUDY = """
[study]
name = "keep"
store = "keep.db"

[checkpoints]
root = "suite"

[[eval_sets]]
name = "heldout"
source = "eval.txt"
n_docs = 8

[calibration]
source = "train.txt"
n_samples = 4
seq_len = 32

[[methods]]
method = "rtn"
bits = [2, 4]
group_size = 32

[scoring]
bootstrap = 50
"""


def _module():
    spec = importlib.util.spec_from_file_location("keep_whole_store", REPO / "campaign" / "keep_whole_store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A measured tiny store, gzipped and split in two parts as campaign/job.sh returns it."""
    root = tmp_path_factory.mktemp("keep")
    make_tiny_checkpoint(root / "suite", steps=60, save_steps=[60], model_name="m64")
    write_study_texts(root, 40, 20, seed=2)
    (root / "study.toml").write_text(STUDY)
    run_study(load_study(root / "study.toml"), progress=False)
    data = gzip.compress((root / "keep.db").read_bytes())
    out = root / "files"
    out.mkdir()
    half = len(data) // 2
    (out / "store.db.gz.part-00").write_bytes(data[:half])
    (out / "store.db.gz.part-01").write_bytes(data[half:])
    return out


@pytest.fixture
def repo(tmp_path):
    """A scratch repository on main with an orphan whole-stores branch (README table, SHA256SUMS)."""
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q", "-b", "main")
    _git(r, "config", "user.email", "t@example.org")
    _git(r, "config", "user.name", "t")
    (r / "a.txt").write_text("main\n")
    _git(r, "add", "a.txt")
    _git(r, "commit", "-qm", "main")
    _git(r, "checkout", "-q", "--orphan", "campaign2-stores")
    _git(r, "rm", "-rfq", ".")
    (r / "README.md").write_text("# stores\n\n| file | what | measurements |\n|---|---|---|\n| old.db.gz | old | 1 |\n\nfooter\n")
    (r / "SHA256SUMS").write_text(f"{'0' * 64}  old.db.gz\n")
    (r / "old.db.gz").write_bytes(b"x")
    _git(r, "add", ".")
    _git(r, "commit", "-qm", "stores")
    _git(r, "checkout", "-q", "main")
    (r / "results").mkdir()
    return r


def test_it_keeps_a_rechecked_store_on_the_branch(parts, repo):
    keep = _module()
    before = _git(repo, "rev-parse", "campaign2-stores").strip()
    assert keep.main([str(parts), "c2-s9-call1-whole.db.gz", str(repo / "results"), "--what", "a test store",
                      "--repo", str(repo)]) == 0
    joined = b"".join(p.read_bytes() for p in sorted(parts.iterdir()))
    digest = hashlib.sha256(joined).hexdigest()
    assert (repo / "results" / "whole-stores.sha256").read_text() == f"{digest}  c2-s9-call1-whole.db.gz\n"
    assert _git(repo, "rev-parse", "campaign2-stores~1").strip() == before  # one commit on top
    assert _git(repo, "show", "campaign2-stores:SHA256SUMS").splitlines()[-1] == f"{digest}  c2-s9-call1-whole.db.gz"
    readme = _git(repo, "show", "campaign2-stores:README.md").splitlines()
    assert readme[readme.index("| old.db.gz | old | 1 |") + 1] == "| c2-s9-call1-whole.db.gz | a test store | 3 |"
    assert readme[-1] == "footer"
    stored = subprocess.run(["git", "show", "campaign2-stores:c2-s9-call1-whole.db.gz"], cwd=repo, check=True,
                            capture_output=True).stdout
    assert stored == joined and "old.db.gz" in _git(repo, "ls-tree", "--name-only", "campaign2-stores")
    assert _git(repo, "status", "--porcelain") == "?? results/\n" and _git(repo, "branch", "--show-current") == "main\n"
    # the same name again: refused, nothing written
    assert keep.main([str(parts), "c2-s9-call1-whole.db.gz", str(repo / "results"), "--what", "again",
                      "--repo", str(repo)]) == 2
    assert len((repo / "results" / "whole-stores.sha256").read_text().splitlines()) == 1


def test_a_store_whose_qid_does_not_recompute_is_refused(parts, repo, tmp_path, capsys):
    db = tmp_path / "bad.db"
    db.write_bytes(gzip.decompress(b"".join(p.read_bytes() for p in sorted(parts.iterdir()))))
    con = sqlite3.connect(db)
    con.execute("UPDATE measurements SET qid = qid + 1 WHERE method = 'rtn'")
    con.commit()
    con.close()
    bad = tmp_path / "badparts"
    bad.mkdir()
    (bad / "store.db.gz.part-00").write_bytes(gzip.compress(db.read_bytes()))
    before = _git(repo, "rev-parse", "campaign2-stores")
    keep = _module()
    assert keep.main([str(bad), "c2-s9-bad.db.gz", str(repo / "results"), "--what", "x", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ from their recomputation" in err[0] and "not kept" in err[0]
    assert _git(repo, "rev-parse", "campaign2-stores") == before
    assert not (repo / "results" / "whole-stores.sha256").exists()
    assert keep.main([str(tmp_path), "c2-s9-none.db.gz", str(repo / "results"), "--what", "x", "--repo", str(repo)]) == 2
    assert "no store.db.gz.part-*" in capsys.readouterr().err
    assert keep.main([str(parts), "c2-s9.db", str(repo / "results"), "--what", "x", "--repo", str(repo)]) == 2
    assert "must be a file name ending in .db.gz" in capsys.readouterr().err
    assert keep.main([str(parts), "c2-s9.db.gz", str(repo / "nowhere"), "--what", "x", "--repo", str(repo)]) == 2
    assert "no such results folder" in capsys.readouterr().err and not (repo / "nowhere").exists()
    assert _git(repo, "rev-parse", "campaign2-stores") == before
