"""End to end: a tiny suite swept into the store, resumed after a kill, exported, on Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny_models import make_tiny_checkpoint, tiny_corpus, write_study_texts

from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.provenance import device_name
from qidlab.store import Store, read_canonical
from qidlab.sweep import load_study, run_study

STUDY = """
[study]
name = "tiny"
store = "tiny.db"

[checkpoints]
root = "suite"

[[eval_sets]]
name = "heldout"
source = "eval.txt"
n_docs = 12

[calibration]
source = "train.txt"
n_samples = 4
seq_len = 32

[[methods]]
method = "rtn"
bits = [2, 4]
group_size = 32

[[methods]]
method = "gptq"
bits = 3
group_size = 32

[[methods]]
method = "nf4"
block_size = 32

[scoring]
bootstrap = 200
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Two checkpoints (steps 50 and 150) of one tiny GPT-NeoX, eval and calibration texts."""
    root = tmp_path_factory.mktemp("study")
    make_tiny_checkpoint(root / "suite", steps=150, save_steps=[50, 150], model_name="m64")
    write_study_texts(root, 60, 30)
    (root / "study.toml").write_text(STUDY)
    return root


def _copy_study(suite, tmp_path, text=STUDY):
    (tmp_path / "study.toml").write_text(text.replace('root = "suite"', f'root = "{suite / "suite"}"')
                                         .replace('"eval.txt"', f'"{suite / "eval.txt"}"')
                                         .replace('"train.txt"', f'"{suite / "train.txt"}"'))
    return tmp_path / "study.toml"


def test_sweep_measures_resumes_and_exports(suite, tmp_path, capsys):
    path = _copy_study(suite, tmp_path)
    summary = run_study(load_study(path), progress=False)
    # 2 checkpoints x (16-bit reference + 4 configs) x 1 eval set
    assert (summary.measured, summary.skipped, summary.failed) == (10, 0, [])
    table = read_canonical(tmp_path / "tiny.db")
    assert len(table) == 8 and set(table.method) == {"rtn", "gptq", "nf4"}
    nf4 = table[table.method == "nf4"]
    assert (nf4.bits == 4).all() and (nf4.block_size == 32).all() and nf4.group_size.isna().all()
    assert (table[table.bits == 2].qid > 0).all(), "2-bit quantization of a trained model raises its loss"
    assert (table.qid_ci_low <= table.qid).all() and (table.qid <= table.qid_ci_high).all()
    assert set(table.tokens) == {50 * 16 * 64, 150 * 16 * 64}
    by_bits = table[table.method == "rtn"].groupby("bits").qid.mean()
    assert by_bits[2] > by_bits[4]
    with Store(tmp_path / "tiny.db") as store:
        versions = json.loads(store.conn.execute("SELECT versions_json FROM measurements").fetchone()[0])
        assert "torch" in versions and "qidlab" in versions
        n_docs = store.conn.execute("SELECT COUNT(*) FROM doc_losses").fetchone()[0]
        assert n_docs == 10 * 12
        devices = store.conn.execute("SELECT value FROM meta WHERE key = 'devices'").fetchone()[0]
        assert json.loads(devices) == [device_name("cpu")]  # what measured, for the data set's manifest
    # the same command again: nothing new, nothing duplicated
    again = run_study(load_study(path), progress=False)
    assert (again.measured, again.skipped) == (0, 10)
    # export
    assert main(["export", str(tmp_path / "tiny.db"), "--format", "parquet", "--out", str(tmp_path / "t.parquet")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 't.parquet'}: 8 measurements (parquet)\n"
    exported = pd.read_parquet(tmp_path / "t.parquet")
    assert len(exported) == 8 and {"n_params", "tokens", "bits", "qid", "qid_ci_low", "loss16", "eval_set"} <= set(exported)
    # and the laws read it
    assert main(["fit", str(tmp_path / "tiny.db"), "--law", "ouyang2024", "--holdout", "", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"][0]["n"] >= 5


def test_a_failing_job_is_reported_and_the_rest_go_on(suite, tmp_path, capsys):
    text = STUDY.replace("group_size = 32\n\n[[methods]]\nmethod = \"gptq\"", "group_size = 48\n\n[[methods]]\nmethod = \"gptq\"")
    path = _copy_study(suite, tmp_path, text)
    assert main(["sweep", str(path), "--quiet", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["failed"]) == 4 and all("48" in f for f in doc["failed"])  # rtn 2/4 bits on 2 checkpoints
    assert doc["measured"] == 6  # references, gptq and nf4
    assert len(read_canonical(tmp_path / "tiny.db")) == 4


def test_killed_sweep_finishes_on_rerun_without_duplicates(suite, tmp_path):
    path = _copy_study(suite, tmp_path)
    cmd = [sys.executable, "-m", "qidlab.cli", "sweep", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    seen = 0
    for line in proc.stderr:  # kill it right after its first checkpoint is written (a log: one line each)
        seen += line.startswith("[")
        if seen == 1:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    with Store(tmp_path / "tiny.db") as store:
        partial = store.count()
    assert 0 < partial < 10
    summary = run_study(load_study(path), progress=False)
    assert summary.measured == 10 - partial and not summary.failed
    with Store(tmp_path / "tiny.db") as store:
        assert store.count() == 10
        assert store.count("doc_losses") == 10 * 12


def test_ray_executor_gives_the_same_table(suite, tmp_path):
    ray = pytest.importorskip("ray")
    path = _copy_study(suite, tmp_path)
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    local = run_study(load_study(_copy_study(suite, local_dir)), progress=False)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        remote = run_study(load_study(path), executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert remote.measured == local.measured == 10 and not remote.failed
    cols = ["n_params", "tokens", "method", "bits", "qid"]
    a = read_canonical(tmp_path / "tiny.db")[cols].sort_values(cols[:4]).reset_index(drop=True)
    b = read_canonical(local_dir / "tiny.db")[cols].sort_values(cols[:4]).reset_index(drop=True)
    rtn = a.method != "gptq"
    pd.testing.assert_frame_equal(a[rtn], b[rtn], rtol=1e-6)
    # GPTQ's rounding decisions depend on float summation order, i.e. on the thread count
    # (Ray workers run one thread): same to within a small absolute difference
    pd.testing.assert_frame_equal(a[~rtn], b[~rtn], atol=1e-3, rtol=0)


def test_reference_tokenizer_unit(suite, tmp_path):
    """QiD per reference-tokenizer token (the paper normalised by Llama-3 token counts)."""
    from tiny_models import train_tokenizer

    ref = train_tokenizer(tiny_corpus(50, seed=7), vocab_size=300)
    ref.save_pretrained(tmp_path / "ref")
    text = STUDY.replace('[scoring]\nbootstrap = 200', '[scoring]\nbootstrap = 200\nunit = "nats_per_ref_token"\n'
                         f'reference_tokenizer = "{tmp_path / "ref" / "tokenizer.json"}"')
    text = text.replace('bits = [2, 4]', 'bits = 2')
    study = load_study(_copy_study(suite, tmp_path, text))
    study = type(study)(**{**vars(study), "methods": study.methods[:1], "steps": (150,)})
    assert run_study(study, progress=False).measured == 2
    ours = read_canonical(tmp_path / "tiny.db").iloc[0]
    with Store(tmp_path / "tiny.db") as store:
        cfg = json.loads(store.conn.execute("SELECT config_json FROM measurements WHERE method='rtn'").fetchone()[0])
        nll, ntok = store.conn.execute("SELECT SUM(d.nll_sum), SUM(d.n_tokens) FROM doc_losses d JOIN measurements m "
                                       "ON m.id = d.measurement_id WHERE m.method = 'none'").fetchone()
    assert cfg["scoring"]["unit"] == "nats_per_ref_token"
    from qidlab.evaluate import load_eval_set

    docs = load_eval_set(suite / "eval.txt", n_docs=12, seed=0).docs
    n_ref = sum(len(ref.backend_tokenizer.encode(d, add_special_tokens=False).ids) for d in docs)
    assert ours.loss16 == pytest.approx(nll / n_ref, rel=1e-9)
    assert abs(ours.loss16 - nll / ntok) > 0.01  # a different unit than nats per model token
    assert ours.qid > 0


def test_shared_hessian_mode_reuses_one_hessian(suite, tmp_path, monkeypatch):
    """GPTQ at several bit widths with shared_hessian = true collects Hessians once per checkpoint
    (one block-by-block pass serves every bit width)."""
    import qidlab.quantize as quantize

    calls = []
    real = quantize.gptq_shared_blockwise
    monkeypatch.setattr(quantize, "gptq_shared_blockwise", lambda *a, **k: calls.append(1) or real(*a, **k))
    text = STUDY.split("[[methods]]")[0] + (
        '[[methods]]\nmethod = "gptq"\nbits = [2, 3, 4]\ngroup_size = 32\nshared_hessian = true\n\n'
        '[scoring]\nbootstrap = 50\n')
    study = load_study(_copy_study(suite, tmp_path, text))
    study = type(study)(**{**vars(study), "steps": (150,)})
    summary = run_study(study, progress=False)
    assert summary.measured == 4 and not summary.failed
    assert len(calls) == 1
    qid = read_canonical(tmp_path / "tiny.db").set_index("bits").qid
    assert qid[2] > qid[4]


def test_sweep_command_models_and_store_overrides_for_one_job(suite, tmp_path, capsys):
    """A GPU job sweeps only its models into its own store (merged later with `qidlab store merge`)."""
    text = STUDY.split("[[methods]]")[0] + '[[methods]]\nmethod = "rtn"\nbits = 2\n\n[scoring]\nbootstrap = 20\n'
    study = _copy_study(suite, tmp_path, text)
    job = tmp_path / "jobs" / "job-1.db"
    job.parent.mkdir()
    assert main(["sweep", str(study), "--models", "m64", "--store", str(job), "--quiet"]) == 0
    table = read_canonical(job)
    assert set(table.model) == {"m64"} and len(table) == 2  # two checkpoints x rtn 2-bit
    assert not (tmp_path / "tiny.db").exists()
    capsys.readouterr()
    assert main(["sweep", str(study), "--models", "m999", "--store", str(job), "--quiet"]) == 2
    assert "no model(s) m999" in capsys.readouterr().err


def test_calibration_windows_come_from_a_seeded_document_sample(tmp_path):
    """Only a seeded sample of the calibration documents is tokenised (not a 100 MB split), the
    draw is the same for every call with that spec, and the sampler is part of the identity."""
    import torch
    from transformers import AutoTokenizer

    from qidlab.sweep import run as sweep_run
    from qidlab.sweep.study import CalibrationSpec

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", steps=1)
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    docs = tiny_corpus(2000)
    source = tmp_path / "calib.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    seen = []
    counting = lambda text, **kw: (seen.append(len(text)), tok(text, **kw))[1]  # noqa: E731
    spec = CalibrationSpec(source=source, n_samples=4, seq_len=32, seed=0)
    sweep_run._CALIBRATION_CACHE.clear()
    ids = sweep_run.calibration_ids(tok, spec)
    assert ids.shape == (4, 32) and ids.dtype == torch.long
    sweep_run._CALIBRATION_CACHE.clear()
    again = sweep_run.calibration_ids(type("T", (), {"__call__": staticmethod(counting),
                                                     "backend_tokenizer": tok.backend_tokenizer})(), spec)
    assert torch.equal(ids, again)
    assert 0 < sum(seen) < sum(len(d) for d in docs) / 4  # a small sample of the text was tokenised
    other = sweep_run.calibration_ids(tok, CalibrationSpec(source=source, n_samples=4, seq_len=32, seed=1))
    assert not torch.equal(ids, other)
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "tiny"}) + "\n")
    with pytest.raises(QidlabError, match="need more than seq_len=32"):
        sweep_run.calibration_ids(tok, CalibrationSpec(source=short, n_samples=4, seq_len=32, seed=0))
    study = type("S", (), {"calibration": spec, "scoring": {}, "path": tmp_path / "study.toml"})()
    identity = sweep_run.measurement_config({"method": "gptq", "bits": 4, "group_size": None}, study)
    assert identity["calibration"]["sampler"] == sweep_run.CALIBRATION_SAMPLER


def test_checkpoints_are_swept_coarse_to_fine_per_model():
    from collections import namedtuple

    from qidlab.sweep.run import coarse_to_fine

    R = namedtuple("R", "suite model step")
    steps = [64, 81, 102, 128, 161, 203, 256, 323, 406, 512, 645, 813, 1024, 1290, 1625, 1950]
    refs = [R("s", "b", 7)] + [R("s", "a", x) for x in reversed(steps)]
    order = coarse_to_fine(refs)
    assert sorted(order) == sorted(refs) and order[0] == R("s", "b", 7)
    a = [r.step for r in order if r.model == "a"]
    assert a[:3] == [1950, 64, 323]  # the ends, then the middle
    half = sorted(a[:len(a) // 2 + 1])  # any early stop keeps the range of D covered evenly
    assert half[0] == 64 and half[-1] == 1950 and max(b / c for b, c in zip(half[1:], half)) < 2.1


def test_store_recheck_recomputes_every_qid_and_ci_from_the_per_document_losses(suite, tmp_path, capsys):
    """`qidlab store recheck`: the paired bootstrap run again on the stored per-document losses gives
    the stored QiD and CI; a per-document loss changed afterwards is found."""
    import sqlite3

    run_study(load_study(_copy_study(suite, tmp_path)), progress=False)
    db = tmp_path / "tiny.db"
    assert main(["store", "recheck", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["checked"] == doc["recomputed"] == 8 and doc["differ"] == [] and doc["largest_difference"] <= 1e-12
    row = doc["rows"][0]
    assert row["recomputed"]["lo"] < row["recomputed"]["qid"] < row["recomputed"]["hi"]
    con = sqlite3.connect(db)
    mid = con.execute("SELECT id FROM measurements WHERE method = 'gptq'").fetchone()[0]
    con.execute("UPDATE doc_losses SET nll_sum = nll_sum + 5 WHERE measurement_id = ? AND doc_index = 0", (mid,))
    con.commit()
    con.close()
    assert main(["store", "recheck", str(db), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["differ"] == [mid]
    assert main(["store", "recheck", str(db), "--sample", "0"]) == 2
    assert "--sample must be a positive number" in capsys.readouterr().err
    assert main(["store", "recheck", str(db), "--tolerance", "-1"]) == 2
    assert "--tolerance must be a difference >= 0" in capsys.readouterr().err
