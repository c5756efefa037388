"""Hub checkpoints in a study (issue 13): a Hugging Face cache in the real layout, read offline.

The cache is built as huggingface_hub writes it (``models--ORG--NAME/refs/<revision>`` holding a
commit hash, ``snapshots/<commit>/<file>`` symlinked to ``blobs/<sha256>``), holding tiny GPT-NeoX
checkpoints, and every test runs the real code path (``snapshot_download``, ``scan_cache_dir``)
with ``HF_HUB_OFFLINE=1``."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from tiny_models import make_tiny_checkpoint, tiny_corpus

from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.store import read_canonical
from qidlab.sweep import load_study, run_study

REPOS = ("tiny-org/neox-a", "tiny-org/neox-b")
STEPS = (20, 40, 60)
TOKENS_PER_STEP = 1000

STUDY = """
[study]
name = "hub"
store = "hub.db"

[checkpoints]
repos = ["tiny-org/neox-a", "tiny-org/neox-b"]
revision = "step{step}"
steps = [20, 40, 60]
tokens_per_step = 1000
allow_pickle = false
keep = true

[[eval_sets]]
name = "heldout"
source = "EVAL"
n_docs = 6

[[methods]]
method = "rtn"
bits = 4
group_size = 32

[scoring]
bootstrap = 50
"""


def add_revision(cache: Path, repo: str, revision: str, folder: Path) -> str:
    """Put the files of ``folder`` into ``cache`` as huggingface_hub does for ``repo`` at ``revision``;
    return the commit hash (qidlab.json left out: a Hub repo has none)."""
    base = cache / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / revision).write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (base / "blobs").mkdir(exist_ok=True)
    for f in sorted(folder.iterdir()):
        if f.name == "qidlab.json":
            continue
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        if not (base / "blobs" / sha).exists():
            shutil.copyfile(f, base / "blobs" / sha)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / sha)
    return commit


@pytest.fixture(scope="module")
def hub_source(tmp_path_factory):
    """Two tiny GPT-NeoX trajectories (steps 20, 40, 60) and an eval text."""
    root = tmp_path_factory.mktemp("hubsrc")
    for i, repo in enumerate(REPOS):
        make_tiny_checkpoint(root / "suite", steps=STEPS[-1], save_steps=list(STEPS), seed=i, hidden=32,
                             model_name=repo.rpartition("/")[2])
    (root / "eval.txt").write_text("\n\n".join(tiny_corpus(12, seed=1)))
    return root


@pytest.fixture
def hub_cache(hub_source, tmp_path, monkeypatch):
    """A fresh offline cache holding both repos at the three revisions; HF_HUB_CACHE points there."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    for repo in REPOS:
        for step in STEPS:
            add_revision(cache, repo, f"step{step}", hub_source / "suite" / repo.rpartition("/")[2] / f"step{step}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # huggingface_hub reads the environment on import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def write_study(hub_source, tmp_path, text=STUDY) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text.replace("EVAL", str(hub_source / "eval.txt")))
    return path


def test_study_over_two_repos_and_three_revisions_sweeps_offline(hub_source, hub_cache, tmp_path, one_thread):
    study = load_study(write_study(hub_source, tmp_path))
    summary = run_study(study, progress=False)
    assert summary.failed == [] and summary.measured == 2 * 3 * 2  # (16-bit + rtn) x 1 eval set
    table = read_canonical(study.store)
    assert sorted(set(table["suite"])) == list(REPOS)
    assert sorted(set(table["model"])) == ["neox-a", "neox-b"]
    assert (table["tokens"] == table["step"] * TOKENS_PER_STEP).all()
    with sqlite3.connect(study.store) as conn:
        rows = conn.execute("SELECT suite, model, step, path, tokens FROM checkpoints").fetchall()
    assert sorted(rows) == [(repo, repo.rpartition("/")[2], s, f"hf://{repo}@step{s}", s * TOKENS_PER_STEP)
                            for repo in REPOS for s in STEPS]
    assert run_study(study, progress=False).measured == 0  # resumed: nothing left


def test_keep_false_deletes_the_measured_revisions_only(hub_source, hub_cache, tmp_path, one_thread):
    from huggingface_hub import scan_cache_dir

    text = STUDY.replace("keep = true", "keep = false").replace('repos = ["tiny-org/neox-a", "tiny-org/neox-b"]',
                                                                 'repos = ["tiny-org/neox-a"]')
    text = text.replace("steps = [20, 40, 60]", "steps = [20, 60]")
    study = load_study(write_study(hub_source, tmp_path, text))
    summary = run_study(study, progress=False)
    assert summary.failed == [] and summary.measured == 2 * 2
    cached = {(repo.repo_id, ref) for repo in scan_cache_dir(hub_cache).repos for rev in repo.revisions
              for ref in rev.refs}
    assert cached == {("tiny-org/neox-a", "step40"), *((REPOS[1], f"step{s}") for s in STEPS)}
    blobs = {p.name for p in (hub_cache / "models--tiny-org--neox-a" / "blobs").iterdir()}
    snap40 = next((hub_cache / "models--tiny-org--neox-a" / "snapshots").iterdir())
    assert blobs == {os.readlink(f).rpartition("/")[2] for f in snap40.iterdir()}  # step40's files only
