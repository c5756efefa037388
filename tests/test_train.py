"""qidlab.train: schedules, the suite file, the shared data order, determinism, resume, discovery."""

import hashlib
import json

import numpy as np
import pytest
from tiny_models import single_thread, tiny_corpus

from qidlab.checkpoints import discover, load_checkpoint
from qidlab.corpus import build_corpus, read_documents
from qidlab.errors import QidlabError
from qidlab.train import (batch_indices, check_fits, checkpoint_steps, document_order, load_suite_config,
                          lr_multiplier, train_suite)

SUITE = """
[suite]
name = "tiny"
corpus = "corpus"
seed = 0
tokenizer = 384
seq_len = 64
batch_size = 8
steps = 40
warmup = 4
checkpoints = {{ log_spaced_until = 8, every = 16 }}
{extra}
[[models]]
name = "h32-l1"
hidden = 32
layers = 1
heads = 4
lr = 3e-3

[[models]]
name = "h64-l2"
hidden = 64
layers = 2
heads = 4
lr = 2e-3
"""
STEPS = [0, 1, 2, 4, 8, 16, 32, 40]


def write_suite(folder, extra="", text=None):
    path = folder / "suite.toml"
    path.write_text(text if text is not None else SUITE.format(extra=extra))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in tiny_corpus(300)))
    build_corpus("files", root / "corpus", files=[docs])
    return root


def _digest(batch):
    return hashlib.sha256(batch.numpy().tobytes()).hexdigest()


def _weights(step_dir):
    from safetensors.torch import load_file

    return load_file(str(step_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(workdir):
    seen = {}
    with single_thread():
        paths = train_suite(write_suite(workdir), workdir / "run1", threads=1,
                            on_step=lambda e: seen.setdefault(e["model"], []).append((e["step"], _digest(e["batch"]))))
    return paths, seen


# ---- pure pieces ---------------------------------------------------------------------------------

def test_cosine_warms_up_then_decays_to_the_min_ratio():
    kw = dict(steps=100, schedule="cosine", warmup=10, min_lr_ratio=0.1)
    lrs = [lr_multiplier(s, **kw) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.5) and lrs[9] == 1.0 and lrs[10] == 1.0
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.55) and lrs[100] == pytest.approx(0.1)


def test_constant_and_wsd_shapes():
    assert [lr_multiplier(s, steps=50, schedule="constant", warmup=5) for s in (0, 4, 5, 49, 50)] == [0.2, 1, 1, 1, 1]
    kw = dict(steps=100, schedule="wsd", warmup=10, min_lr_ratio=0.0, decay_fraction=0.2)
    assert [lr_multiplier(s, **kw) for s in (9, 10, 50, 80)] == [1.0, 1.0, 1.0, 1.0]
    assert lr_multiplier(90, **kw) == pytest.approx(0.5) and lr_multiplier(100, **kw) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier(0, steps=10, schedule="linear")


def test_checkpoint_schedule_is_pythias():
    pythia = checkpoint_steps(143000, log_spaced_until=512, every=1000)
    assert pythia[:11] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512] and pythia[11:13] == [1000, 2000]
    assert pythia[-1] == 143000 and len(pythia) == 11 + 143
    assert checkpoint_steps(40, log_spaced_until=8, every=16) == STEPS
    assert checkpoint_steps(5, log_spaced_until=0, every=1000) == [0, 5]


def test_batch_order_is_pure_and_repeats_only_after_an_epoch():
    assert batch_indices(1, 4, 10, seed=0).tolist() == [4, 5, 6, 7]
    second = np.concatenate([batch_indices(s, 5, 10, seed=0) for s in (2, 3)])
    assert sorted(second.tolist()) == list(range(10)) and second.tolist() != list(range(10))
    assert batch_indices(3, 5, 10, seed=0).tolist() == batch_indices(3, 5, 10, seed=0).tolist()
    assert document_order(50, 1).tolist() == document_order(50, 1).tolist() != document_order(50, 2).tolist()


# ---- training --------------------------------------------------------------------------------------

