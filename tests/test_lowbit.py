"""qidlab.train.lowbit and precision: STE, QAT forward = PTQ grids, BitNet b1.58 training, suite errors."""

import json

import pytest
import torch
from tiny_models import single_thread, tiny_config, tiny_corpus_folder

from qidlab.errors import QidlabError
from qidlab.quantize import FPConfig, NF4Config, RTNConfig, TernaryConfig, grids, quantize_
from qidlab.train import load_suite_config, train_suite
from qidlab.train.lowbit import QATLinear, apply_qat, fake_quantize_absmax, ste, weight_fake_quant
from qidlab.train.precision import ActSpec, QATSpec, bitnet_spec, qat_from_dict


def _tiny_model(seed=0):
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(tiny_config("gpt_neox", vocab_size=96, hidden=64, layers=2, heads=4)).float()


def _ids(n=3, t=16):
    return torch.randint(3, 96, (n, t), generator=torch.Generator().manual_seed(1))


# ---- the straight-through estimator ---------------------------------------------------------------

def test_ste_forward_is_the_rounded_value_and_the_gradient_passes_through():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    fn = weight_fake_quant(RTNConfig(bits=3, group_size=8))
    c = torch.randn(8, 32, generator=torch.Generator().manual_seed(1))
    y = ste(w, fn)
    assert torch.equal(y, grids.fake_quantize(w.detach(), 3, 8)) and not torch.equal(y, w.detach())
    (y * c).sum().backward()
    assert torch.equal(w.grad, c)  # d(round)/dw taken as 1


def test_qat_linear_gradient_is_the_gradient_at_the_rounded_weights_and_inputs():
    lin = torch.nn.Linear(32, 8)
    ref = torch.nn.Linear(32, 8)
    ref.load_state_dict(lin.state_dict())
    lin.__class__ = QATLinear
    lin.qat_weight = weight_fake_quant(TernaryConfig(), per_tensor=True)
    lin.qat_act = lambda x: fake_quantize_absmax(x, 8)
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    lin(x).square().sum().backward()
    with torch.no_grad():
        ref.weight.copy_(lin.qat_weight(ref.weight))
    ref(fake_quantize_absmax(x, 8)).square().sum().backward()
    assert torch.allclose(lin.weight.grad, ref.weight.grad) and torch.equal(lin.bias.grad, ref.bias.grad)
    assert len(torch.unique(ref.weight.detach())) == 3  # ternary: -g, 0, g


# ---- the forward pass rounds to the PTQ grids -----------------------------------------------------

@pytest.mark.parametrize("config", [RTNConfig(bits=4, group_size=16), RTNConfig(bits=3, symmetric=False),
                                    FPConfig(exp_bits=2, man_bits=1, block_size=32), TernaryConfig(group_size=32),
                                    NF4Config(block_size=64)], ids=lambda c: c.key())
def test_qat_forward_equals_the_ptq_fake_quantized_model(config):
    ids = _ids()
    qat, ptq = _tiny_model(), _tiny_model()
    apply_qat(qat, QATSpec(weights=config))
    quantize_(ptq, config)
    with torch.no_grad():
        a, b, plain = qat(input_ids=ids).logits, ptq(input_ids=ids).logits, _tiny_model()(input_ids=ids).logits
    assert torch.equal(a, b) and not torch.allclose(a, plain, atol=1e-4)
    assert qat.state_dict().keys() == plain_keys() and torch.equal(  # latent weights kept, same names
        qat.gpt_neox.layers[0].mlp.dense_h_to_4h.weight, _tiny_model().gpt_neox.layers[0].mlp.dense_h_to_4h.weight)


def plain_keys():
    return _tiny_model().state_dict().keys()


def test_bitnet_weights_are_ternary_per_matrix_and_activations_8_bit_absmax():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(3)) * 0.02
    q = weight_fake_quant(bitnet_spec().weights, per_tensor=True)(w)
    gamma = w.abs().mean()
    assert torch.allclose(q, gamma * torch.clamp(torch.round(w / (gamma + 1e-5)), -1, 1))  # one scale
    x = torch.randn(4, 10, 64, generator=torch.Generator().manual_seed(4))
    scale = 127.0 / x.abs().amax(-1, keepdim=True)  # BitNet b1.58's reference activation quantizer
    ref = (x * scale).round().clamp(-128, 127) / scale
    assert torch.allclose(fake_quantize_absmax(x, 8), ref, atol=1e-6)
    y = fake_quantize_absmax(x, 4, 16).view(4, 10, 4, 16)  # 4 bits, a scale per 16 channels of a token
    amax = x.view(4, 10, 4, 16).abs().amax(-1, keepdim=True)
    codes = y / (amax / 7)
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.round().abs().max() == 7
    assert torch.allclose(y.abs().amax(-1, keepdim=True), amax)


