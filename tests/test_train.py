"""qidlab.train: schedules, the suite file, the shared data order, determinism, resume, discovery."""

import hashlib
import json

import numpy as np
import pytest
from tiny_models import single_thread, tiny_corpus_folder

from qidlab.checkpoints import discover, load_checkpoint
from qidlab.corpus import read_documents
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
    tiny_corpus_folder(root)
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


def test_checkpoints_per_octave_are_log_spaced_and_leave_older_suites_alone(workdir):
    three = checkpoint_steps(1536, log_spaced_until=1536, every=10_000, per_octave=3)
    assert three[:9] == [0, 1, 2, 3, 4, 5, 6, 8, 10] and three[-1] == 1536
    late = np.array([s for s in three[:-1] if s >= 32], dtype=float)  # the last step is off the grid
    assert np.allclose(np.diff(np.log2(late)), 1 / 3, atol=0.06)  # a third of an octave apart
    assert checkpoint_steps(40, log_spaced_until=8, every=16, per_octave=1) == STEPS
    plain = load_suite_config(write_suite(workdir))
    spelled = load_suite_config(write_suite(workdir, text=SUITE.format(extra="").replace(
        "every = 16 }", "every = 16, per_octave = 1 }")))
    denser = load_suite_config(write_suite(workdir, text=SUITE.format(extra="").replace(
        "every = 16 }", "every = 16, per_octave = 2 }")))
    model = plain.models[0]
    assert plain.model_hash(model) == spelled.model_hash(model) != denser.model_hash(model)
    with pytest.raises(QidlabError, match="checkpoints.per_octave must be a positive integer"):
        load_suite_config(write_suite(workdir, text=SUITE.format(extra="").replace(
            "every = 16 }", "every = 16, per_octave = 0 }")))


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


def test_models_trained_in_separate_jobs_equal_the_whole_suite(trained, workdir):
    """One model per call (one GPU job each) gives the same suite as one call for all."""
    with single_thread():
        first = train_suite(write_suite(workdir), workdir / "jobs", threads=1, models=["h64-l2"])
        assert {p.parent.name for p in first} == {"h64-l2"}
        assert not (workdir / "jobs" / "tiny" / "h32-l1").exists()
        train_suite(write_suite(workdir), workdir / "jobs", threads=1, models=["h32-l1"])
    for model in ("h32-l1", "h64-l2"):
        a = (workdir / "run1" / "tiny" / model / "step40" / "model.safetensors").read_bytes()
        b = (workdir / "jobs" / "tiny" / model / "step40" / "model.safetensors").read_bytes()
        assert a == b
    with pytest.raises(QidlabError, match="has no model\\(s\\) h128"):
        train_suite(write_suite(workdir), workdir / "jobs", models=["h128"])


def test_data_only_prepares_the_shared_token_file_and_trains_nothing(trained, workdir):
    assert train_suite(write_suite(workdir), workdir / "prepared", data_only=True) == []
    suite_dir = workdir / "prepared" / "tiny"
    made = (suite_dir / "_data" / "tokens.bin").read_bytes()
    assert made == (workdir / "run1" / "tiny" / "_data" / "tokens.bin").read_bytes()
    assert sorted(p.name for p in suite_dir.iterdir()) == ["_data"]


def test_the_scoring_prefix_is_a_token_every_model_trained_on(trained, workdir):
    """BOS = EOS (qidlab.train.data): the scorer's default prefix, the tokenizer's BOS, is <|eos|>, which
    precedes every training document, so its embedding row moves from its initial value like the
    other rows; the <|bos|> row (id 0), the prefix of suites made before, stays where it was."""
    from qidlab.checkpoints import read_manifest
    from qidlab.evaluate.score import prefix_token

    suite = workdir / "run1" / "tiny"
    data = json.loads((suite / "_data" / "data.json").read_text())
    assert read_manifest(suite)["bos_is_eos"] is True and data["bos_is_eos"] is True
    tokens = np.memmap(suite / "_data" / "tokens.bin", dtype=data["dtype"], mode="r")
    seen = np.unique(np.asarray(tokens)).tolist()
    for model in ("h32-l1", "h64-l2"):
        ckpt = load_checkpoint(suite / model / "step40")
        tok = ckpt.tokenizer
        assert tok.bos_token_id == tok.eos_token_id == 1 == ckpt.model.config.bos_token_id
        assert tok.convert_ids_to_tokens(0) == "<|bos|>"  # ids unchanged: <|bos|> is kept, unused
        prefix = prefix_token(tok, None)
        assert prefix == tok.eos_token_id
        key = "gpt_neox.embed_in.weight"
        change = (_weights(suite / model / "step40")[key] - _weights(suite / model / "step0")[key]).norm(dim=1)
        median = float(change[seen].median())  # rows of the tokens in the training data (most bytes never occur)
        assert median > 0 and float(change[prefix]) > 0.5 * median
        assert float(change[0]) < 0.05 * median  # a never-seen row moves only by weight decay


