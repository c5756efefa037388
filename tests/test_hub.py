"""Hub checkpoints in a study (issue 13): a Hugging Face cache in the real layout, read offline.

The cache is built as huggingface_hub writes it (``models--ORG--NAME/refs/<revision>`` holding a
commit hash, ``snapshots/<commit>/<file>`` symlinked to ``blobs/<sha256>``), holding tiny GPT-NeoX
checkpoints, and every test runs the real code path (``snapshot_download``, ``scan_cache_dir``)
with ``HF_HUB_OFFLINE=1``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
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
    assert (table["path"] == "hf://" + table["suite"] + "@step" + table["step"].astype(str)).all()  # in exports
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


# ---------------------------------------------------------------------------
# bad input: one line naming repo / revision and what to do, exit 2, no store


def sweep_error(capsys, path: Path) -> str:
    capsys.readouterr()
    assert main(["sweep", str(path), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert not (path.parent / "hub.db").exists()  # nothing written
    return err.strip().removeprefix("qidlab: error: ")


BAD = [
    (('repos = ["tiny-org/neox-a", "tiny-org/neox-b"]', 'repos = ["tiny-org/neox-a", "tiny-org/nope"]'),
     "tiny-org/nope: not in the Hugging Face cache and HF_HUB_OFFLINE=1: download it online first"),
    (("steps = [20, 40, 60]", "steps = [20, 80]"),
     "tiny-org/neox-a@step80: revision 'step80' is not in the offline cache: download it with HF_HUB_OFFLINE unset"),
    (('revision = "step{step}"\nsteps = [20, 40, 60]',
      'revisions = ["step20", "step40"]\ntokens_from_revision = "tokens(\\\\d+)B"'),
     "revision 'step20': tokens_from_revision 'tokens(\\\\d+)B' matches nothing"),
    (("[checkpoints]", '[checkpoints]\nroot = "suite"'), "[checkpoints] has both 'root' and 'repos'"),
    (('revision = "step{step}"', 'revision = "main"'), "revision must contain {step}"),
    (('repos = ["tiny-org/neox-a", "tiny-org/neox-b"]', 'root = "suite"'),
     "[checkpoints] keep, revision, tokens_per_step only with 'repos' (Hub checkpoints), not with 'root'"),
]


@pytest.mark.parametrize("edit, message", BAD, ids=["unknown-repo", "missing-revision", "pattern", "root-and-repos",
                                                    "template", "hub-keys-with-root"])
def test_bad_hub_input_is_one_line(hub_source, hub_cache, tmp_path, capsys, edit, message):
    path = write_study(hub_source, tmp_path, STUDY.replace(*edit))
    assert message in sweep_error(capsys, path)


def test_gated_repo_without_a_token_is_one_line(hub_source, hub_cache, tmp_path, capsys, monkeypatch):
    """Online (the Hub mocked at auth_check): huggingface_hub's GatedRepoError names the repo and HF_TOKEN."""
    import importlib

    from huggingface_hub import HfApi, constants, errors
    from huggingface_hub.errors import GatedRepoError

    httpx = importlib.import_module(errors.Response.__module__.partition(".")[0])  # httpx (or httpx2)

    def gated(self, repo_id, **kw):
        response = httpx.Response(401, request=httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        raise GatedRepoError(f"Access to model {repo_id} is restricted.", response=response)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "auth_check", gated)
    message = sweep_error(capsys, write_study(hub_source, tmp_path))
    assert message == ("tiny-org/neox-a is gated: accept its terms on https://huggingface.co/tiny-org/neox-a and set "
                       "HF_TOKEN (or run `hf auth login`)")


def test_revisions_with_tokens_in_their_names():
    """OLMo-2's form: D from the name (tokens(\\d+)B x 1e9), the step from step<N>."""
    from qidlab.checkpoints.hub import named_revisions

    revs = named_revisions(["stage1-step1000-tokens5B", "stage1-step10000-tokens42B"], r"tokens(\d+)B", 1e9)
    assert [(r.step, r.tokens) for r in revs] == [(1000, 5_000_000_000), (10000, 42_000_000_000)]
    with pytest.raises(QidlabError, match="'main'"):
        named_revisions(["stage1-step1000-tokens5B", "main"], r"tokens(\d+)B", 1e9)


def test_dry_run_lists_the_plan_and_writes_nothing(hub_source, hub_cache, tmp_path, capsys):
    """Two cached repos x (two cached revisions + one missing): offline, the missing one is listed with
    its size unknown; no store is created."""
    path = write_study(hub_source, tmp_path, STUDY.replace("steps = [20, 40, 60]", "steps = [20, 60, 80]"))
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "hub.db").exists()
    assert out.splitlines()[0].startswith("6 checkpoints x 2 configs")
    assert "= 12 measurements; 0 already in" in out
    assert "hf://tiny-org/neox-b@step80 (to download, size unknown offline)" in out
    assert "hf://tiny-org/neox-a@step20 (cached, " in out
    assert "download: 2 revisions, 0 B + 2 of size unknown offline" in out


def test_dry_run_counts_what_the_store_holds(hub_source, hub_cache, tmp_path, capsys, one_thread):
    text = STUDY.replace('repos = ["tiny-org/neox-a", "tiny-org/neox-b"]', 'repos = ["tiny-org/neox-a"]')
    path = write_study(hub_source, tmp_path, text.replace("steps = [20, 40, 60]", "steps = [20]"))
    run_study(load_study(path), progress=False)
    path.write_text(path.read_text().replace("steps = [20]", "steps = [20, 40]"))
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["total"], doc["to_measure"]) == (4, 2)
    assert {c["step"]: (c["stored"], c["todo"]) for c in doc["checkpoints"]} == {20: (2, 0), 40: (0, 2)}