def test_kv_quantization_rounds_keys_and_values_only():
    model = _tiny_model()
    apply_qat(model, QATSpec(kv=ActSpec(bits=4)))
    qkv = model.gpt_neox.layers[0].attention.query_key_value
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = qkv(x).view(2, 5, 4, 3, 16)  # (B, T, heads, [q, k, v], head_size)
        raw = torch.nn.functional.linear(x, qkv.weight, qkv.bias).view(2, 5, 4, 3, 16)
    assert torch.equal(y[..., 0, :], raw[..., 0, :])
    for part in (1, 2):
        assert torch.equal(y[..., part, :], fake_quantize_absmax(raw[..., part, :], 4))
        assert not torch.equal(y[..., part, :], raw[..., part, :])
    assert model.gpt_neox.layers[0].attention.dense.qat_out is None


# ---- a BitNet b1.58 suite -------------------------------------------------------------------------

SUITE = """
[suite]
name = "lowbit"
corpus = "corpus"
tokenizer = 384
seq_len = 64
batch_size = 8
steps = 30
warmup = 3
checkpoints = { log_spaced_until = 16, every = 100 }

[[models]]
name = "h32-l1"
hidden = 32
layers = 1
heads = 4
lr = 3e-3

[[models]]
name = "h32-l1-bitnet"
hidden = 32
layers = 1
heads = 4
twin = "h32-l1"
precision = "bitnet-b1.58"
"""


@pytest.fixture(scope="module")
def bitnet_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("lowbit")
    tiny_corpus_folder(root, 200)
    (root / "suite.toml").write_text(SUITE)
    with single_thread():
        train_suite(root / "suite.toml", root / "a", threads=1)
    return root


def _rows(path):
    return [line.split(",") for line in path.read_text().splitlines()[1:]]


