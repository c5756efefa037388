"""Cross-checks of qidlab.quantize against other libraries; each skips when its library is absent.

Install them with ``pip install -c constraints.txt -e '.[crosscheck]'`` (bitsandbytes, torchao,
autoawq). llm-compressor is not in the extra: today it pins an older transformers than the
project's venv uses, so its test runs only in an environment where it installs without changing
torch. AutoAWQ 0.2.9 installs beside torch 2.13 and transformers 5.x (or 4.51), and its
quantizer runs on a CPU: docs/crosschecks.md says how, what differs, and what was run.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from qidlab.quantize import GPTQConfig, grids  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- bitsandbytes: NF4 / FP4 -------------------------------------------------------------


def _bnb():
    return pytest.importorskip(
        "bitsandbytes.functional",
        reason="bitsandbytes not installed (pip install -c constraints.txt bitsandbytes)")


def test_bnb_tables():
    F = _bnb()
    nf4 = F.get_4bit_type("nf4", device="cpu")
    fp4 = F.get_4bit_type("fp4", device="cpu")
    assert torch.allclose(nf4, grids.NF4_CODE, atol=1e-7)
    # bitsandbytes' Python table is rounded to 4 decimals (its CUDA kernel is not)
    assert torch.allclose(fp4.unique().sort().values, grids.FP4_CODE, atol=1e-4)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("shape, block, dtype", [((16, 128), 64, torch.float32),
                                                 ((7, 50), 64, torch.float32),
                                                 ((32, 256), 128, torch.float32),
                                                 ((16, 128), 64, torch.bfloat16)])
def test_bnb_quantize_4bit_round_trip(quant_type, shape, block, dtype):
    F = _bnb()
    w = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 0.05).to(dtype)
    packed, state = F.quantize_4bit(w, blocksize=block, quant_type=quant_type)
    theirs = F.dequantize_4bit(packed, state)
    fn = grids.fake_quantize_nf4 if quant_type == "nf4" else grids.fake_quantize_fp4
    ours = fn(w, block)
    assert ours.dtype == theirs.dtype == dtype
    # bitsandbytes' CPU quantizer places boundaries at midpoints of its rounded FP4 table, so an
    # input within 1e-4 of a boundary may land on the other code; none do in these draws
    assert torch.equal(ours, theirs)


# ---- torchao: integer affine grid --------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [16, None])
def test_torchao_affine_grid(bits, symmetric, group_size):
    qp = pytest.importorskip("torchao.quantization.quant_primitives",
                             reason="torchao not installed (pip install -c constraints.txt torchao)")
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(bits))
    block = (1, group_size or 64)
    if symmetric:
        mt, qmin, qmax = qp.MappingType.SYMMETRIC, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        mt, qmin, qmax = qp.MappingType.ASYMMETRIC, 0, 2**bits - 1
    s, z = qp.choose_qparams_affine(w, mt, block, torch.int32, qmin, qmax)
    q = qp.quantize_affine(w, block, s, z, torch.int32, qmin, qmax)
    theirs = qp.dequantize_affine(q, block, s, z, torch.int32, qmin, qmax)
    ours = grids.fake_quantize(w, bits, group_size, symmetric)
    our_s, _ = grids.choose_qparams(grids.group_view(w, group_size), bits, symmetric)
    assert torch.allclose(our_s.reshape(s.shape), s, rtol=1e-6)
    # torchao multiplies by 1/scale, we divide: an input exactly half-way between two levels
    # (the symmetric grid's absmax element, at -2^(b-1) + 1/2 steps) may round either way
    steps = grids.group_view(w, group_size) / our_s
    tie = ((steps - steps.floor() - 0.5).abs() < 1e-4).reshape(w.shape)
    assert torch.allclose(ours[~tie], theirs[~tie], atol=1e-6)
    assert tie.float().mean() <= 1 / (group_size or 64) + 0.02  # ~one tie (the absmax) per group


# ---- llm-compressor: GPTQ ----------------------------------------------------------------


def _llmc_quantize_weight():
    mod = pytest.importorskip(
        "llmcompressor.modifiers.gptq.gptq_quantize",
        reason="llm-compressor not installed (0.14 pins another transformers than the venv's)")
    import inspect

    params = inspect.signature(mod.quantize_weight).parameters
    if not {"weights", "hessians", "scale", "zero_point", "global_scale"} <= set(params):
        pytest.skip("llm-compressor's quantize_weight has another signature than 0.14's")
    return mod.quantize_weight


@pytest.mark.parametrize("bits, group_size, symmetric", [(4, None, True), (3, None, False),
                                                         (4, 16, True), (3, 32, False)])
def test_llmcompressor_gptq_single_layer(bits, group_size, symmetric):
    """Our column sweep against llm-compressor's (actorder none, dampening 0.01, observer
    scales from the unquantized weights = our ``static_groups``), same Hessian, same grid."""
    quantize_weight = _llmc_quantize_weight()
    from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy

    g = torch.Generator().manual_seed(bits)
    x = torch.randn(512, 8, generator=g) @ torch.randn(8, 64, generator=g)
    x = x + 0.1 * torch.randn(512, 64, generator=g)
    H = 2 * x.T @ x / x.shape[0]
    W = torch.randn(32, 64, generator=g)
    cfg = GPTQConfig(bits, group_size=group_size, symmetric=symmetric, static_groups=True)
    ours, scale, zero = gptq_quantize_layer(W, H, cfg)
    strategy = QuantizationStrategy.CHANNEL if group_size is None else QuantizationStrategy.GROUP
    args = QuantizationArgs(num_bits=bits, symmetric=symmetric, strategy=strategy,
                            group_size=group_size, actorder=None)
    # compressed-tensors' grid: signed codes in [-2^(b-1), 2^(b-1) - 1], zero point shifted
    zp = (zero - 2 ** (bits - 1)).to(torch.int8)
    theirs = quantize_weight(W[None].clone(), H[None].clone(), scale[None], zp[None], None,
                             args, blocksize=128, percdamp=0.01)[0][0]
    assert (ours - theirs).abs().max() < 1e-4
    assert not torch.equal(ours, grids.fake_quantize(W, bits, group_size, symmetric))


@pytest.mark.parametrize("group_size", [None, 16])
def test_llmcompressor_backend_equals_qidlab_gptq_on_a_model(group_size):
    """The library as a backend, whole model: llm-compressor's oneshot (decoder layer by decoder
    layer, quantized outputs propagated) against ours with the same schedule (static groups, all
    linears of a block from one pass), same calibration ids."""
    pytest.importorskip("llmcompressor", reason="llm-compressor not installed (it pins its own transformers)")
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from qidlab.quantize import quantize_

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                        vocab_size=128, max_position_embeddings=64)
    ours, theirs = GPTNeoXForCausalLM(cfg).eval(), GPTNeoXForCausalLM(cfg).eval()
    theirs.load_state_dict(ours.state_dict())
    calib = torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(1))
    common = dict(group_size=group_size, static_groups=True, true_sequential=False)
    quantize_(ours, GPTQConfig(4, **common), calib)
    report = quantize_(theirs, GPTQConfig(4, backend="llmcompressor", **common), calib)
    assert len(report.modules) == 8 and report.n_calibration_tokens == calib.numel()
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert ((a - b).abs() > 1e-4).float().mean() < 0.01, name  # a float rounding may flip a code


def gptq_quantize_layer(W, H, cfg):
    from qidlab.quantize import gptq_quantize_layer as fn

    return fn(W, H, cfg)


@pytest.mark.parametrize("method", ["nf4", "fp4"])
def test_bitsandbytes_backend_equals_qidlab_grids(method):
    """The library itself as a backend: same model weights as qidlab's own NF4/FP4 grids."""
    _bnb()
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from qidlab.quantize import config_from_dict, quantize_

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                        vocab_size=128, max_position_embeddings=64)
    ours, theirs = GPTNeoXForCausalLM(cfg), GPTNeoXForCausalLM(cfg)
    theirs.load_state_dict(ours.state_dict())
    quantize_(ours, config_from_dict({"method": method, "block_size": 64}))
    report = quantize_(theirs, config_from_dict({"method": method, "block_size": 64, "backend": "bitsandbytes"}))
    assert len(report.modules) == 8
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), name