def test_checkpoints_are_saved_exactly_at_the_scheduled_steps(trained, workdir):
    paths, _ = trained
    for model in ("h32-l1", "h64-l2"):
        found = sorted(int(p.name[4:]) for p in (workdir / "run1" / "tiny" / model).glob("step*"))
        assert found == STEPS
        assert [p.name for p in paths if p.parent.name == model] == [f"step{s}" for s in STEPS]
    meta = json.loads((workdir / "run1" / "tiny" / "h32-l1" / "step16" / "qidlab.json").read_text())
    assert meta["tokens"] == 16 * 8 * 64 and meta["step"] == 16 and meta["seed"] == 0
    assert meta["lr"] == pytest.approx(3e-3 * lr_multiplier(16, steps=40, warmup=4))
    stats = json.loads((workdir / "run1" / "tiny" / "h32-l1" / "train-stats.json").read_text())
    assert stats["steps_trained"] == 40 and stats["tokens_per_s"] > 0


def test_every_size_sees_the_same_batches(trained):
    _, seen = trained
    assert seen["h32-l1"] == seen["h64-l2"] and [s for s, _ in seen["h32-l1"]] == list(range(40))
    assert len({d for _, d in seen["h32-l1"]}) == 40


def test_training_learns_and_the_suite_is_discovered(trained, workdir):
    refs = discover(workdir / "run1")
    assert {(r.model, r.step) for r in refs} == {(m, s) for m in ("h32-l1", "h64-l2") for s in STEPS}
    assert all(r.suite == "tiny" and r.tokens == r.step * 512 and r.tokens_source == "qidlab.json" for r in refs)
    assert refs[0].info["hidden"] == 32 and refs[0].info["n_params"] > 0
    ckpt = load_checkpoint(next(r for r in refs if r.model == "h64-l2" and r.step == 40))
    assert ckpt.tokens == 40 * 512 and ckpt.step == 40 and ckpt.n_params == refs[-1].info["n_params"]
    first = json.loads((workdir / "run1" / "tiny" / "h64-l2" / "step1" / "qidlab.json").read_text())
    last = json.loads((workdir / "run1" / "tiny" / "h64-l2" / "step40" / "qidlab.json").read_text())
    assert last["train_loss"] < first["train_loss"] - 1.0
    # the saved tokenizer encodes as the token file was made
    data = json.loads((workdir / "run1" / "tiny" / "_data" / "data.json").read_text())
    tokens = np.memmap(workdir / "run1" / "tiny" / "_data" / "tokens.bin", dtype=data["dtype"], mode="r")
    doc = read_documents(workdir / "corpus", "train")[0]
    ids = ckpt.tokenizer(doc, add_special_tokens=False)["input_ids"] + [ckpt.tokenizer.eos_token_id]
    assert len(ckpt.tokenizer) == data["vocab_size"] <= 384 and data["eos_token_id"] == ckpt.tokenizer.eos_token_id
    as_text = tokens.tobytes()
    assert np.asarray(ids, dtype=data["dtype"]).tobytes() in as_text


def test_two_runs_with_one_seed_are_identical(trained, workdir):
    with single_thread():
        train_suite(write_suite(workdir), workdir / "run2", threads=1)
    for model in ("h32-l1", "h64-l2"):
        for step in (8, 40):
            a = (workdir / "run1" / "tiny" / model / f"step{step}" / "model.safetensors").read_bytes()
            b = (workdir / "run2" / "tiny" / model / f"step{step}" / "model.safetensors").read_bytes()
            assert a == b


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(trained, workdir):
    import torch

    def stop(event):
        if event["model"] == "h64-l2" and event["step"] == 25:
            raise Interrupt

    out = workdir / "run3"
    with single_thread(), pytest.raises(Interrupt):
        train_suite(write_suite(workdir), out, threads=1, on_step=stop)
    model_dir = out / "tiny" / "h64-l2"
    state = torch.load(model_dir / "trainer_state.pt", weights_only=True)
    assert state["step"] == 16 and not (model_dir / "step32").exists()
    assert not list(model_dir.glob("step*/*.pt")) and not list(model_dir.glob("step*/*.bin"))
    resumed = []
    with single_thread():
        train_suite(write_suite(workdir), out, threads=1, on_step=lambda e: resumed.append((e["model"], e["step"])))
    assert resumed == [("h64-l2", s) for s in range(16, 40)]  # h32-l1 was finished: skipped
    for step in (32, 40):
        a, b = _weights(workdir / "run1" / "tiny" / "h64-l2" / f"step{step}"), _weights(model_dir / f"step{step}")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- bad suite files -----------------------------------------------------------------------------