def test_quantize_a_hub_revision(hub_cache, tmp_path, capsys, monkeypatch, one_thread):
    """``qidlab quantize ORG/NAME --revision R`` reads the cached snapshot and records hf://REPO@R."""
    monkeypatch.chdir(tmp_path)  # "tiny-org/neox-a" is no path here
    out = tmp_path / "q"
    assert main(["quantize", "tiny-org/neox-a", "--revision", "step40", "--method", "rtn", "--bits", "4",
                 "--group-size", "32", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["checkpoint"] == "hf://tiny-org/neox-a@step40"
    assert json.loads((out / "qidlab-quantization.json").read_text())["source"] == "hf://tiny-org/neox-a@step40"
    assert main(["quantize", "tiny-org/neox-a", "--revision", "step99", "--method", "rtn", "--bits", "4",
                 "--out", str(tmp_path / "r")]) == 2
    assert "revision 'step99' is not in the offline cache" in capsys.readouterr().err


def test_dry_run_of_a_local_suite(hub_source, tmp_path, capsys):
    """A local suite (the same checkpoints as folders): no download column, nothing written."""
    hub_section = STUDY[STUDY.index("[checkpoints]"):STUDY.index("[[eval_sets]]")]
    local = STUDY.replace(hub_section, f'[checkpoints]\nroot = "{hub_source / "suite"}"\n\n')
    path = write_study(hub_source, tmp_path, local)
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 checkpoints x 2 configs") and "download" not in out and "hf://" not in out
    assert not (tmp_path / "hub.db").exists()


def test_environment_variables_reach_huggingface_hub(hub_source, hub_cache, tmp_path):
    """HF_HUB_CACHE and HF_HUB_OFFLINE as a user sets them (a fresh process, nothing patched)."""
    path = write_study(hub_source, tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "qidlab", "sweep", str(path), "--dry-run", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [c["cached"] for c in doc["checkpoints"]] == [True] * 6
    assert not (tmp_path / "hub.db").exists()


def test_online_checks_name_a_missing_revision_and_size_the_download(hub_source, hub_cache, tmp_path, capsys,
                                                                      monkeypatch):
    """Online (the Hub's answers mocked): a revision that is no branch or tag stops the sweep before any
    store; the dry run sizes an uncached revision from model_info's files that a model needs."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi, constants

    branches = [SimpleNamespace(name=f"step{s}") for s in STEPS] + [SimpleNamespace(name="main")]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "auth_check", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "list_repo_refs", lambda self, repo_id, **kw: SimpleNamespace(branches=branches, tags=[]))
    files = [SimpleNamespace(rfilename=n, size=b) for n, b in
             (("config.json", 600), ("model.safetensors", 10**9), ("pytorch_model.bin", 2 * 10**9), ("README.md", 9))]
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kw: SimpleNamespace(siblings=files))
    path = write_study(hub_source, tmp_path, STUDY.replace("steps = [20, 40, 60]", "steps = [20, 90]"))
    assert "tiny-org/neox-a has no revision 'step90'" in sweep_error(capsys, path)
    branches.append(SimpleNamespace(name="step90"))
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    sizes = {(c["suite"], c["step"]): (c["cached"], c["download_bytes"]) for c in doc["checkpoints"]}
    assert sizes[("tiny-org/neox-b", 90)] == (False, 10**9 + 600)  # no pickle, no README
    assert sizes[("tiny-org/neox-b", 20)][0] is True
    # allow_pickle: pickled weights only where a revision has no safetensors (never both downloaded)
    path.write_text(path.read_text().replace("allow_pickle = false", "allow_pickle = true"))
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {c["download_bytes"] for c in doc["checkpoints"] if c["step"] == 90} == {10**9 + 600}
    files[1] = SimpleNamespace(rfilename="README.bin", size=5)  # now pickles only
    assert main(["sweep", str(path), "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {c["download_bytes"] for c in doc["checkpoints"] if c["step"] == 90} == {2 * 10**9 + 600}


def test_load_checkpoint_reads_a_hub_location(hub_source, hub_cache, one_thread):
    """``load_checkpoint("hf://REPO@REVISION")`` and a Hub ``CheckpointRef`` resolve through the cache:
    the same weights (content hash) as the folder they were cached from, the step from the revision."""
    from qidlab.checkpoints import load_checkpoint
    from qidlab.checkpoints.hub import hub_refs, step_revisions

    local = load_checkpoint(hub_source / "suite" / "neox-a" / "step40")
    ckpt = load_checkpoint("hf://tiny-org/neox-a@step40")
    assert ckpt.content_hash == local.content_hash and ckpt.step == 40
    assert ckpt.path.parent.name == "snapshots" and ckpt.path.is_relative_to(hub_cache)
    ref = hub_refs(["tiny-org/neox-b"], step_revisions("step{step}", [60], TOKENS_PER_STEP))[0]
    other = load_checkpoint(ref)
    assert (other.step, other.tokens) == (60, 60 * TOKENS_PER_STEP)
    assert other.content_hash == load_checkpoint(hub_source / "suite" / "neox-b" / "step60").content_hash
    with pytest.raises(QidlabError, match="revision 'step99' is not in the offline cache"):
        load_checkpoint("hf://tiny-org/neox-a@step99")