def test_a_suite_made_before_bos_is_eos_keeps_its_tokenizer(trained, workdir):
    """Data prepared before BOS = EOS (no ``bos_is_eos`` in data.json, <|bos|> as BOS) is reused as it
    is, and the manifest then says bos_is_eos = false: the suite stays one convention."""
    import shutil

    from transformers import AutoTokenizer

    from qidlab.checkpoints import read_manifest
    from qidlab.train.data import prepare_data
    from qidlab.train.loop import _write_suite_manifest

    old = workdir / "old-suite" / "tiny"
    shutil.copytree(workdir / "run1" / "tiny" / "_data", old / "_data")
    info = json.loads((old / "_data" / "data.json").read_text())
    for key in ("bos_is_eos", "bos_token_id"):
        info.pop(key)
    (old / "_data" / "data.json").write_text(json.dumps(info))
    tok = AutoTokenizer.from_pretrained(str(old / "_data" / "tokenizer"), local_files_only=True)
    tok.bos_token = "<|bos|>"
    tok.save_pretrained(old / "_data" / "tokenizer")
    config = load_suite_config(write_suite(workdir))
    data = prepare_data(config, old)
    assert data.tokenizer.bos_token_id == 0 != data.tokenizer.eos_token_id
    _write_suite_manifest(config, old, {"h32-l1": 1, "h64-l2": 2}, {}, data.tokenizer)
    assert read_manifest(old)["bos_is_eos"] is False


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
    run1 = workdir / "run1" / "tiny" / "h64-l2"
    for name in ("train-log.csv", "weight-dynamics.json"):
        assert (model_dir / name).read_bytes() == (run1 / name).read_bytes()


# ---- training log --------------------------------------------------------------------------------

