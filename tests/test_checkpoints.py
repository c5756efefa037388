"""Checkpoints stage: parameter counts, safe loading with one-line errors, suite discovery."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import ARCHS, make_tiny_checkpoint, tiny_config, tiny_corpus, train_tokenizer  # noqa: E402

from qidlab.checkpoints import (  # noqa: E402
    CheckpointRef,
    content_hash,
    count_params,
    discover,
    load_checkpoint,
    load_suite,
)
from qidlab.errors import QidlabError  # noqa: E402

PYTHIA_TOKENS_PER_STEP = 2_097_152


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """One briefly trained tiny checkpoint per architecture (loading does not need a good model)."""
    root = tmp_path_factory.mktemp("ckpts")
    return {arch: make_tiny_checkpoint(root / arch, arch=arch, steps=10, seed=1) for arch in ARCHS}


def _param_name(key):
    """transformers 5 saves GPT-NeoX's head under its old name, `embed_out`."""
    return "lm_head." + key[len("embed_out."):] if key.startswith("embed_out.") else key


def _copy(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- count_params


def _hand_count(arch, c):
    """(N, total) from the config by hand: the formula a reader can check against the papers."""
    h, L, V, i = c.hidden_size, c.num_hidden_layers, c.vocab_size, c.intermediate_size
    if arch == "gpt_neox":
        per_layer = 2 * 2 * h + (3 * h * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h)
        assert i == 4 * h and per_layer == 12 * h * h + 13 * h  # Kaplan's 12 h^2 (+ biases, norms)
        n = L * per_layer + 2 * h  # final layer norm: weight and bias
        return n, n + 2 * V * h  # untied embed_in and lm_head
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h  # q, o; k, v; gate, up, down; 2 RMSNorms
    if arch == "qwen2":
        per_layer += h + 2 * kv  # q, k, v biases
    n = L * per_layer + h  # final RMSNorm
    tied = c.tie_word_embeddings
    return n, n + (1 if tied else 2) * V * h


@pytest.mark.parametrize("arch", ARCHS)
def test_count_params_matches_hand_formula(arch):
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, vocab_size=300, hidden=48, layers=3, heads=4)
    model = AutoModelForCausalLM.from_config(config)
    assert count_params(model) == _hand_count(arch, config)


def test_count_params_tied_counted_once_and_position_embeddings_excluded():
    from transformers import GPT2Config, GPT2LMHeadModel

    h, L, V, P = 32, 2, 100, 64
    model = GPT2LMHeadModel(GPT2Config(n_embd=h, n_layer=L, n_head=4, vocab_size=V, n_positions=P))
    assert model.lm_head.weight is model.transformer.wte.weight
    n, total = count_params(model)
    assert n == L * (12 * h * h + 13 * h) + 2 * h
    assert total == n + V * h + P * h  # wte once (tied with the head), wpe once


# ---------------------------------------------------------------- load_checkpoint


@pytest.mark.parametrize("arch", ARCHS)
def test_load_checkpoint_round_trip(ckpts, arch):
    from safetensors.torch import load_file

    ck = load_checkpoint(ckpts[arch])
    assert (ck.n_params, ck.n_params_total) == count_params(ck.model)
    assert ck.n_params < ck.n_params_total
    meta = json.loads((ckpts[arch] / "qidlab.json").read_text())
    assert ck.tokens == meta["tokens"] == 10 * meta["tokens_per_step"] and ck.step == 10
    assert ck.tokenizer is not None and len(ck.tokenizer) <= ck.model.get_input_embeddings().weight.shape[0]
    assert ck.config["model_type"] == arch and ck.weight_format == "safetensors"
    assert next(ck.model.parameters()).dtype == torch.float32
    saved = load_file(str(ckpts[arch] / "model.safetensors"))
    params = dict(ck.model.named_parameters())
    assert len(saved) >= len(params) - 1  # all but a tied head are in the file
    for name, tensor in saved.items():
        assert torch.equal(params[_param_name(name)], tensor), name
    assert ck.content_hash == content_hash(ckpts[arch]) == load_checkpoint(ckpts[arch]).content_hash
    if arch == "qwen2":  # tied: the head adds nothing to the total
        h, V = ck.config["hidden_size"], ck.config["vocab_size"]
        assert ck.n_params_total - ck.n_params == V * h