# ---- AutoAWQ: AWQ's scale search and clipping --------------------------------------------


def _autoawq_quantizer():
    mod = pytest.importorskip(
        "awq.quantize.quantizer",
        reason="AutoAWQ not installed (pip install -c constraints.txt autoawq; docs/crosschecks.md)")
    return mod.AwqQuantizer


# AutoAWQ's own scaling groups are single linears here, so qidlab's per-linear search must agree
# (GPT-NeoX's attention.dense is not scaled by AutoAWQ; Llama's q/k/v and gate/up share scales)
_SAME_GROUPS = {"gpt_neox": ("query_key_value", "dense_h_to_4h", "dense_4h_to_h"),
                "llama": ("o_proj", "down_proj")}


def _outlier_model(arch):
    """A tiny random model whose norms give a few hidden channels 10x the others (AWQ's case)."""
    from tiny_models import tiny_config
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size=128)).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm.weight" in name:
                p[:4] *= 10
    return model


def _autoawq_run(model, arch, calib, bits, group_size, duo_scaling, clip):
    """AutoAWQ's quantize(export_compatible=True): scales folded into the previous ops, weights
    clipped, not rounded. Returns {linear: its scales} for every linear AutoAWQ scaled."""
    from awq.models.gpt_neox import GPTNeoXAWQForCausalLM
    from awq.models.llama import LlamaAWQForCausalLM

    from qidlab.quantize.autoawq import _recording

    records = []  # (previous op, linears, scales), by the wrapper the autoawq backend uses, which
    # also gives AutoAWQ's search copies of the weights to restore (on a CPU its `.cpu()` is the
    # weight itself, which the first candidate would scale in place)
    Recording = _recording(_autoawq_quantizer(), records)
    cls = {"gpt_neox": GPTNeoXAWQForCausalLM, "llama": LlamaAWQForCausalLM}[arch]
    model.config.use_cache = False  # as AutoAWQ's from_pretrained sets it
    awq_model = cls(model, arch, False, model.config, None, None)
    awq_model.quantize(None, quant_config={"zero_point": True, "q_group_size": group_size,
                                           "w_bit": bits, "version": "gemm"},
                       calib_data=calib.tolist(), max_calib_samples=calib.shape[0],
                       max_calib_seq_len=calib.shape[1], duo_scaling=duo_scaling,
                       apply_clip=clip, export_compatible=True, quantizer_cls=Recording)
    return awq_model.quantizer, {m: scales for _, layers, scales in records for m in layers}


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
@pytest.mark.parametrize("duo_scaling, clip", [(False, False), (True, False), (False, True),
                                               (True, True)])
