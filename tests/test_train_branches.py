"""qidlab.train's Campaign 2 pieces: seed runs, WSD cooldown branches, LAWA weight averages, lr_of
(train/branches.py, train/averaging.py), and the CPU dry run of campaign/campaign2-dryrun.plan
through campaign/job.sh (train, then sweep every folder of each model)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_models import single_thread, tiny_corpus, tiny_corpus_folder

from qidlab.checkpoints import discover, read_manifest
from qidlab.corpus import build_corpus
from qidlab.errors import QidlabError
from qidlab.train import folders_of, load_suite_config, train_suite
from qidlab.train.branches import log_spaced, plan_branches, run_sequences, BranchSpec
from qidlab.train.schedule import branch_multiplier, lr_multiplier

REPO = Path(__file__).resolve().parents[1]
SUITE = """
[suite]
name = "c2"
corpus = "corpus"
tokenizer = 384
seq_len = 64
batch_size = 8
steps = 40
schedule = "wsd"
warmup = 2
checkpoints = {{ log_spaced_until = 4, every = 16 }}

[[models]]
name = "h32-l1"
hidden = 32
layers = 1
heads = 4
lr = 3e-3
{extra}
"""
BRANCHES = 'branches = { points = 3, first = 8, average = 3, average_span = 0.25 }'
# 8, 16, 32 (log-spaced to the last stable step, 32); cooldowns of round(0.15 b) = 1, 2, 5 steps
POINTS = {8: 9, 16: 18, 32: 37}


def write(folder: Path, extra: str = "", name: str = "suite.toml") -> Path:
    path = folder / name
    path.write_text(SUITE.format(extra=extra))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("branches")
    tiny_corpus_folder(root)
    return root


def _weights(step_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(step_dir / "model.safetensors"))


def _meta(step_dir: Path) -> dict:
    return json.loads((step_dir / "qidlab.json").read_text())


@pytest.fixture(scope="module")
def trained(workdir):
    events = []
    with single_thread():
        paths = train_suite(write(workdir, f"seeds = [1]\n{BRANCHES}"), workdir / "out", threads=1,
                            on_step=lambda e: events.append((e["model"], e["step"], e["lr"], e["batch"].clone())))
    return workdir / "out" / "c2", paths, events


# ---- pure pieces -----------------------------------------------------------------------------------

def test_branch_decays_linearly_from_the_peak_to_zero_at_its_end():
    assert branch_multiplier(32, start=32, length=5) == 1.0
    assert branch_multiplier(36, start=32, length=5) == pytest.approx(0.2)
    assert branch_multiplier(37, start=32, length=5) == 0.0
    assert log_spaced(8, 32, 3) == [8, 16, 32] and log_spaced(10, 1000, 5) == [10, 32, 100, 316, 1000]


def test_branch_points_lie_in_the_stable_phase_and_averages_after_warmup():
    plan = plan_branches(BranchSpec(points=3, first=8, average=3, average_span=0.25), schedule="wsd", steps=40,
                         warmup=2, decay_fraction=0.2, where="w")
    assert [(b.start, b.end) for b in plan] == list(POINTS.items())
    assert [b.average_steps for b in plan] == [(6, 7, 8), (12, 14, 16), (24, 28, 32)]
    for b in plan:  # the lr at every averaged step and at the branch point is the stable peak
        assert all(lr_multiplier(s, steps=40, schedule="wsd", warmup=2, decay_fraction=0.2) == 1.0
                   for s in (*b.average_steps, b.start))
    kw = dict(steps=40, warmup=2, decay_fraction=0.2, where="w")
    with pytest.raises(QidlabError, match="stable phase"):
        plan_branches(BranchSpec(), schedule="cosine", **kw)
    with pytest.raises(QidlabError, match="warmup"):
        plan_branches(BranchSpec(at=(2,), average=0), schedule="wsd", **kw)
    with pytest.raises(QidlabError, match="leaves the stable phase"):
        plan_branches(BranchSpec(at=(36,)), schedule="wsd", **kw)


def test_a_seed_runs_order_is_a_permutation_of_the_same_sequences():
    seen = np.concatenate([run_sequences(s, 8, 40, seed=1) for s in range(5)])
    assert sorted(seen) == list(range(40)) and list(seen) != list(range(40))
    assert list(run_sequences(0, 8, 40, seed=2)) != list(run_sequences(0, 8, 40, seed=1))


@pytest.mark.parametrize("extra, match", [
    ("branches = { points = 3, frist = 8 }", "unknown key 'frist' in branches; did you mean first"),
    ("seeds = [0]", "suite's seed"),
    ("seeds = [1, 1]", "distinct"),
    ("branches = { at = [8], points = 2 }", "not both"),
    ("branches = { at = [8], average = 1 }", "at least 2"),
    ("lr_factor = 2.0", "go together"),
    ("main_run = false", "main_run = false needs seeds"),
    ("main_run = 0\nseeds = [1]", "main_run"),
])
def test_bad_branch_and_seed_tables_are_one_clear_error(tmp_path, extra, match):
    with pytest.raises(QidlabError, match=match):
        load_suite_config(write(tmp_path, extra))


def test_folders_cannot_collide_and_lr_of_needs_the_same_shape(tmp_path):
    clash = '\n[[models]]\nname = "h32-l1-seed1"\nhidden = 32\nlayers = 1\nheads = 4\nlr = 1e-3\n'
    with pytest.raises(QidlabError, match="both write the folder 'h32-l1-seed1'"):
        load_suite_config(write(tmp_path, "seeds = [1]" + clash))
    other = '\n[[models]]\nname = "wide"\nhidden = 64\nlayers = 1\nheads = 4\nlr_of = "h32-l1"\nlr_factor = 2.0\n'
    with pytest.raises(QidlabError, match="same shape"):
        load_suite_config(write(tmp_path, other))


def test_seeds_and_branches_leave_the_main_runs_identity_alone(tmp_path):
    plain = load_suite_config(write(tmp_path, "", "plain.toml"))
    more = load_suite_config(write(tmp_path, f"seeds = [1, 2]\n{BRANCHES}", "more.toml"))
    assert plain.model_hash(plain.models[0]) == more.model_hash(more.models[0])
    assert folders_of(plain.models[0]) == ["h32-l1"]
    assert folders_of(more.models[0]) == [
        "h32-l1", "h32-l1-cool8", "h32-l1-cool16", "h32-l1-cool32", "h32-l1-seed1", "h32-l1-seed1-cool8",
        "h32-l1-seed1-cool16", "h32-l1-seed1-cool32", "h32-l1-seed2", "h32-l1-seed2-cool8", "h32-l1-seed2-cool16",
        "h32-l1-seed2-cool32", "h32-l1-lawa3", "h32-l1-seed1-lawa3", "h32-l1-seed2-lawa3"]


# ---- trained ---------------------------------------------------------------------------------------

def test_every_folder_is_a_discovered_checkpoint_with_its_tokens(trained):
    suite, paths, _ = trained
    refs = {(r.model, r.step): r for r in discover(suite)}
    assert all((p.parent.name, int(p.name[4:])) in refs for p in paths)
    for run in ("h32-l1", "h32-l1-seed1"):
        assert {s for (m, s) in refs if m == run} == {0, 1, 2, 4, 8, 16, 32, 40}
        for b, end in POINTS.items():
            assert refs[(f"{run}-cool{b}", end)].tokens == end * 512
            assert refs[(f"{run}-lawa3", b)].tokens == b * 512
    manifest = read_manifest(suite)["models"]
    assert manifest["h32-l1-seed1-cool16"]["info"].items() >= {"kind": "branch", "run": "seed1",
                                                               "branch_from": 16}.items()
    assert manifest["h32-l1-lawa3"]["info"]["kind"] == "average"


def test_qidlab_json_tells_runs_branch_points_branch_ends_and_averages_apart(trained):
    suite, _, _ = trained
    main4, main16 = _meta(suite / "h32-l1" / "step4"), _meta(suite / "h32-l1" / "step16")
    assert not {"run", "trajectory", "branch", "branch_point"} & set(main4)  # today's files
    assert main16["branch_point"] == {"cooldown": "h32-l1-cool16", "average": "h32-l1-lawa3"}
    end = _meta(suite / "h32-l1-seed1-cool16" / "step18")
    assert end["run"] == "seed1" and end["trajectory"]["kind"] == "branch" and end["lr"] == 0.0
    assert end["branch"].items() >= {"from": "h32-l1-seed1", "from_step": 16, "decay_steps": 2,
                                     "decay_tokens": 1024, "lr_reached": 0.0}.items()
    avg = _meta(suite / "h32-l1-lawa3" / "step16")
    assert avg["average"]["steps"] == [12, 14, 16] and avg["trajectory"]["kind"] == "average"
    assert avg["tokens"] == main16["tokens"] and avg["train_loss"] is None
    assert _meta(suite / "h32-l1-seed1" / "step8")["seed"] == 1
    from qidlab.checkpoints import trajectory_info

    assert trajectory_info(suite / "h32-l1" / "step4") | {"lr": 0} == {
        "kind": "run", "run": None, "base": None, "branch_from": None, "branch_point": False, "lr": 0}
    assert trajectory_info(suite / "h32-l1" / "step16")["branch_point"]
    assert trajectory_info(suite / "h32-l1-seed1-cool16" / "step18") == {
        "kind": "branch", "run": "seed1", "base": "h32-l1-seed1", "branch_from": 16, "branch_point": False, "lr": 0.0}
    assert trajectory_info(suite / "h32-l1-lawa3" / "step16") | {"lr": 0} == {
        "kind": "average", "run": None, "base": "h32-l1", "branch_from": 16, "branch_point": False, "lr": 0}


def test_a_branch_continues_the_runs_data_at_the_peak_and_decays_to_zero(trained):
    _, _, events = trained
    by = {}
    for model, step, lr, batch in events:
        by.setdefault(model, {})[step] = (lr, batch)
    cool = by["h32-l1-cool32"]
    assert sorted(cool) == [32, 33, 34, 35, 36]
    assert [round(cool[s][0] / 3e-3, 6) for s in sorted(cool)] == [1.0, 0.8, 0.6, 0.4, 0.2]
    for s in cool:  # the run's own next batches; the run itself is decaying by its schedule there
        assert bool((cool[s][1] == by["h32-l1"][s][1]).all())
    assert by["h32-l1"][36][0] < 3e-3
    seed = by["h32-l1-seed1"]
    assert not bool((seed[0][1] == by["h32-l1"][0][1]).all())  # another data order
    assert bool((by["h32-l1-seed1-cool8"][8][1] == seed[8][1]).all())


def test_branch_starts_from_the_runs_weights_and_the_seed_run_from_its_own_init(trained):
    suite, _, _ = trained
    w0, s0 = _weights(suite / "h32-l1" / "step0"), _weights(suite / "h32-l1-seed1" / "step0")
    assert any(not bool((w0[k] == s0[k]).all()) for k in w0)
    b, end = _weights(suite / "h32-l1" / "step32"), _weights(suite / "h32-l1-cool32" / "step37")
    main_end = _weights(suite / "h32-l1" / "step40")
    assert all(b[k].shape == end[k].shape for k in b)
    assert any(not bool((end[k] == main_end[k]).all()) for k in b)


def test_the_average_is_the_float32_mean_of_the_runs_weights_at_its_steps(trained):
    suite, _, _ = trained
    from safetensors.torch import load_file

    # a snapshot is the model's state_dict; save_pretrained writes GPT-NeoX's head as embed_out
    snaps = [{("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in
              load_file(str(suite / "h32-l1" / "_lawa" / f"step{s}.safetensors")).items()} for s in (12, 14, 16)]
    saved16 = _weights(suite / "h32-l1" / "step16")
    assert saved16.keys() == snaps[2].keys()
    for k, v in saved16.items():  # the snapshot at a saved step is that checkpoint's weights
        assert bool((v == snaps[2][k]).all())
    avg = _weights(suite / "h32-l1-lawa3" / "step16")
    for k, v in avg.items():
        mean = (snaps[0][k].double() + snaps[1][k].double() + snaps[2][k].double()) / 3
        assert v.dtype == snaps[0][k].dtype
        np.testing.assert_allclose(v.numpy(), mean.float().numpy(), rtol=1e-6, atol=1e-7)
    assert any(not bool((avg[k] == saved16[k]).all()) for k in avg)


def test_an_interrupted_branch_resumes_to_the_same_weights(trained, workdir):
    suite, _, _ = trained
    out = workdir / "interrupted"
    shutil.copytree(suite, out / "c2", ignore=shutil.ignore_patterns("h32-l1-seed1-cool32", "h32-l1-seed1-lawa3"))

    class Stop(Exception):
        pass

    def stop(e):
        if e["model"] == "h32-l1-seed1-cool32" and e["step"] == 35:
            raise Stop

    path = write(workdir, f"seeds = [1]\n{BRANCHES}", "again.toml")
    with single_thread(), pytest.raises(Stop):
        train_suite(path, out, threads=1, on_step=stop)
    assert not (out / "c2" / "h32-l1-seed1-cool32" / "step37").exists()
    steps = []
    with single_thread():
        train_suite(path, out, threads=1, on_step=lambda e: steps.append((e["model"], e["step"])))
    assert steps == [("h32-l1-seed1-cool32", 34), ("h32-l1-seed1-cool32", 35), ("h32-l1-seed1-cool32", 36)]
    a, b = _weights(suite / "h32-l1-seed1-cool32" / "step37"), _weights(out / "c2" / "h32-l1-seed1-cool32" / "step37")
    assert all(bool((a[k] == b[k]).all()) for k in a)
    a, b = _weights(suite / "h32-l1-seed1-lawa3" / "step32"), _weights(out / "c2" / "h32-l1-seed1-lawa3" / "step32")
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_a_branch_asked_for_after_its_run_passed_the_point_is_refused(workdir):
    with single_thread():
        train_suite(write(workdir, "", "late.toml"), workdir / "late", threads=1)
        with pytest.raises(QidlabError, match="_branches/step8.pt is missing"):
            train_suite(write(workdir, "branches = { at = [8], average = 0 }", "late.toml"), workdir / "late",
                        threads=1)


# ---- the CPU dry run of Campaign 2 ---------------------------------------------------------------

@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None, reason="needs bash and coreutils")
def test_campaign2_dry_run_trains_and_measures_branches_averages_seeds_and_lr_variants(tmp_path):
    camp = tmp_path / "campaign"
    camp.mkdir()
    for f in ("job.sh", "campaign2-dryrun-suite.toml", "campaign2-dryrun-study.toml", "campaign2-dryrun.plan"):
        shutil.copy(REPO / "campaign" / f, camp / f)
    (tmp_path / "src").symlink_to(REPO / "src")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in tiny_corpus(600)))
    build_corpus("files", camp / "inputs" / "stdlib", files=[docs], compress=True)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "DEVICE": "cpu", "COMPILE": "0", "THREADS": "1", "DEADLINE": "600",
           "LR_SWEEP": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", "campaign/job.sh", "campaign/campaign2-dryrun.plan"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "job done" in run.stdout, run.stderr[-2000:] + run.stdout[-2000:]
    stores = sorted(p.name for p in (tmp_path / "campaign" / "work" / "stores").glob("*.db"))
    assert stores == sorted(f"campaign2-dryrun-suite-{m}.db" for m in ("h32-l1", "h32-l1-lr2x", "h32-l1-seed1"))  # a sweep per run
    con = sqlite3.connect(tmp_path / "campaign" / "work" / "store.db")
    rows = con.execute("SELECT c.model, c.step, c.tokens, c.path, m.method FROM measurements m "
                       "JOIN checkpoints c ON c.id = m.checkpoint_id").fetchall()
    con.close()
    models = {r[0] for r in rows}
    assert models == {"h32-l1", "h32-l1-seed1", "h32-l1-lr2x", *(f"{r}-cool{b}" for r in ("h32-l1", "h32-l1-seed1")
                                                                  for b in (12, 25, 51)),
                      "h32-l1-lawa3", "h32-l1-seed1-lawa3"}
    assert {(r[1], r[2]) for r in rows if r[0] == "h32-l1-cool25"} == {(29, 29 * 512)}
    assert {r[4] for r in rows} == {"none", "rtn"}
    suite = tmp_path / "campaign" / "work" / "suites" / "campaign2-dryrun"
    swept = json.loads((suite / "h32-l1" / "lr-sweep.json").read_text())
    sweep = swept["result"]
    assert swept["chosen_at_edge"] == (sweep["chosen"] in (min(sweep["lrs"]), max(sweep["lrs"])))
    variant = _meta(suite / "h32-l1-lr2x" / "step64")
    assert variant["peak_lr"] == 2 * sweep["chosen"] == 2 * _meta(suite / "h32-l1-seed1" / "step64")["peak_lr"]
    assert not (suite / "h32-l1-lr2x" / "lr-sweep.json").exists()
    for r in rows:  # every stored path leads to a qidlab.json that says what the checkpoint is
        kind = _meta(Path(r[3]) if Path(r[3]).is_absolute() else tmp_path / r[3]).get("trajectory", {}).get("kind")
        assert kind == ("branch" if "-cool" in r[0] else "average" if "-lawa" in r[0] else
                        "run" if "-seed" in r[0] else None)


def test_an_lr_chosen_at_the_edge_of_its_grid_is_flagged():
    from qidlab.train.lr_sweep import at_edge

    assert at_edge([1e-3, 2e-3, 4e-3], 4e-3) and at_edge([1e-3, 2e-3, 4e-3], 1e-3) and at_edge([1e-3, 2e-3], 2e-3)
    assert not at_edge([1e-3, 2e-3, 4e-3], 2e-3)


def test_the_campaign2_draft_suite_has_the_issues_design():
    """campaign/campaign2-en-suite.toml (a draft for the GPU): >= 9 sizes over >= 300x in N, 5 branch
    points per trajectory inside one pass, 3 seeds for 4 sizes, one size at 3 peak lrs."""
    from qidlab.checkpoints.params import count_params
    from qidlab.train.engine import build_model

    config = load_suite_config(REPO / "campaign" / "campaign2-en-suite.toml")
    sizes = [m for m in config.models if m.lr_of is None]
    import torch

    with torch.device("meta"):  # shapes only: no weights initialised
        n = sorted(count_params(build_model(m, 8192, 8, 0))[0] for m in sizes)
    assert len(sizes) >= 9 and n[-1] / n[0] >= 300
    assert all(len(m.branches) == 5 and m.branches[-1].end <= config.steps for m in config.models)
    assert sum(len(m.seeds) == 2 for m in config.models) >= 4
    variants = [m for m in config.models if m.lr_of is not None]
    assert {m.lr_of[0] for m in variants} == {"h384-l4"} and sorted(m.lr_of[1] for m in variants) == [0.5, 2.0]


def test_a_run_interrupted_between_snapshots_gives_the_same_average_and_branch(trained, workdir):
    """Stopped after the snapshot of step 12 and before the checkpoint of step 16, the run resumes from
    step 8, keeps its snapshots again, and its average and branch at 16 equal the uninterrupted ones."""
    suite, _, _ = trained
    path, out = write(workdir, BRANCHES, "noseed.toml"), workdir / "stopped"

    class Stop(Exception):
        pass

    def stop(e):
        if e["model"] == "h32-l1" and e["step"] == 13:
            raise Stop

    with single_thread():
        with pytest.raises(Stop):
            train_suite(path, out, threads=1, on_step=stop)
        assert (out / "c2" / "h32-l1" / "_lawa" / "step12.safetensors").is_file()
        assert not (out / "c2" / "h32-l1" / "step16").exists()
        train_suite(path, out, threads=1)
    for folder in ("h32-l1-lawa3/step16", "h32-l1-cool16/step18", "h32-l1-cool32/step37"):
        a, b = _weights(suite / folder), _weights(out / "c2" / folder)
        assert all(bool((a[k] == b[k]).all()) for k in a), folder


# ---- main_run = false: the seed runs of a model whose main run was trained before, elsewhere -------

def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def test_main_run_false_trains_the_seed_runs_alone_bit_identical_to_beside_the_main_run(trained, workdir):
    """The seed run, its branches and its average, trained without the main run, equal (weights,
    qidlab.json, trainer-state hash) those the ``trained`` suite made beside its main run; no folder
    or manifest entry of the main run."""
    import torch

    suite, _, _ = trained
    path = write(workdir, f"seeds = [1]\nmain_run = false\n{BRANCHES}", "seedsonly.toml")
    config, full = load_suite_config(path), load_suite_config(write(workdir, f"seeds = [1]\n{BRANCHES}", "full.toml"))
    spec = config.models[0]
    assert config.model_hash(spec) == full.model_hash(full.models[0]) and not spec.main_run
    assert folders_of(spec) == [f for f in folders_of(full.models[0]) if f.startswith("h32-l1-seed1")] == [
        "h32-l1-seed1", "h32-l1-seed1-cool8", "h32-l1-seed1-cool16", "h32-l1-seed1-cool32", "h32-l1-seed1-lawa3"]
    with single_thread():
        paths = train_suite(path, workdir / "seedsonly", threads=1)
    out = workdir / "seedsonly" / "c2"
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("_data")) == sorted(
        folders_of(spec))
    assert sorted(p.name for p in out.glob("_data*")) == ["_data", "_data-seed1"]  # seed_data = "documents"
    assert {p.parent.name for p in paths} == set(folders_of(spec))
    for folder in folders_of(spec):
        assert sorted(_files(out / folder)) == sorted(_files(suite / folder)), folder
        for rel, p in _files(out / folder).items():
            if rel.endswith((".safetensors", "qidlab.json", "config.json", "train-log.csv")):
                assert p.read_bytes() == (suite / folder / rel).read_bytes(), f"{folder}/{rel}"
        if (out / folder / "trainer_state.pt").is_file():
            a, b = (torch.load(r / folder / "trainer_state.pt", weights_only=True)["model_hash"] for r in (out, suite))
            assert a == b
    manifest = read_manifest(out)["models"]
    assert set(manifest) == set(folders_of(spec))  # the main run's folders are not claimed
    assert manifest["h32-l1-seed1"]["info"].items() >= {"kind": "run", "run": "seed1", "base_model": "h32-l1",
                                                        "lr": 3e-3}.items()
    assert manifest["h32-l1-seed1-lawa3"]["info"].items() >= {"kind": "average", "run": "seed1",
                                                              "base": "h32-l1-seed1"}.items()
    refs = discover(out)
    assert {r.model for r in refs} == set(folders_of(spec)) and {r.info["run"] for r in refs} == {"seed1"}


def test_main_run_false_refuses_an_lr_sweep_before_writing_anything(workdir, tmp_path):
    text = write(tmp_path, f"seeds = [1]\nmain_run = false\n{BRANCHES}").read_text()
    swept = tmp_path / "swept.toml"
    swept.write_text(text.replace("checkpoints =", "lr_sweep = { factors = [0.5, 1, 2] }\ncheckpoints ="))
    with pytest.raises(QidlabError, match="main_run = false.*main run's lr.*drop the sweep") as err:
        load_suite_config(swept)
    assert err.value.params == ("lr_sweep",)  # the CLI names its flag
    plain = tmp_path / "suite.toml"
    plain.write_text(text.replace('corpus = "corpus"', f'corpus = "{workdir / "corpus"}"'))
    with pytest.raises(QidlabError, match="an lr sweep.*main_run = false"):
        train_suite(plain, tmp_path / "out", lr_sweep=True)
    assert not (tmp_path / "out").exists()


def test_the_campaign2_seeds_suite_hashes_its_models_like_their_measured_main_runs():
    """campaign/campaign2-en-seeds-suite.toml: seeds 1 and 2 of 4 sizes without their main runs; each
    model's hash (so its seed runs' hashes) equals the one its main run's lr sweep recorded on the GPU
    (lr-sweep.json in the sessions' suites tarballs), whose chosen rate is the lr given; the plans
    cover every model once, with no lr sweep."""
    import tarfile

    config = load_suite_config(REPO / "campaign" / "campaign2-en-seeds-suite.toml")
    assert config.lr_sweep is None and len(config.models) >= 4
    assert all(not m.main_run and m.seeds == (1, 2) and len(m.branches) == 5 for m in config.models)
    sweeps = {}
    for tar in ("2026-12-04-c2-s1/suites-call1.tar.gz", "2026-12-04-c2-s1/suites-call2.tar.gz",
                "2026-12-04-c2-s2/suites-s3.tar.gz"):
        with tarfile.open(REPO / "campaign" / "results" / tar) as t:
            for member in t.getmembers():
                parts = Path(member.name).parts
                if parts[-1] == "lr-sweep.json" and parts[-3] == "c2-en":
                    sweeps[parts[-2]] = json.load(t.extractfile(member))
    for m in config.models:
        assert sweeps[m.name]["key"]["model_hash"] == config.model_hash(m), m.name
        assert sweeps[m.name]["result"]["chosen"] == sweeps[m.name]["result"]["base_lr"] == m.lr, m.name
        assert not any(f == m.name or f.startswith(f"{m.name}-cool") or f.startswith(f"{m.name}-lawa")
                       for f in folders_of(m, config.seed)), m.name
    planned = []
    for plan in ("campaign2-seeds-s1.plan", "campaign2-seeds-s2.plan"):
        text = (REPO / "campaign" / plan).read_text()
        assert "DEADLINE=530 bash campaign/job.sh" in text and "LR_SWEEP=1" not in text
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                suite, study, *models = line.split()
                assert suite == "campaign/campaign2-en-seeds-suite.toml" and study == "campaign/campaign2-en-study.toml"
                planned += models
    assert sorted(planned) == sorted(m.name for m in config.models)