def _log_rows(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "step,tokens,loss,lr"
    return [(int(a), int(b), float(c), float(d)) for a, b, c, d in (line.split(",") for line in lines[1:])]


def test_train_log_has_a_row_per_update_matching_the_checkpoints(trained, workdir):
    model_dir = workdir / "run1" / "tiny" / "h32-l1"
    rows = _log_rows(model_dir / "train-log.csv")
    assert [r[0] for r in rows] == list(range(1, 41)) and all(r[1] == r[0] * 512 for r in rows)
    assert all(r[3] == pytest.approx(3e-3 * lr_multiplier(r[0] - 1, steps=40, warmup=4)) for r in rows)
    for step in (1, 16, 40):  # the row of step N is the loss of update N - 1, as qidlab.json's train_loss
        meta = json.loads((model_dir / f"step{step}" / "qidlab.json").read_text())
        assert rows[step - 1][2] == meta["train_loss"]
    assert rows[0][2] == pytest.approx(np.log(384), rel=0.1) and rows[-1][2] < rows[0][2] - 1.0


ONE_MODEL = SUITE.split("[[models]]")[0] + """[[models]]
name = "h32-l1"
hidden = 32
layers = 1
heads = 4
lr = 3e-3
"""


def test_train_log_every_k_updates_survives_an_interruption(workdir):
    text = ONE_MODEL.format(extra="log_every = 5").replace('corpus = "corpus"', f'corpus = "{workdir / "corpus"}"')

    def stop(event):
        if event["step"] == 22:
            raise Interrupt

    (workdir / "k5").mkdir()
    suite = write_suite(workdir / "k5", text=text)
    with single_thread():
        train_suite(suite, workdir / "k5" / "a", threads=1)
        with pytest.raises(Interrupt):
            train_suite(suite, workdir / "k5" / "b", threads=1, on_step=stop)
        broken = _log_rows(workdir / "k5" / "b" / "tiny" / "h32-l1" / "train-log.csv")
        assert broken[-1][0] == 20  # rows after the last checkpoint (16) were written ...
        train_suite(suite, workdir / "k5" / "b", threads=1)
    a, b = (workdir / "k5" / run / "tiny" / "h32-l1" / "train-log.csv" for run in "ab")
    assert a.read_bytes() == b.read_bytes()  # ... and replaced, neither duplicated nor lost
    steps = [r[0] for r in _log_rows(a)]
    assert steps == [1, 2, 4, 5, 8, 10, 15, 16, 20, 25, 30, 32, 35, 40]  # every 5th and every checkpoint


def test_train_log_reopened_keeps_whole_rows_up_to_the_resumed_step(tmp_path):
    from qidlab.train.records import DynamicsLog, TrainLog

    path = tmp_path / "train-log.csv"
    path.write_text("step,tokens,loss,lr\n1,8,5.5,0.1\n2,16,5.25,0.1\n3,24,5.0,0.1\n4,3")  # killed mid-row
    with TrainLog(path, 2) as log:
        log.append(3, 24, 4.75, 0.05)
    assert path.read_text() == "step,tokens,loss,lr\n1,8,5.5,0.1\n2,16,5.25,0.1\n3,24,4.75,0.05\n"
    TrainLog(path, 0).close()
    assert path.read_text() == "step,tokens,loss,lr\n"
    (tmp_path / "weight-dynamics.json").write_text('{"model": "m", "checkpoints": [{"st')
    with pytest.raises(QidlabError, match="cannot read the weight dynamics to resume"):
        DynamicsLog(tmp_path / "weight-dynamics.json", "m", 8)


# ---- weight dynamics -----------------------------------------------------------------------------

def test_change_summary_bins_quantiles_and_moments():
    from qidlab.train.dynamics import LOG10_EDGES, change_summary

    small, large = 10 ** -2.95, -(10 ** -0.55)  # bin centres: [-3.0, -2.9) and [-0.6, -0.5)
    deltas = [np.full((9, 10), small, dtype=np.float32), np.array([large] * 9 + [0.0], dtype=np.float32)]
    out = change_summary(deltas)
    assert out["log10_edges"] == list(LOG10_EDGES) and len(out["counts"]) == 130 and sum(out["counts"]) == 100
    assert out["counts"][90] == 90 and out["counts"][114] == 9 and out["counts"][0] == 1  # zero: first bin
    assert out["quantiles"]["0.5"] == pytest.approx(small) and out["quantiles"]["0.99"] == pytest.approx(-large)
    assert out["rms"] == pytest.approx(np.sqrt((90 * small ** 2 + 9 * large ** 2) / 100), rel=1e-6)
    assert out["mean_abs"] == pytest.approx((90 * small - 9 * large) / 100, rel=1e-6)


def test_weight_dynamics_are_the_changes_between_saved_checkpoints(trained, workdir):
    from qidlab.train.dynamics import change_summary

    model_dir = workdir / "run1" / "tiny" / "h64-l2"
    doc = json.loads((model_dir / "weight-dynamics.json").read_text())
    assert doc["model"] == "h64-l2" and set(doc) == {"model", "checkpoints"}
    entries = doc["checkpoints"]
    assert [(c["step"], c["prev_step"], c["tokens"]) for c in entries] == [
        (s, p, s * 512) for p, s in zip(STEPS[:-1], STEPS[1:])]
    a, b = _weights(model_dir / "step16"), _weights(model_dir / "step32")
    names = [k for k in a if ".layers." in k and "weight" in k and a[k].dim() == 2]
    assert len(names) == 2 * 4  # qkv, attention out, MLP in, MLP out per block
    expected = change_summary([(b[k] - a[k]).numpy() for k in names])
    got = next(c for c in entries if c["step"] == 32)
    assert got["counts"] == expected["counts"] and got["quantiles"] == expected["quantiles"]
    assert got["rms"] == pytest.approx(expected["rms"], rel=1e-12) and got["mean_abs"] == pytest.approx(
        expected["mean_abs"], rel=1e-12)  # summed in another order
    assert sum(got["counts"]) == sum(a[k].numel() for k in names)
    # Adam's first update moves (nearly) every weight by the learning rate: 2e-3 / warmup 4
    assert entries[0]["quantiles"]["0.5"] == pytest.approx(2e-3 / 4, rel=0.01)


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
    (('steps = 40', 'steps = 40\nlog_every = 0'), "log_every must be a positive integer, got 0"),
    (('steps = 40', 'steps = 40\ndevice = "gpu"'), 'device must be "auto", "cpu", "cuda" or "cuda:N"'),
    (('steps = 40', 'steps = 40\ncompile = "yes"'), "compile must be true or false"),
    (('steps = 40', 'steps = 40\nlr_sweep = { factors = [] }'), "lr_sweep.factors must be a non-empty list"),
    (('steps = 40', 'steps = 40\nlr_sweep = { factors = [1], lrs = [1e-3] }'), "factors or lrs, not both"),
    (('steps = 40', 'steps = 40\nlr_sweep = { steps = 0 }'), "lr_sweep.steps must be a positive integer"),
    (('steps = 40', 'steps = 40\nlr_sweep = { grid = 3 }'), "unknown key 'grid' in lr_sweep"),
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


# ---- speed and devices -----------------------------------------------------------------------------

def test_flops_per_token_peak_and_mfu():
    from qidlab.train.speed import flops_per_token, mfu, peak_flops

    # Pythia-160m's shape: N = 85,056,000, V = 50,304, h = 768, L = 12, T = 2048
    assert flops_per_token(85_056_000, 50_304, 768, 12, 2048) == 6 * 85_056_000 + 6 * 50_304 * 768 + 12 * 12 * 768 * 2048
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12 and peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("cpu") is None and peak_flops("NVIDIA L4") is None and peak_flops("NVIDIA L4", 121) == 121e12
    assert mfu(1e5, 1e9, 989e12) == pytest.approx(1e14 / 989e12) and mfu(1e5, 1e9, None) is None
    with pytest.raises(QidlabError, match="peak TFLOP/s must be a positive number"):
        peak_flops("NVIDIA H100", 0)


def test_device_selection_and_cpu_train_stats(trained, workdir):
    from qidlab.train.engine import resolve_device
    from qidlab.train.speed import flops_per_token

    assert resolve_device("cpu").type == "cpu"
    import torch

    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(QidlabError, match="sees no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(QidlabError, match="device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        resolve_device("tpu")
    stats = json.loads((workdir / "run1" / "tiny" / "h64-l2" / "train-stats.json").read_text())
    n = discover(workdir / "run1")[-1].info["n_params"]
    assert stats["flops_per_token"] == flops_per_token(n, 384, 64, 2, 64)
    assert stats["device"] == "cpu" and stats["mfu"] is None and stats["autocast"] is None
    meta = json.loads((workdir / "run1" / "tiny" / "h64-l2" / "step8" / "qidlab.json").read_text())
    assert "device" not in meta  # CPU checkpoints are what they were


def test_bench_train_speed_runs_a_tiny_model_on_cpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(root / "bench" / "train_speed.py"), "--shape", "tiny", "--device", "cpu",
                           "--steps", "3", "--warmup-steps", "1", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                            "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["device"] == "cpu" and doc["steps"] == 3 and doc["tokens_per_s"] > 0 and doc["mfu"] is None
    # 2 blocks of 12 h^2 weights, 9 h biases and 4 h LayerNorm parameters, and the final LayerNorm
    assert doc["model"]["n_params_nonembedding"] == 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64
    assert "tokens/s" in proc.stdout


# ---- learning-rate sweep ---------------------------------------------------------------------------

def test_lr_grid_and_pick():
    from qidlab.train.lr_sweep import LRSweep, lr_grid, pick

    assert lr_grid(1e-3, LRSweep()) == pytest.approx([2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3])
    assert lr_grid(1e-3, LRSweep(lrs=(3e-4, 1e-2))) == [3e-4, 1e-2]
    assert pick([1e-4, 1e-3, 1e-2], [4.0, 3.5, float("inf")]) == 1e-3
    assert pick([1e-4, 1e-3], [3.5, 3.5]) == 1e-4  # a tie goes to the smaller rate
    with pytest.raises(QidlabError, match="every learning rate of the sweep diverged"):
        pick([1e-2, 1e-1], [float("inf"), float("inf")])


def test_lr_sweep_picks_the_best_rate_and_the_model_trains_with_it(workdir, capsys):
    import tomllib

    from qidlab.cli import main

    text = ONE_MODEL.format(extra="lr_sweep = { factors = [0.01, 1, 30, 3000], steps = 12, eval_batches = 2 }")
    folder = workdir / "sweep"
    folder.mkdir()
    suite = write_suite(folder, text=text.replace('corpus = "corpus"', f'corpus = "{workdir / "corpus"}"'))
    lines = []
    with single_thread():
        train_suite(suite, folder / "out", threads=1, log=lines.append)
    suite_dir = folder / "out" / "tiny"
    result = json.loads((suite_dir / "h32-l1" / "lr-sweep.json").read_text())["result"]
    assert result["lrs"] == pytest.approx([3e-5, 3e-3, 9e-2, 9.0]) and result["steps"] == 12
    losses = result["heldout_loss"]
    assert result["base_lr"] == 3e-3 and result["chosen"] == result["lrs"][losses.index(min(losses))]
    # 1 % of the rate barely moves from log(vocab) in 12 steps; 3000 x blows up; in between, a short run
    # prefers the larger rate
    assert losses[0] > 5.0 and losses[3] > losses[0] and losses[2] < losses[1] < losses[0]
    assert result["chosen"] == pytest.approx(9e-2)
    manifest = tomllib.loads((suite_dir / "qidlab-suite.toml").read_text())["models"]["h32-l1"]
    assert manifest["lr"] == result["chosen"] and manifest["lr_sweep"]["heldout_loss"] == result["heldout_loss"]
    assert json.loads((suite_dir / "h32-l1" / "step40" / "qidlab.json").read_text())["peak_lr"] == result["chosen"]
    assert sum("held-out loss" in line for line in lines) == 4
    # a second call finds the sweep and the model done; --lr-sweep on the command line reports it
    stamps = [(suite_dir / "h32-l1" / f).stat().st_mtime_ns for f in ("lr-sweep.json", "trainer_state.pt")]
    with single_thread():
        assert main(["train", str(suite), "--out", str(folder / "out"), "--threads", "1", "--lr-sweep", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["lr_sweep"]["h32-l1"] == result
    assert stamps == [(suite_dir / "h32-l1" / f).stat().st_mtime_ns for f in ("lr-sweep.json", "trainer_state.pt")]
    # the suite without the sweep is another training run: refused with a hint
    assert main(["train", str(write_suite(folder, text=ONE_MODEL.format(extra="").replace(
        'corpus = "corpus"', f'corpus = "{workdir / "corpus"}"'))),
        "--out", str(folder / "out"), "--threads", "1"]) == 2
    assert "sweep again with --lr-sweep" in capsys.readouterr().err


def test_lr_sweeps_run_per_model_with_data_only_then_are_read_back(workdir, capsys):
    """Side-by-side GPU jobs: `--data-only --lr-sweep --models M` sweeps only M; the training calls
    that follow find every model's sweep and do not run it again."""
    folder = workdir / "split-sweep"
    folder.mkdir()
    suite = write_suite(folder, text=SUITE.format(extra="lr_sweep = { factors = [0.5, 2], steps = 6, eval_batches = 1 }")
                        .replace('corpus = "corpus"', f'corpus = "{workdir / "corpus"}"'))
    suite_dir = folder / "out" / "tiny"
    from qidlab.cli import main

    cli = ["train", str(suite), "--out", str(folder / "out"), "--threads", "1", "--data-only"]
    with single_thread():
        assert main(cli + ["--no-lr-sweep", "--quiet"]) == 0  # the data only, although the suite has a table
        assert (suite_dir / "_data").is_dir() and not list(suite_dir.glob("*/lr-sweep.json"))
        assert capsys.readouterr().out.startswith("tiny: data ready in ")
        assert main(cli + ["--lr-sweep", "--models", "h64-l2", "--json"]) == 0
        assert list(json.loads(capsys.readouterr().out)["lr_sweep"]) == ["h64-l2"]  # what is swept so far
        assert (suite_dir / "h64-l2" / "lr-sweep.json").is_file() and not (suite_dir / "h32-l1").exists()
        assert not list((suite_dir / "h64-l2").glob("step*"))
        train_suite(suite, folder / "out", threads=1, data_only=True, models=["h32-l1"])
        lines = []
        train_suite(suite, folder / "out", threads=1, models=["h32-l1"], log=lines.append)
    assert not any("held-out loss" in line for line in lines)  # both read back, none swept again
    assert sum("lr sweep done before" in line for line in lines) == 2
    chosen = json.loads((suite_dir / "h32-l1" / "lr-sweep.json").read_text())["result"]["chosen"]
    assert json.loads((suite_dir / "h32-l1" / "step40" / "qidlab.json").read_text())["peak_lr"] == chosen