@pytest.mark.parametrize("edit, match", [
    (('steps = 40', 'steps = 40\nschedule = "linear"'), "unknown schedule 'linear'"),
    (('steps = 40', 'steps = 0'), "steps must be a positive integer, got 0"),
    (('steps = 40', 'steps = -5'), "steps must be a positive integer, got -5"),
    (('seed = 0', 'seed = 0\nlearning_rate = 1'), "unknown key 'learning_rate' in \\[suite\\]"),
    (('lr = 3e-3', 'lr = 3e-3\ndropout = 0.1'), "unknown key 'dropout' in models\\[0\\]"),
    (('every = 16', 'every = 16, linear = 3'), "unknown key 'linear' in \\[suite\\] checkpoints"),
    (('[suite]', '[optimizer]\nname = "adam"\n[suite]'), "unknown section 'optimizer'"),
    (('heads = 4\nlr = 3e-3', 'heads = 5\nlr = 3e-3'), "hidden \\(32\\) must be a multiple of heads \\(5\\)"),
    (('name = "h64-l2"', 'name = "h32-l1"'), "model name 'h32-l1' is used twice"),
    (('lr = 2e-3', 'lr = 0'), "lr must be a number > 0"),
    (('tokenizer = 384', 'tokenizer = 12'), "tokenizer must be a vocab size"),
])
def test_each_bad_suite_file_is_one_clear_error(tmp_path, edit, match):
    old, new = edit
    text = SUITE.format(extra="")
    assert old in text
    with pytest.raises(QidlabError, match=match):
        load_suite_config(write_suite(tmp_path, text=text.replace(old, new, 1)))


def test_a_model_too_big_for_the_corpus_is_refused_unless_epochs_allow(workdir, tmp_path):
    text = SUITE.format(extra="").replace("steps = 40", "steps = 4000")
    path = write_suite(tmp_path, text=text.replace('corpus = "corpus"', f'corpus = "{workdir / "corpus"}"'))
    with pytest.raises(QidlabError, match="too big for the corpus"):
        train_suite(path, tmp_path / "out")
    config = load_suite_config(write_suite(tmp_path, extra="epochs = 100"))
    assert check_fits(config, 10 * 64) == 10
    with pytest.raises(QidlabError, match="too big for the corpus"):
        check_fits(load_suite_config(write_suite(tmp_path)), 10 * 64)
    with pytest.raises(QidlabError, match="no such suite file"):
        load_suite_config(tmp_path / "missing.toml")


# ---- command line ----------------------------------------------------------------------------------

def test_cli_corpus_build_and_train(trained, workdir, tmp_path, capsys):
    from qidlab.cli import main

    assert main(["corpus", "build", "files", "--files", str(workdir / "docs.jsonl"), "--out", str(tmp_path / "c"),
                 "--seed", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["documents"]["train"] == 285 and doc["reused"] is False
    assert (tmp_path / "c" / "train.jsonl").read_bytes() == (workdir / "corpus" / "train.jsonl").read_bytes()
    # the suite of run1 is finished: `qidlab train` finds it so and trains nothing
    assert main(["train", str(workdir / "suite.toml"), "--out", str(workdir / "run1"), "--threads", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["suite"] == "tiny" and doc["tokens_per_step"] == 512 and len(doc["checkpoints"]) == 2 * len(STEPS)
    assert [m["model"] for m in doc["models"]] == ["h32-l1", "h64-l2"] and doc["models"][0]["tokens_per_s"] > 0
    assert main(["corpus", "build", "gutenberg", "--out", str(tmp_path / "b")]) == 2
    assert "unknown corpus recipe 'gutenberg'" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.toml"), "--out", str(tmp_path)]) == 2
    assert "no such suite file" in capsys.readouterr().err