def test_autoawq_scales_and_weights(arch, duo_scaling, clip):
    """Same calibration, bits, group size and grid of exponents: where AutoAWQ scales a linear
    on its own, qidlab's AWQ picks the same scales and gives the same rounded weights."""
    _autoawq_quantizer()
    from qidlab.quantize import AWQConfig, quantize_

    ours = _outlier_model(arch)
    theirs = copy.deepcopy(ours)
    calib = torch.randint(3, 128, (8, 64), generator=torch.Generator().manual_seed(1))
    cfg = AWQConfig(3, group_size=32, duo_scaling=duo_scaling, clip=clip)
    report = quantize_(ours, cfg, calib)
    quantizer, found = _autoawq_run(theirs, arch, calib, 3, 32, duo_scaling, clip)
    mods = dict(theirs.named_modules())
    checked = 0
    for name, m in ours.named_modules():
        if name.rsplit(".", 1)[-1] not in _SAME_GROUPS[arch]:
            continue
        s = found[mods[name]]
        assert torch.allclose(report.qparams[name]["input_scale"], s, rtol=1e-5), name
        rounded = quantizer.pseudo_quantize_tensor(mods[name].weight.data)[0] / s
        assert torch.allclose(m.weight, rounded, atol=1e-6), name
        checked += 1
    assert checked == 2 * len(_SAME_GROUPS[arch])
    # not vacuous: AWQ moved away from plain rounding somewhere
    assert any(not torch.equal(v["input_scale"], torch.ones_like(v["input_scale"]))
               for v in report.qparams.values())


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
@pytest.mark.parametrize("duo_scaling, clip", [(False, False), (True, True)])
def test_autoawq_backend_computes_what_autoawq_computes(arch, duo_scaling, clip):
    """``backend="autoawq"``: the model keeps its modules and parameters, and computes what
    AutoAWQ's own model computes (scales folded into norms, activations and previous linears,
    every block linear rounded by AutoAWQ's ``pseudo_quantize_tensor``)."""
    _autoawq_quantizer()
    from qidlab.quantize import AWQConfig, dequantize_state, quantize_, quantized_state
    from qidlab.quantize.model import select_linears

    ours = _outlier_model(arch)
    theirs, keys = copy.deepcopy(ours), set(ours.state_dict())
    calib = torch.randint(3, 128, (8, 64), generator=torch.Generator().manual_seed(1))
    cfg = AWQConfig(3, group_size=32, duo_scaling=duo_scaling, clip=clip, backend="autoawq")
    report = quantize_(ours, cfg, calib)
    quantizer, _ = _autoawq_run(theirs, arch, calib, 3, 32, duo_scaling, clip)
    for m in select_linears(theirs, None).values():
        m.weight.data = quantizer.pseudo_quantize_tensor(m.weight.data)[0]
    ids = torch.randint(3, 128, (4, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = ours(ids).logits, theirs(ids).logits
        plain = _outlier_model(arch)(ids).logits
    assert set(ours.state_dict()) == keys
    assert len(report.modules) == len(select_linears(ours, None))
    assert (a - b).abs().max() < 1e-4 * b.abs().max()
    assert (a - plain).abs().max() > 100 * (a - b).abs().max()  # rounding moved the logits
    # the integer codes export as for qidlab's own AWQ
    state = dequantize_state(quantized_state(ours, report))
    for name, m in select_linears(ours, None).items():
        assert torch.allclose(state[name + ".weight"], m.weight, atol=1e-6), name
    # calibration in uneven batches gives the same weights (no KV cache carried between them)
    again = _outlier_model(arch)
    quantize_(again, cfg, calib, batch_size=3)
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), again.parameters()))