def test_load_checkpoint_dtype(ckpts):
    ck = load_checkpoint(ckpts["llama"], dtype=torch.bfloat16)
    assert {p.dtype for p in ck.model.parameters()} == {torch.bfloat16}


def test_content_hash_changes_with_weights(ckpts, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(ckpts["gpt_neox"], tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["gpt_neox.final_layer_norm.weight"][0] += 1.0
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert content_hash(folder) != content_hash(ckpts["gpt_neox"])


def test_missing_path_and_not_a_folder(tmp_path, ckpts):
    with pytest.raises(QidlabError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(QidlabError, match="not a folder"):
        load_checkpoint(ckpts["gpt_neox"] / "config.json")


def test_folder_without_config(ckpts, tmp_path):
    folder = _copy(ckpts["gpt_neox"], tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(QidlabError, match="no config.json"):
        load_checkpoint(folder)


def test_bad_config_json_and_no_weights(ckpts, tmp_path):
    folder = _copy(ckpts["gpt_neox"], tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(QidlabError, match="no weight files"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(QidlabError, match="config.json: not valid JSON"):
        load_checkpoint(folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_or_truncated_safetensors(ckpts, tmp_path, damage):
    folder = _copy(ckpts["gpt_neox"], tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000] if damage == "truncate" else b"\x07" * 64)
    with pytest.raises(QidlabError, match="corrupt or truncated safetensors file .*model.safetensors") as err:
        load_checkpoint(folder)
    assert "\n" not in str(err.value)


def test_nan_weights_name_the_tensor(ckpts, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(ckpts["gpt_neox"], tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["gpt_neox.layers.1.attention.dense.weight"][3, 4] = float("nan")
    state["gpt_neox.layers.1.attention.dense.weight"][0, 0] = float("inf")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(QidlabError, match=r"gpt_neox\.layers\.1\.attention\.dense\.weight has 2 NaN/inf"):
        load_checkpoint(folder)


def test_pickle_refused_then_loaded_with_weights_only(ckpts, tmp_path):
    from safetensors.torch import load_file

    folder = _copy(ckpts["gpt_neox"], tmp_path)
    state = {_param_name(k): v for k, v in load_file(str(folder / "model.safetensors")).items()}
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(QidlabError, match="pickled weights .*allow_pickle=True"):
        load_checkpoint(folder)
    torch.save({"python": object()}, folder / "rng_state_0.pth")  # Trainer state: not weights, not read
    torch.save({"lr": 1e-3}, folder / "optimizer.pt")
    ck = load_checkpoint(folder, allow_pickle=True)
    assert ck.weight_format == "pickle"
    params = dict(ck.model.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in state.items())
    assert ck.content_hash != content_hash(ckpts["gpt_neox"])

    # old GPT-NeoX naming of the head (`embed_out`) in a *.pt file
    (folder / "pytorch_model.bin").unlink()
    state["embed_out.weight"] = state.pop("lm_head.weight")
    torch.save(state, folder / "model.pt")
    ck = load_checkpoint(folder, allow_pickle=True)
    assert torch.equal(ck.model.lm_head.weight, state["embed_out.weight"])

    # a state dict missing a real tensor is an error, not a silently random weight
    del state["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
    torch.save(state, folder / "model.pt")
    with pytest.raises(QidlabError, match="weights missing for 1 tensors .*dense_h_to_4h"):
        load_checkpoint(folder, allow_pickle=True)


class _Payload:
    """Unpickling this with full pickle would create a file: weights_only must refuse it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_pickle_with_code_is_not_executed(ckpts, tmp_path):
    folder = _copy(ckpts["gpt_neox"], tmp_path)
    (folder / "model.safetensors").unlink()
    target = tmp_path / "pwned"
    torch.save({"x": _Payload(target)}, folder / "pytorch_model.bin")
    with pytest.raises(QidlabError, match="weights_only=True"):
        load_checkpoint(folder, allow_pickle=True)
    assert not target.exists()


def test_tokenizer_larger_than_embedding(ckpts, tmp_path):
    folder = _copy(ckpts["llama"], tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).unlink()
    train_tokenizer(tiny_corpus(200), vocab_size=700).save_pretrained(folder)
    mismatch = r"tokenizer/model mismatch: the tokenizer has 6\d\d tokens but the embedding only 512 rows"
    with pytest.raises(QidlabError, match=mismatch):
        load_checkpoint(folder)


def test_no_tokenizer_is_none(ckpts, tmp_path):
    folder = _copy(ckpts["llama"], tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).unlink()
    assert load_checkpoint(folder).tokenizer is None


def test_importing_checkpoints_stays_lean():
    code = ("import sys, qidlab.checkpoints, qidlab.evaluate; "
            "print('torch' in sys.modules or 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- discover


def _fake_suite(root, models_steps):
    """A Pythia-shaped tree whose checkpoint folders hold only a config (discover loads nothing)."""
    for model, steps in models_steps.items():
        for step in steps:
            d = root / model / f"step{step}"
            d.mkdir(parents=True)
            (d / "config.json").write_text("{}")
    return root


def test_discover_pythia_layout_with_toml_manifest(tmp_path):
    root = _fake_suite(tmp_path / "pythia", {"pythia-70m": [1000, 2, 0, 143000, 10],
                                             "pythia-160m": [1000, 512]})
    (root / "pythia-70m" / "notes").mkdir()  # not a step folder: ignored
    (root / "pythia-70m" / "step7").mkdir()  # a step folder without config.json: ignored
    (root / "qidlab-suite.toml").write_text(f"""
tokens_per_step = {PYTHIA_TOKENS_PER_STEP}

[tokens]
"pythia-160m/step512" = 123

[models.pythia-70m]
family = "pythia"
tokens = {{ step10 = 77 }}
""")
    (root / "pythia-70m" / "step2" / "qidlab.json").write_text(json.dumps({"tokens": 5}))
    refs = discover(root)
    assert [(r.model, r.step) for r in refs] == [
        ("pythia-160m", 512), ("pythia-160m", 1000),
        ("pythia-70m", 0), ("pythia-70m", 2), ("pythia-70m", 10), ("pythia-70m", 1000), ("pythia-70m", 143000)]
    by = {(r.model, r.step): r for r in refs}
    assert all(r.suite == "pythia" for r in refs)
    assert by["pythia-70m", 143000].tokens == 143000 * PYTHIA_TOKENS_PER_STEP == 299_892_736_000
    assert by["pythia-70m", 143000].tokens_source == "tokens_per_step"
    assert by["pythia-70m", 0].tokens == 0
    assert (by["pythia-70m", 2].tokens, by["pythia-70m", 2].tokens_source) == (5, "qidlab.json")  # wins
    assert (by["pythia-70m", 10].tokens, by["pythia-70m", 10].tokens_source) == (77, "manifest")
    assert by["pythia-160m", 512].tokens == 123
    assert by["pythia-70m", 0].info == {"family": "pythia"} and by["pythia-160m", 512].info == {}
    assert by["pythia-70m", 1000].path == root / "pythia-70m" / "step1000"


def test_discover_json_manifest_overrides_and_suite_of_suites(tmp_path):
    a = _fake_suite(tmp_path / "a", {"m1": [1, 3], "m2": [4]})
    (a / "qidlab-suite.json").write_text(json.dumps(
        {"suite": "alpha", "tokens_per_step": 10, "models": {"m2": {"tokens_per_step": 1000}}}))
    _fake_suite(tmp_path / "b", {"m1": [2]})  # no manifest: tokens unknown, suite = folder name
    refs = discover(tmp_path)
    assert [(r.suite, r.model, r.step, r.tokens) for r in refs] == [
        ("alpha", "m1", 1, 10), ("alpha", "m1", 3, 30), ("alpha", "m2", 4, 4000), ("b", "m1", 2, None)]
    assert refs[-1].tokens_source is None


def test_discover_nothing_there(tmp_path):
    with pytest.raises(QidlabError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "empty" / "model").mkdir(parents=True)
    with pytest.raises(QidlabError, match="no checkpoints under"):
        discover(tmp_path / "empty")


@pytest.mark.parametrize("name, text, key", [
    ("qidlab-suite.toml", 'tokens_per_step = "lots"', "'tokens_per_step' must be a positive integer"),
    ("qidlab-suite.toml", "tokens_per_step = -5", "'tokens_per_step' must be a positive integer"),
    ("qidlab-suite.toml", "tokens_per_stp = 5", "unknown key 'tokens_per_stp'"),
    ("qidlab-suite.toml", "tokens_per_step = = 5", "cannot parse"),
    ("qidlab-suite.toml", '[tokens]\n"step100" = 5', "tokens.'step100' must look like"),
    ("qidlab-suite.toml", '[tokens]\n"m/step100" = 1.5', "'tokens.m/step100' must be a non-negative integer"),
    ("qidlab-suite.toml", "[models.m]\ntokens = { s100 = 5 }", "models.m.tokens.'s100' must name a step"),
    ("qidlab-suite.toml", "[models.m]\ntokens_per_step = true", "'models.m.tokens_per_step' must be"),
    ("qidlab-suite.json", '{"suite": 3}', "'suite' must be a non-empty string"),
    ("qidlab-suite.json", "[1, 2]", "expected a table"),
])
def test_malformed_manifest_names_file_and_key(tmp_path, name, text, key):
    root = _fake_suite(tmp_path / "s", {"m": [100]})
    (root / name).write_text(text)
    with pytest.raises(QidlabError) as err:
        discover(root)
    message = str(err.value)
    assert name in message and key in message and "\n" not in message


def test_malformed_qidlab_json(tmp_path):
    root = _fake_suite(tmp_path / "s", {"m": [100]})
    (root / "m" / "step100" / "qidlab.json").write_text(json.dumps({"tokens": "many"}))
    with pytest.raises(QidlabError, match=r"qidlab.json: key 'tokens' must be a non-negative integer"):
        discover(root)


def test_discovered_refs_load_with_manifest_tokens(tmp_path):
    root = make_tiny_checkpoint(tmp_path / "suite", arch="gpt_neox", steps=4, save_steps=[0, 4],
                                hidden=32, model_name="tiny")
    (root / "tiny" / "step4" / "qidlab.json").unlink()
    (root / "qidlab-suite.toml").write_text('suite = "tinysuite"\ntokens_per_step = 1000\n')
    refs = discover(root)
    assert [(r.suite, r.model, r.step, r.tokens) for r in refs] == [("tinysuite", "tiny", 0, 0),
                                                                    ("tinysuite", "tiny", 4, 4000)]
    assert isinstance(refs[0], CheckpointRef)
    loaded = list(load_suite(root))
    assert [(c.step, c.tokens) for c in loaded] == [(0, 0), (4, 4000)]
    assert loaded[0].content_hash != loaded[1].content_hash
    assert loaded[0].n_params == loaded[1].n_params > 0


def test_sharded_safetensors(ckpts, tmp_path):
    ck = load_checkpoint(ckpts["gpt_neox"])
    folder = tmp_path / "sharded"
    ck.model.save_pretrained(folder, max_shard_size="100KB")
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    again = load_checkpoint(folder)
    assert again.tokenizer is None and again.tokens is None and again.step is None
    ref = dict(ck.model.named_parameters())
    assert all(torch.equal(p, ref[n]) for n, p in again.model.named_parameters())
    assert again.content_hash == content_hash(folder)
    data = shards[-1].read_bytes()
    shards[-1].write_bytes(data[:-7])
    with pytest.raises(QidlabError, match=f"corrupt or truncated safetensors file .*{shards[-1].name}"):
        load_checkpoint(folder)