def test_a_tiny_bitnet_model_trains_deterministically(bitnet_suite):
    from safetensors.torch import load_file

    root = bitnet_suite
    model_dir = root / "a" / "lowbit" / "h32-l1-bitnet"
    losses = [float(r[2]) for r in _rows(model_dir / "train-log.csv")]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    assert float(_rows(model_dir / "train-log.csv")[0][3]) == pytest.approx(4 * 3e-3 / 3)  # 4x the twin's lr
    with single_thread():
        train_suite(root / "suite.toml", root / "b", threads=1)
    for step in (16, 30):
        a = load_file(str(model_dir / f"step{step}" / "model.safetensors"))
        b = load_file(str(root / "b" / "lowbit" / "h32-l1-bitnet" / f"step{step}" / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    twin = load_file(str(root / "a" / "lowbit" / "h32-l1" / "step30" / "model.safetensors"))
    assert twin.keys() == a.keys() and not torch.equal(twin["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"],
                                                       a["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"])


def test_bitnet_checkpoints_are_plain_hf_folders_with_the_qat_config(bitnet_suite):
    import tomllib

    from qidlab.checkpoints import load_checkpoint
    from qidlab.train.data import prepare_data

    suite_dir = bitnet_suite / "a" / "lowbit"
    manifest = tomllib.loads((suite_dir / "qidlab-suite.toml").read_text())["models"]
    assert manifest["h32-l1-bitnet"]["precision"] == "bitnet-b1.58" and manifest["h32-l1-bitnet"]["twin"] == "h32-l1"
    assert manifest["h32-l1-bitnet"]["qat"]["a_bits"] == 8 and "precision" not in manifest["h32-l1"]
    ckpt = load_checkpoint(suite_dir / "h32-l1-bitnet" / "step16")  # an ordinary checkpoint: latent weights
    meta = json.loads((suite_dir / "h32-l1-bitnet" / "step16" / "qidlab.json").read_text())
    assert meta["precision"] == "bitnet-b1.58" and meta["twin"] == "h32-l1"
    assert qat_from_dict(meta["qat"]) == bitnet_spec()
    # the latent weights with the recorded rounding give back the training loss of update 16
    data = prepare_data(load_suite_config(bitnet_suite / "suite.toml"), suite_dir)
    batch = data.batch(16, 8, 64, 0)
    logged = float(_rows(suite_dir / "h32-l1-bitnet" / "train-log.csv")[16][2])
    with torch.no_grad(), single_thread():
        latent = float(ckpt.model.float()(input_ids=batch, labels=batch).loss)
        apply_qat(ckpt.model, qat_from_dict(meta["qat"]))
        rounded = float(ckpt.model(input_ids=batch, labels=batch).loss)
    assert rounded == pytest.approx(logged, abs=1e-6) and abs(latent - logged) > 1e-3


# ---- bad low-bit settings -------------------------------------------------------------------------

def _bitnet_text(edit):
    old, new = edit
    assert old in SUITE
    return SUITE.replace(old, new, 1)


@pytest.mark.parametrize("edit, match", [
    (('precision = "bitnet-b1.58"', 'precision = "bitnet-b2"'), "unknown precision 'bitnet-b2'"),
    (('twin = "h32-l1"', 'twin = "h64"'), "twin 'h64' must be another, 16-bit model"),
    (('twin = "h32-l1"\n', ''), "model 'h32-l1-bitnet' needs 'lr'"),
    (('name = "h32-l1-bitnet"\nhidden = 32', 'name = "h32-l1-bitnet"\nhidden = 64'),
     "differ in shape \\(hidden 64 vs 32, intermediate 256 vs 128\\)"),
    (('lr = 3e-3', 'lr = 3e-3\ntwin = "h32-l1-bitnet"'), "twin must name the 16-bit model of a low-bit model"),
    (('precision = "bitnet-b1.58"', 'lr = 1e-3\n[models.qat]\nweights = { method = "gptq", bits = 4 }'),
     "method 'gptq' cannot be trained through"),
    (('precision = "bitnet-b1.58"', 'lr = 1e-3\n[models.qat]\nweights = { method = "rtn", bits = 9 }'),
     "qat.weights: bits must be an integer 2..8, got 9"),
    (('precision = "bitnet-b1.58"', 'lr = 1e-3\n[models.qat]\nweights = { method = "fp", exp_bits = 2 }'),
     "qat.weights: method 'fp' needs man_bits"),
    (('precision = "bitnet-b1.58"', 'lr = 1e-3\n[models.qat]\nactivations = { bits = 1 }'),
     "qat.activations bits must be an integer 2..8, got 1"),
    (('precision = "bitnet-b1.58"', 'lr = 1e-3\n[models.qat]\nkv = { bits = 8, scale = "max" }'),
     "unknown key 'scale' in qat.kv"),
    (('precision = "bitnet-b1.58"', 'lr = 1e-3\n[models.qat]\nweight = { method = "rtn", bits = 4 }'),
     "unknown key 'weight' in \\[models.qat\\]"),
    (('precision = "bitnet-b1.58"', 'lr = 1e-3\n[models.qat]\nweights = { method = "fp", exp_bits = 2, '
      'man_bits = 1, per_tensor = true }'), "per_tensor = true is for rtn and ternary"),
    (('precision = "bitnet-b1.58"', 'precision = "bitnet-b1.58"\nlr = 1e-3\n[models.qat]\nkv = { bits = 8 }'),
     "either precision = 'bitnet-b1.58' or a \\[models.qat\\] table"),
])
def test_each_bad_low_bit_setting_is_one_clear_error(tmp_path, edit, match):
    path = tmp_path / "suite.toml"
    path.write_text(_bitnet_text(edit))
    with pytest.raises(QidlabError, match=match):
        load_suite_config(path)


def test_a_group_size_that_does_not_divide_a_width_is_refused_before_training():
    model = _tiny_model()
    with pytest.raises(QidlabError, match="group_size 48 does not divide the input width 64"):
        apply_qat(model, QATSpec(activations=ActSpec(bits=8, group_size=48)))
    with pytest.raises(QidlabError, match="qat.kv group_size 5 does not divide the head size 16"):
        apply_qat(model, QATSpec(kv=ActSpec(bits=8, group_size=5)))
    assert not any(isinstance(m, QATLinear) for m in model.modules())
