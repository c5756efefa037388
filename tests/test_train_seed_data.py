"""The suite key ``seed_data`` (train/config.py, train/data.py, train/branches.py, train/loop.py):
"documents" (default) gives each seed run S a token file of its own, the train documents in
``document_order(n_docs, S)`` read in consecutive batches, i.e. the procedure of a main run of the
suite with ``seed = S``; "sequences" keeps the seed runs trained before the key (Campaign 2's seeds
1, 2 of c2-en): a permutation of the suite's sequences drawn from (S, 2, epoch), with their
trajectory hashes. The manifest records each folder's ``batch_order``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from tiny_models import single_thread, tiny_corpus_folder

from qidlab.checkpoints import read_manifest
from qidlab.documents import read_documents
from qidlab.errors import QidlabError
from qidlab.train import folders_of, load_suite_config, train_suite

REPO = Path(__file__).resolve().parents[1]
B, T, STEPS = 8, 64, 12
SUITE = """
[suite]
name = "{name}"
corpus = "corpus"
seed = {seed}
tokenizer = 384
seq_len = 64
batch_size = 8
steps = 12
schedule = "constant"
warmup = 2
checkpoints = {{ log_spaced_until = 4, every = 100 }}
{suite_extra}

[[models]]
name = "h32-l1"
hidden = 32
layers = 1
heads = 4
lr = 3e-3
branches = {{ at = [8], average = 2, average_span = 0.25 }}
{extra}
"""


def write(folder: Path, file: str, *, name: str = "sd", seed: int = 0, suite_extra: str = "", extra: str = "") -> Path:
    path = folder / file
    path.write_text(SUITE.format(name=name, seed=seed, suite_extra=suite_extra, extra=extra))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed_data")
    tiny_corpus_folder(root)
    return root


def _train(path: Path, out: Path, on_step=None):
    with single_thread():
        return train_suite(path, out, threads=1, on_step=on_step)


def _batches(path: Path, out: Path) -> dict:
    """{folder: {step: batch}} of every update a training of ``path`` made."""
    seen = {}
    _train(path, out, lambda e: seen.setdefault(e["model"], {}).__setitem__(e["step"], e["batch"].numpy().copy()))
    return seen


@pytest.fixture(scope="module")
def documents(workdir):
    """The default (seed_data = "documents"): main run, seed run 1, their branches and averages."""
    path = write(workdir, "documents.toml", extra="seeds = [1]")
    return path, workdir / "documents" / "sd", _batches(path, workdir / "documents")


@pytest.fixture(scope="module")
def sequences(workdir):
    path = write(workdir, "sequences.toml", suite_extra='seed_data = "sequences"', extra="seeds = [1]")
    return path, workdir / "sequences" / "sd", _batches(path, workdir / "sequences")


def _tokens(folder: Path) -> np.ndarray:
    info = json.loads((folder / "data.json").read_text())
    return np.fromfile(folder / "tokens.bin", dtype=info["dtype"])


def _weights(step_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(step_dir / "model.safetensors"))


def _state_hash(run_dir: Path) -> str:
    import torch

    return torch.load(run_dir / "trainer_state.pt", weights_only=True)["model_hash"]


def _documented_hash(model_hash: str, run: str, seed: int, shuffled: bool) -> str:
    """branches.trajectory_hash as its docstring states it, for a run (no branch)."""
    doc = {"model_hash": model_hash, "run": run, "seed": seed, "shuffled": shuffled, "branch": None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# ---- "documents" ----------------------------------------------------------------------------------

def test_a_documents_seed_run_reads_its_own_file_of_the_documents_in_its_seeds_order(documents, workdir):
    path, suite, batches = documents
    own, shared = suite / "_data-seed1", suite / "_data"
    info, suite_info = (json.loads((f / "data.json").read_text()) for f in (own, shared))
    assert info["key"]["seed"] == 1 and suite_info["key"]["seed"] == 0
    docs = read_documents(workdir / "corpus", "train")
    order = np.random.default_rng([1, 0]).permutation(len(docs))  # document_order(n_docs, 1), as documented
    assert info["document_order_sha256"] == hashlib.sha256(order.astype(np.int64).tobytes()).hexdigest()
    assert info["document_order_sha256"] != suite_info["document_order_sha256"]
    # the same tokenizer, documents and <|eos|> separators, laid in seed 1's order
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(shared / "tokenizer"), local_files_only=True)
    expect = np.concatenate([tok(docs[i], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for i in order])
    tokens = _tokens(own)
    assert np.array_equal(tokens, expect)
    assert info["n_tokens"] == suite_info["n_tokens"] and not np.array_equal(tokens, _tokens(shared))
    assert info["bos_is_eos"] and info["bos_token_id"] == suite_info["bos_token_id"]
    for step, batch in batches["h32-l1-seed1"].items():  # consecutive windows of its own file, B per step
        want = tokens[step * B * T:(step + 1) * B * T].reshape(B, T)
        assert np.array_equal(batch, want), step
    assert not np.array_equal(batches["h32-l1-seed1"][0], batches["h32-l1"][0])
    assert np.array_equal(batches["h32-l1-seed1-cool8"][8], batches["h32-l1-seed1"][8])  # its branch continues it


def test_a_documents_seed_run_is_the_main_run_of_the_suite_with_that_seed(documents, workdir):
    """Same token file, same batches, same initialisation: on CPU the same weights, bit for bit, as the
    main run (and its branch and average) of a suite whose seed is 1; only the hash differs."""
    path, suite, batches = documents
    other = write(workdir, "seed1.toml", name="sd1", seed=1)
    main = _batches(other, workdir / "seed1")["h32-l1"]
    theirs = workdir / "seed1" / "sd1" / "_data" / "tokens.bin"
    assert (suite / "_data-seed1" / "tokens.bin").read_bytes() == theirs.read_bytes()
    assert sorted(main) == sorted(batches["h32-l1-seed1"]) == list(range(STEPS))
    assert all(np.array_equal(main[s], batches["h32-l1-seed1"][s]) for s in main)
    for a, b in (("h32-l1-seed1/step12", "h32-l1/step12"), ("h32-l1-seed1-cool8/step9", "h32-l1-cool8/step9"),
                 ("h32-l1-seed1-lawa2/step8", "h32-l1-lawa2/step8")):
        wa, wb = _weights(suite / a), _weights(workdir / "seed1" / "sd1" / b)
        assert wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa), a
    config = load_suite_config(path)
    mhash = config.model_hash(config.models[0])
    assert _state_hash(suite / "h32-l1") == mhash  # the main run's identity, as before
    assert _state_hash(suite / "h32-l1-seed1") == _documented_hash(mhash, "seed1", 1, False)
    assert _state_hash(suite / "h32-l1-seed1") != _documented_hash(mhash, "seed1", 1, True)
    meta = json.loads((suite / "h32-l1-seed1" / "step4" / "qidlab.json").read_text())
    assert meta["data"]["document_order_sha256"] == json.loads((suite / "_data-seed1" / "data.json").read_text())[
        "document_order_sha256"]


# ---- "sequences" ----------------------------------------------------------------------------------

def test_a_sequences_seed_run_keeps_todays_batches_and_hash(sequences, documents):
    path, suite, batches = sequences
    assert sorted(p.name for p in suite.glob("_data*")) == ["_data"]  # no file of its own
    tokens = _tokens(suite / "_data")
    n_seqs = len(tokens) // T
    perm = np.random.default_rng([1, 2, 0]).permutation(n_seqs)  # branches.sequence_order(n_seqs, 1, 0), as documented
    for step, batch in batches["h32-l1-seed1"].items():
        want = np.stack([tokens[i * T:(i + 1) * T] for i in perm[step * B:(step + 1) * B]])
        assert np.array_equal(batch, want), step
    config = load_suite_config(path)
    assert config.seed_data == "sequences"
    mhash = config.model_hash(config.models[0])
    assert mhash == load_suite_config(documents[0]).model_hash(load_suite_config(documents[0]).models[0])
    assert _state_hash(suite / "h32-l1-seed1") == _documented_hash(mhash, "seed1", 1, True)
    # the main run reads and weighs the same under either value
    assert all(np.array_equal(b, documents[2]["h32-l1"][s]) for s, b in batches["h32-l1"].items())
    wa, wb = _weights(suite / "h32-l1" / "step12"), _weights(documents[1] / "h32-l1" / "step12")
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)


def test_the_campaign_seeds_suite_keeps_its_shuffled_seed_runs():
    from qidlab.train.branches import trajectories

    config = load_suite_config(REPO / "campaign" / "campaign2-en-seeds-suite.toml")
    assert config.seed_data == "sequences"
    for m in config.models:
        runs = trajectories(m.name, config.seed, m.seeds, m.branches, m.main_run, config.seed_data)
        assert runs and all(t.shuffled and t.batch_order == "shuffled" for t in runs)


# ---- the manifest -------------------------------------------------------------------------------

def test_the_manifest_records_each_folders_batch_order(documents, sequences, tmp_path):
    for (path, suite, _), seeded in ((documents, "contiguous"), (sequences, "shuffled")):
        models = read_manifest(suite)["models"]
        config = load_suite_config(path)
        assert set(models) == set(folders_of(config.models[0]))
        for folder, entry in models.items():
            assert entry["info"]["batch_order"] == (seeded if "-seed1" in folder else "contiguous"), folder
    # a manifest written before the key (session 3's of c2-en: its seed runs were shuffled) still reads
    old = REPO / "campaign" / "results" / "2026-12-04-c2-s3" / "manifests" / "c2-en-seeds.toml"
    (tmp_path / "qidlab-suite.toml").write_text(old.read_text())
    models = read_manifest(tmp_path)["models"]
    assert "h768-l6-seed2-lawa5" in models and not any("batch_order" in e["info"] for e in models.values())


# ---- bad input, resume --------------------------------------------------------------------------

@pytest.mark.parametrize("value", ['"shuffled"', '"Documents"', "1", "true"])
def test_a_bad_seed_data_is_one_line_naming_the_key_and_its_values(tmp_path, value):
    with pytest.raises(QidlabError) as err:
        load_suite_config(write(tmp_path, "bad.toml", suite_extra=f"seed_data = {value}", extra="seeds = [1]"))
    msg = str(err.value)
    assert "\n" not in msg and "seed_data" in msg and "documents" in msg and "sequences" in msg and "bad.toml" in msg


def test_a_resumed_documents_seed_run_reuses_its_data_folder(documents, workdir):
    """Stopped mid-way through the seed run, a second call finds _data-seed1 (its key: the seed) and
    reuses it untouched, and reaches the uninterrupted run's weights."""
    path, suite, _ = documents
    out = workdir / "resumed"

    def stop(e):
        if e["model"] == "h32-l1-seed1" and e["step"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(path, out, stop)
    folder = out / "sd" / "_data-seed1"
    before = {f: os.stat(folder / f) for f in ("data.json", "tokens.bin")}
    assert (out / "sd" / "h32-l1-seed1" / "step4").is_dir() and not (out / "sd" / "h32-l1-seed1" / "step12").exists()
    logs = []
    with single_thread():
        train_suite(path, out, threads=1, log=logs.append)
    for f, st in before.items():
        now = os.stat(folder / f)
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size), f
    assert not any("seed 1's order" in line for line in logs)  # not laid out again
    assert any("h32-l1-seed1: resuming from step" in line for line in logs)
    wa, wb = _weights(out / "sd" / "h32-l1-seed1" / "step12"), _weights(suite / "h32-l1-seed1" / "step12")
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)


