"""campaign/job.sh end to end on CPU: a plan's models trained and measured side by side, a model
trained only, the stores merged, and what a GPU job returns (slim store, whole store in parts,
training logs) — the dry run of campaign/README.md, on a small corpus."""

from __future__ import annotations

import gzip
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from tiny_models import tiny_corpus_folder

REPO = Path(__file__).resolve().parents[1]


def _job(tmp_path: Path, plan: str, n_docs: int, **settings: str) -> subprocess.CompletedProcess:
    """``bash campaign/job.sh PLAN`` in ``tmp_path`` on the CPU (no compile, one thread, OUT = out/), with
    the tree's src linked (job.sh runs $PWD/src) and a tiny corpus of ``n_docs`` documents as
    campaign/inputs/stdlib (as the studies name it); ``settings``: more of job.sh's env. Asserts exit 0."""
    (tmp_path / "src").symlink_to(REPO / "src")
    tiny_corpus_folder(tmp_path, n_docs, out=tmp_path / "campaign" / "inputs" / "stdlib", compress=True)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "DEVICE": "cpu", "COMPILE": "0", "THREADS": "1", "DEADLINE": "600",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **settings}
    run = subprocess.run(["bash", "campaign/job.sh", plan], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None, reason="needs bash and coreutils")
def test_job_trains_measures_side_by_side_and_returns_what_fits(tmp_path):
    camp = tmp_path / "campaign"
    camp.mkdir()
    for f in ("job.sh", "dryrun-suite.toml", "dryrun-study.toml", "dryrun.plan"):
        shutil.copy(REPO / "campaign" / f, camp / f)
    run = _job(tmp_path, "campaign/dryrun.plan", 1500, LR_SWEEP="1")
    out = tmp_path / "out"
    assert "trained dryrun-suite-h32-l1-bitnet" in run.stdout and "job done" in run.stdout

    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "store-measurements.db",
                                                     "store.db.gz.part-00", "suites.tar.gz"]
    whole = tmp_path / "whole.db"
    whole.write_bytes(gzip.decompress((out / "store.db.gz.part-00").read_bytes()))
    counts = {}
    for db in (whole, out / "store-measurements.db"):
        con = sqlite3.connect(db)
        counts[db.name] = (con.execute("SELECT count(*) FROM measurements").fetchone()[0],
                           con.execute("SELECT count(*) FROM doc_losses").fetchone()[0],
                           sorted(r[0] for r in con.execute("SELECT DISTINCT model FROM checkpoints")))
        con.close()
    # 2 models x 3 checkpoints x (16-bit + RTN 2/4 + GPTQ 2/4) on one eval set; the BitNet model is not measured
    assert counts["whole.db"][0] == counts["store-measurements.db"][0] == 30
    assert counts["whole.db"][1] > 0 and counts["store-measurements.db"][1] == 0
    assert counts["whole.db"][2] == ["h32-l1", "h64-l2"]
    with tarfile.open(out / "suites.tar.gz") as tar:
        names = set(tar.getnames())
    for model in ("h32-l1", "h64-l2", "h32-l1-bitnet"):
        assert f"./dryrun/{model}/train-log.csv" in names and f"./dryrun/{model}/train-stats.json" in names
        assert f"./dryrun/{model}/lr-sweep.json" in names  # every model's lr chosen first (LR_SWEEP=1)
    with tarfile.open(out / "suites.tar.gz") as tar:
        manifest = tar.extractfile("./dryrun/qidlab-suite.toml").read().decode()
    assert manifest.count("lr_sweep = {") == 3  # the pipelines trained at the rates their sweeps chose
    assert not any(n.endswith(".safetensors") for n in names)  # checkpoints never travel back


SPLIT_SUITE = """[suite]
name = "split"
corpus = "inputs/stdlib"
seed = 0
tokenizer = 512
seq_len = 32
batch_size = 4
steps = 24
schedule = "constant"
warmup = 2
checkpoints = { log_spaced_until = 24, every = 100000 }

[[models]]
name = "h32-l1"
hidden = 32
layers = 1
heads = 2
lr = 1e-2
branches = { points = 2, first = 8, fraction = 0.25, average = 2, average_span = 0.25 }
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_split_measures_a_run_and_its_branches_in_two_stores_merged_as_one(tmp_path):
    """SPLIT=1: the run's own folder in <run>.db, its cooldown branches and averages in <run>-derived.db,
    side by side; the merged store has every checkpoint of both, each measured once."""
    camp = tmp_path / "campaign"
    camp.mkdir()
    shutil.copy(REPO / "campaign" / "job.sh", camp / "job.sh")
    (camp / "split-suite.toml").write_text(SPLIT_SUITE)
    study = (REPO / "campaign" / "dryrun-study.toml").read_text().replace('name = "dryrun"', 'name = "split"')
    study = study.replace("work/dryrun.db", "work/split.db").replace("work/suites/dryrun", "work/suites/split")
    study = study.replace("steps = [16, 32, 64]\n", "").replace("bits = [2, 4]", "bits = [4]")
    (camp / "split-study.toml").write_text(study)
    (camp / "split.plan").write_text("campaign/split-suite.toml campaign/split-study.toml h32-l1\n")
    run = _job(tmp_path, "campaign/split.plan", 600, SPLIT="1")
    stores = tmp_path / "campaign" / "work" / "stores"
    models = {}
    for name in ("split-suite-h32-l1", "split-suite-h32-l1-derived"):
        con = sqlite3.connect(stores / f"{name}.db")
        models[name] = {r[0] for r in con.execute("SELECT DISTINCT model FROM checkpoints")}
        con.close()
    assert models["split-suite-h32-l1"] == {"h32-l1"}
    derived = models["split-suite-h32-l1-derived"]
    assert len(derived) == 3 and all("-cool" in m or "-lawa" in m for m in derived)  # 2 branches, 1 average folder
    con = sqlite3.connect(tmp_path / "out" / "store-measurements.db")
    merged = con.execute("SELECT count(*), count(DISTINCT checkpoint_id || '/' || config_hash || '/' || eval_set_id) "
                         "FROM measurements").fetchone()
    got = {r[0] for r in con.execute("SELECT DISTINCT model FROM checkpoints")}
    con.close()
    assert got == {"h32-l1"} | derived and merged[0] == merged[1] > 0
    assert "from 2 stores" in run.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_bad_split_value_is_one_line_and_exit_2_before_anything_is_written(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "SPLIT": "yes"}
    run = subprocess.run(["bash", str(REPO / "campaign" / "job.sh"), str(REPO / "campaign" / "dryrun.plan")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.strip() == "job.sh: SPLIT must be 0 or 1, not 'yes'"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plan", sorted(p.name for p in (REPO / "campaign").glob("campaign2-*.plan")))
def test_every_campaign2_plan_names_models_its_suite_has_and_studies_that_load(plan):
    """A GPU call's plan (campaign2-*.plan) that names a model its suite lacks, or a study that does not
    load, would cost device time to find out: each line's suite and study load here, every model is
    the suite's, and no model is planned twice."""
    from qidlab.sweep.study import load_study
    from qidlab.train import folders_of, load_suite_config

    seen = set()
    for line in (REPO / "campaign" / plan).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        suite, study, *models = line.split()
        config = load_suite_config(REPO / suite)
        if study != "-":
            load_study(REPO / study)
        names = {m.name: m for m in config.models}
        assert models and set(models) <= set(names), f"{plan}: {set(models) - set(names)} not in {suite}"
        for m in models:
            assert (config.name, m) not in seen and folders_of(names[m], config.seed)
            seen.add((config.name, m))