# ---- the campaign's files -----------------------------------------------------------------------

def test_the_campaign_documents_seeds_suite_adds_seeds_3_and_4_beside_the_shuffled_ones():
    """campaign2-en-seeds-doc-suite.toml: the seeds suite's models, lrs and branches, seeds 3 and 4 read
    as documents, no main run; the same model hashes (so the same suite c2-en), no folder shared with
    seeds 1 and 2; its two plans cover every model once."""
    seq = load_suite_config(REPO / "campaign" / "campaign2-en-seeds-suite.toml")
    doc = load_suite_config(REPO / "campaign" / "campaign2-en-seeds-doc-suite.toml")
    assert doc.name == seq.name and doc.seed_data == "documents" and doc.lr_sweep is None
    assert [m.name for m in doc.models] == [m.name for m in seq.models]
    for a, b in zip(doc.models, seq.models):
        assert a.seeds == (3, 4) and not a.main_run
        assert (a.lr, a.branches, a.branch_spec) == (b.lr, b.branches, b.branch_spec), a.name
        assert doc.model_hash(a) == seq.model_hash(b), a.name
        assert not set(folders_of(a, doc.seed)) & set(folders_of(b, seq.seed)), a.name
    planned = []
    for plan in ("campaign2-seedsdoc-s1.plan", "campaign2-seedsdoc-s2.plan"):
        text = (REPO / "campaign" / plan).read_text()
        assert f"bash campaign/job.sh campaign/{plan}" in text and "LR_SWEEP=1" not in text
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                suite, study, *models = line.split()
                assert suite == "campaign/campaign2-en-seeds-doc-suite.toml"
                assert study == "campaign/campaign2-en-study.toml"
                planned += models
    assert sorted(planned) == sorted(m.name for m in doc.models)
