"""Quantization stage: configs, pure grids, GPTQ, AWQ and quantize_ on tiny random models."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from qidlab.errors import QidlabError  # noqa: E402
from qidlab.quantize import (AWQConfig, FP4Config, FPConfig, GPTQConfig, NF4Config,  # noqa: E402
                             RTNConfig, TernaryConfig, collect_hessians, config_from_dict,
                             dequantize_state, gptq_quantize_layer, grids, quantize_,
                             quantized_state)
from qidlab.quantize.awq import awq_clip_search, awq_quantize_layer, candidate_scales  # noqa: E402
from qidlab.quantize.model import capture_block_inputs, find_blocks  # noqa: E402

ALL_CONFIGS = [RTNConfig(4, group_size=32), RTNConfig(3, symmetric=False),
               GPTQConfig(3, group_size=32), GPTQConfig(4, act_order=True, group_size=16),
               GPTQConfig(3, shared_hessian=True), AWQConfig(3, group_size=32),
               AWQConfig(3, group_size=32, duo_scaling=True, clip=True), NF4Config(),
               FP4Config(block_size=32), FPConfig(4, 3, block_size=32), TernaryConfig()]


def _levels(x: torch.Tensor) -> int:
    return int(torch.unique(x).numel())


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core box they contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # every test draws the same weights each run
    yield
    torch.set_num_threads(before)


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, vocab_size=512, max_position_embeddings=128)
    return GPTNeoXForCausalLM(cfg).eval()


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, vocab_size=512,
                      max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, vocab_size=512,
                      max_position_embeddings=128)
    return Qwen2ForCausalLM(cfg).eval()


_MODELS = {"neox": _neox, "llama": _llama, "qwen2": _qwen2}
_cache: dict = {}


@pytest.fixture(params=["neox", "llama"])
def tiny(request):
    if request.param not in _cache:
        _cache[request.param] = _MODELS[request.param]()
    return copy.deepcopy(_cache[request.param])


@pytest.fixture(scope="module")
def calib():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 512, (8, 32), generator=g)


def _correlated(n=512, d=64, seed=0):
    """Inputs with strongly correlated channels (low-rank plus noise) and outlier scales."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    x = z @ torch.randn(8, d, generator=g) + 0.1 * torch.randn(n, d, generator=g)
    return x * (1 + 4 * torch.rand(d, generator=g))


# ---- configs -----------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", ALL_CONFIGS, ids=lambda c: c.method)
def test_config_round_trip_and_key(cfg):
    d = cfg.to_dict()
    json.dumps(d)
    assert config_from_dict(d) == cfg
    assert config_from_dict(json.loads(json.dumps(d))).key() == cfg.key()
    assert cfg.key().startswith(cfg.method + ":")


def test_config_keys_distinct():
    keys = [c.key() for c in ALL_CONFIGS]
    assert len(set(keys)) == len(keys)
    assert RTNConfig(4).key() != RTNConfig(4, modules=("*.mlp.*",)).key()


@pytest.mark.parametrize("bad, words", [
    ({"method": "rtm", "bits": 4}, ["unknown quantization method", "did you mean 'rtn'"]),
    ({"method": "rtn", "bits": 1}, ["bits", "2..8"]),
    ({"method": "gptq", "bits": 0}, ["bits", "2..8"]),
    ({"method": "rtn", "bits": 17}, ["bits", "2..8"]),
    ({"method": "rtn", "bits": 4.0}, ["bits"]),
    ({"method": "rtn", "bits": True}, ["bits"]),
    ({"method": "rtn", "bits": 4, "group_size": 0}, ["group_size"]),
    ({"method": "gptq", "bits": 4, "damp": 0}, ["damp"]),
    ({"method": "rtn", "bits": 4, "colour": 1}, ["unknown field", "colour"]),
    ({"method": "rtn"}, ["needs bits"]),
    ({"bits": 4}, ["needs a 'method'"]),
    ({"method": "fp", "exp_bits": 0, "man_bits": 0}, ["at least 1"]),
    ({"method": "nf4", "block_size": -1}, ["block_size"]),
    ({"method": "awq", "bits": 4, "clip": "yes"}, ["clip", "true or false"]),
    ({"method": "awq", "bits": 4, "backend": "llm-awq"}, ["backend", "'autoawq'"]),
])
def test_config_errors(bad, words):
    with pytest.raises(QidlabError) as e:
        config_from_dict(bad)
    for w in words:
        assert w in str(e.value)


def test_config_columns():
    assert FPConfig(4, 3, block_size=32).columns() == {
        "method": "fp", "bits": 8.0, "exp_bits": 4, "man_bits": 3, "block_size": 32}
    assert RTNConfig(3, group_size=128).columns()["group_size"] == 128
    assert abs(TernaryConfig().w_bits - 1.585) < 1e-3


def test_config_import_is_light():
    code = ("import sys, qidlab, qidlab.quantize, qidlab.quantize.config as c; "
            "c.config_from_dict({'method': 'rtn', 'bits': 4}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- integer grid ------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_levels_per_group(bits, symmetric):
    w = torch.randn(16, 256)
    q = grids.fake_quantize(w, bits, 64, symmetric)
    for group in grids.group_view(q, 64).reshape(-1, 64):
        assert _levels(group) <= 2**bits
    assert q.shape == w.shape and q.dtype == w.dtype


def test_rtn_error_decreases_with_bits():
    w = torch.randn(32, 256)
    errs = [float((grids.fake_quantize(w, b, 32) - w).norm()) for b in range(2, 9)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert errs[-1] / float(w.norm()) < 0.01


def test_symmetric_grid_is_signed_integers_times_scale():
    w = torch.randn(4, 32)
    s, z = grids.choose_qparams(w, 4, symmetric=True)
    assert torch.all(z == 8)
    k = grids.fake_quantize(w, 4, None, True) / s
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert k.round().min() >= -8 and k.round().max() <= 7
    assert torch.allclose(s[:, 0], 2 * w.abs().amax(1) / 15)


def test_asymmetric_beats_symmetric_on_one_sided_weights():
    w = torch.rand(16, 128) + 0.5  # all positive: a symmetric grid wastes half its levels
    e_sym = (grids.fake_quantize(w, 3, 32, True) - w).norm()
    e_asym = (grids.fake_quantize(w, 3, 32, False) - w).norm()
    assert e_asym < 0.6 * e_sym
    _, z = grids.choose_qparams(w, 3, symmetric=False)
    assert torch.all(z == 0)  # range [0, max]: zero point at the bottom


def test_groups_are_independent_and_none_is_per_row():
    w = torch.randn(8, 128)
    q = grids.fake_quantize(w, 3, 32)
    w2 = w.clone()
    w2[:, :32] *= 100  # change group 0 only
    q2 = grids.fake_quantize(w2, 3, 32)
    assert torch.equal(q[:, 32:], q2[:, 32:])
    assert not torch.equal(q[:, :32], q2[:, :32])
    assert torch.equal(grids.fake_quantize(w, 3, None), grids.fake_quantize(w, 3, 128))
    s, _ = grids.choose_qparams(grids.group_view(w, 32), 3, True)
    assert s.shape == (8, 4, 1)


def test_quantize_dequantize_round_trip():
    w = torch.randn(8, 64)
    g = grids.group_view(w, 16)
    s, z = grids.choose_qparams(g, 4, symmetric=False)
    codes = grids.quantize(g, s, z, 4)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
    deq = grids.dequantize(codes, s, z)
    assert torch.equal(grids.quantize(deq, s, z, 4), codes)  # codes survive a round trip
    assert (deq - g).abs().max() <= s.max() / 2 + 1e-6     # within half a step


def test_zero_group_does_not_divide_by_zero():
    w = torch.zeros(2, 16)
    for sym in (True, False):
        assert torch.equal(grids.fake_quantize(w, 4, 8, sym), w)
    assert torch.equal(grids.fake_quantize_nf4(w, 8), w)
    assert torch.equal(grids.fake_quantize_fp(w, 2, 1, 8), w)


def test_bad_group_size_and_bits():
    w = torch.randn(4, 64)
    with pytest.raises(QidlabError, match="group_size 48 does not divide the layer's input width 64"):
        grids.fake_quantize(w, 4, 48)
    for bits in (0, 1, 9, 17):
        with pytest.raises(QidlabError, match="bits must be an integer 2..8"):
            grids.fake_quantize(w, bits, 16)


# ---- codebooks ---------------------------------------------------------------------------

# bitsandbytes' tables, as written in its CUDA kernels (dDequantizeNF4, dDequantizeFP4Tree).
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
           -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
           0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
           0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]
BNB_FP4_POS = [0.0, 5.208333333e-03, 0.16666667, 0.25, 0.33333333, 0.5, 0.66666667, 1.0]


def test_nf4_fp4_codebooks_match_bitsandbytes_tables():
    assert torch.allclose(grids.NF4_CODE, torch.tensor(BNB_NF4), atol=1e-7)
    pos = grids.FP4_CODE[grids.FP4_CODE >= 0]
    assert torch.allclose(pos, torch.tensor(BNB_FP4_POS), atol=1e-7)
    assert torch.allclose(pos * 6, torch.tensor([0, 0.03125, 1, 1.5, 2, 3, 4, 6]), atol=1e-6)
    assert torch.equal(grids.FP4_CODE, -grids.FP4_CODE.flip(0))


@pytest.mark.parametrize("fn, code", [(grids.fake_quantize_nf4, grids.NF4_CODE),
                                      (grids.fake_quantize_fp4, grids.FP4_CODE)])
def test_codebook_blocks(fn, code):
    w = torch.randn(6, 100)  # 600 elements: 9 blocks of 64 and a partial block of 24
    q = fn(w, 64)
    flat, qf = w.reshape(-1), q.reshape(-1)
    for i in range(0, 600, 64):
        blk, qb = flat[i:i + 64], qf[i:i + 64]
        absmax = blk.abs().max()
        assert torch.isclose(qb.abs().max(), absmax)  # the absmax element is exact (code +-1)
        normed = qb / absmax
        assert torch.all((normed[:, None] - code[None, :]).abs().min(1).values < 1e-6)
        # nearest code: no other code is closer to the normalised input
        dist = (blk / absmax)[:, None] - code[None, :]
        assert torch.allclose(dist.abs().min(1).values, (blk / absmax - normed).abs(), atol=1e-6)


def test_exmy_values():
    assert grids.fp_values(2, 1).tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    e4m3 = grids.fp_values(4, 3)
    assert e4m3[-1] == 480 and e4m3[1] == 2.0**-9 and e4m3.numel() == 128
    assert grids.fp_values(3, 0).tolist() == [0, 0.25, 0.5, 1, 2, 4, 8, 16]
    assert grids.fp_values(0, 3).tolist() == list(range(8))
    assert torch.all(grids.fp_values(5, 2).diff() > 0)


@pytest.mark.parametrize("fmt, e, m, extra", [(torch.float8_e4m3fn, 4, 3, {480.0}),
                                             (torch.float8_e5m2, 5, 2, None)])
def test_exmy_values_match_torch_float8(fmt, e, m, extra):
    """Every finite value of torch's float8 is ours; ours add only the codes it reserves."""
    allcodes = torch.arange(256, dtype=torch.uint8).view(fmt).float()
    theirs = {float(v) for v in allcodes[torch.isfinite(allcodes) & (allcodes >= 0)]}
    ours = {float(v) for v in grids.fp_values(e, m)}
    assert theirs <= ours
    if extra is not None:
        assert ours - theirs == extra
    else:  # e5m2 reserves the whole top exponent for inf/NaN
        assert ours - theirs == {2.0**16 * (1 + k / 4) for k in range(4)}


def test_exmy_rounding_matches_torch_float8_cast():
    """Round to nearest, ties to even, subnormals included: as torch's cast to float8_e4m3fn."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(4000, generator=g) * 100, torch.rand(1000, generator=g) * 0.02,
                   torch.tensor([1.0625, 1.1875, 2.0**-10, 3 * 2.0**-10, 440.0])])
    x = x.clamp(-448, 448)
    ours = torch.sign(x) * grids.round_to_values(x.abs(), grids.fp_values(4, 3))
    assert torch.equal(ours, x.to(torch.float8_e4m3fn).float())


def test_exmy_ties_to_even_and_fixed_points():
    vals = grids.fp_values(2, 1)
    x = torch.tensor([1.25, 1.75, 2.5, 3.5, 5.0, 0.25, 0.75])
    assert grids.round_to_values(x, vals).tolist() == [1.0, 2.0, 2.0, 4.0, 4.0, 0.0, 1.0]
    # a block made of representable values (absmax = max) is reproduced exactly
    w = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -6, -4, -3, -2, -1.5, -1, -0.5, 0]) * 0.37
    assert torch.equal(grids.fake_quantize_fp(w.reshape(2, 8), 2, 1, 16), w.reshape(2, 8))


def test_exmy_error_decreases_with_mantissa():
    w = torch.randn(16, 128)
    errs = [float((grids.fake_quantize_fp(w, 3, m, 32) - w).norm()) for m in range(0, 5)]
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_ternary_three_levels():
    w = torch.randn(8, 64)
    q = grids.fake_quantize_ternary(w, 16)
    for grp, orig in zip(grids.group_view(q, 16).reshape(-1, 16),
                         grids.group_view(w, 16).reshape(-1, 16)):
        gamma = orig.abs().mean()
        assert _levels(grp) <= 3
        assert set(torch.unique((grp / gamma).round()).tolist()) <= {-1.0, 0.0, 1.0}
    with pytest.raises(QidlabError, match="does not divide"):
        grids.fake_quantize_ternary(w, 24)


# ---- GPTQ --------------------------------------------------------------------------------


def _gptq_vs_rtn(bits, group_size, act_order=False):
    g = torch.Generator().manual_seed(3)
    W = torch.randn(32, 64, generator=g)
    X = _correlated()
    H = collect_from(X)
    cfg = GPTQConfig(bits, group_size=group_size, act_order=act_order)
    Q, _, _ = gptq_quantize_layer(W, H, cfg)
    R = grids.fake_quantize(W, bits, group_size)
    return (X @ W.T - X @ Q.T).norm(), (X @ W.T - X @ R.T).norm(), Q


def collect_from(X):
    from qidlab.quantize.gptq import HessianAccumulator

    acc = HessianAccumulator(X.shape[1])
    for chunk in X.split(100):
        acc.add(chunk)
    return acc.H


@pytest.mark.parametrize("bits, group_size, act_order",
                         [(3, None, False), (3, 16, False), (4, 32, False), (2, 16, False),
                          (3, 16, True), (3, None, True)])
def test_gptq_beats_rtn_on_output_error(bits, group_size, act_order):
    e_gptq, e_rtn, Q = _gptq_vs_rtn(bits, group_size, act_order)
    assert e_gptq < 0.8 * e_rtn
    for grp in grids.group_view(Q, group_size).reshape(-1, group_size or 64):
        assert _levels(grp) <= 2**bits


def test_hessian_accumulator_is_2xtx_over_n():
    X = torch.randn(300, 16)
    assert torch.allclose(collect_from(X), 2 * X.T @ X / 300, atol=1e-4)


@pytest.mark.parametrize("group_size, act_order", [(None, False), (16, False), (16, True)])
def test_gptq_with_identity_hessian_is_rtn(group_size, act_order):
    W = torch.randn(16, 64)
    cfg = GPTQConfig(3, group_size=group_size, act_order=act_order)
    Q, s, z = gptq_quantize_layer(W, torch.eye(64), cfg)
    assert torch.allclose(Q, grids.fake_quantize(W, 3, group_size), atol=1e-6)
    assert s.shape == (16, 1 if group_size is None else 64 // group_size)


def test_gptq_block_size_does_not_change_result():
    """Lazy batching is exact in exact arithmetic; in float32 a rounding decision may flip."""
    X = _correlated()
    W, H = torch.randn(16, 64), collect_from(X)
    a = gptq_quantize_layer(W, H, GPTQConfig(3, group_size=16, block_size=128))[0]
    b = gptq_quantize_layer(W, H, GPTQConfig(3, group_size=16, block_size=16))[0]
    assert ((a - b).abs() > 1e-4).float().mean() < 0.02
    ea, eb = (X @ (W - a).T).norm(), (X @ (W - b).T).norm()
    assert abs(ea - eb) / ea < 0.02


@pytest.mark.parametrize("group_size, act_order, symmetric, static",
                         [(None, False, True, False), (16, False, True, False), (16, False, False, False),
                          (16, True, True, False), (16, False, True, True)])
def test_gptq_several_bit_widths_in_one_pass_equal_one_at_a_time(group_size, act_order, symmetric, static):
    from qidlab.quantize.gptq import gptq_quantize_layer_bits

    X = _correlated()
    W, H = torch.randn(24, 64), collect_from(X)
    cfg = GPTQConfig(4, group_size=group_size, act_order=act_order, symmetric=symmetric, static_groups=static)
    together = gptq_quantize_layer_bits(W, H, cfg, [2, 3, 4])
    for b, (q, s, z) in zip([2, 3, 4], together):
        q1, s1, z1 = gptq_quantize_layer(W, H, GPTQConfig(b, group_size=group_size, act_order=act_order,
                                                          symmetric=symmetric, static_groups=static))
        assert torch.allclose(s, s1, rtol=1e-5) and torch.equal(z, z1)
        assert ((q - q1).abs() > 1e-5).float().mean() < 0.01  # a float32 rounding decision may flip
    with pytest.raises(QidlabError, match="bits must be an integer 2..8"):
        gptq_quantize_layer_bits(W, H, cfg, [4, 9])


def test_gptq_shared_weights_match_quantize_per_bit_width(calib):
    from qidlab.quantize import collect_hessians, gptq_shared_weights

    model = _neox()
    cfg = GPTQConfig(4, group_size=16, shared_hessian=True)
    H = collect_hessians(model, calib, cfg.modules)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = gptq_shared_weights(model, cfg, [2, 4], H)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # model untouched
    for b in (2, 4):
        ref = copy.deepcopy(model)
        quantize_(ref, GPTQConfig(b, group_size=16, shared_hessian=True), hessians=H)
        from qidlab.quantize.model import select_linears

        assert set(weights[b]) == set(select_linears(model, cfg.modules))
        for name, w in weights[b].items():
            assert ((w - ref.get_submodule(name).weight).abs() > 1e-5).float().mean() < 0.01
    with pytest.raises(QidlabError, match="shared_hessian=True"):
        gptq_shared_weights(model, GPTQConfig(4), [2], H)


def test_gptq_llmcompressor_backend_config_is_explicit():
    with pytest.raises(QidlabError, match="backend must be 'qidlab' or 'llmcompressor'"):
        GPTQConfig(4, backend="autogptq")
    with pytest.raises(QidlabError, match="static_groups = true, true_sequential = false"):
        GPTQConfig(4, backend="llmcompressor")
    cfg = GPTQConfig(4, backend="llmcompressor", static_groups=True, true_sequential=False)
    assert cfg.to_dict()["backend"] == "llmcompressor" and cfg.key() != GPTQConfig(4).key()


def test_gptq_llmcompressor_backend_missing_is_one_clear_error(calib):
    try:
        import llmcompressor  # noqa: F401
        pytest.skip("llm-compressor is installed here")
    except ImportError:
        pass
    model = _neox()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = GPTQConfig(4, backend="llmcompressor", static_groups=True, true_sequential=False)
    with pytest.raises(QidlabError, match="needs llm-compressor"):
        quantize_(model, cfg, calib)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_gptq_dead_inputs_and_bad_hessian():
    W = torch.randn(8, 32)
    H = collect_from(_correlated(d=32))
    H[3, :] = 0
    H[:, 3] = 0
    Q, _, _ = gptq_quantize_layer(W, H, GPTQConfig(4))
    assert torch.all(Q[:, 3] == 0)  # a channel never active is zeroed, as IST-DASLab/gptq does
    with pytest.raises(QidlabError, match="does not match weight width"):
        gptq_quantize_layer(W, torch.eye(16), GPTQConfig(4))


def test_shared_hessian_equals_sequential_for_one_layer(calib):
    base = _neox()
    first = ("gpt_neox.layers.0.attention.query_key_value",)  # its inputs never see quantization
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    quantize_(a, GPTQConfig(3, group_size=16, modules=first), calib)
    quantize_(b, GPTQConfig(3, group_size=16, modules=first, shared_hessian=True), calib)
    wa = a.gpt_neox.layers[0].attention.query_key_value.weight
    wb = b.gpt_neox.layers[0].attention.query_key_value.weight
    assert torch.allclose(wa, wb, atol=1e-5)


def test_shared_hessian_close_to_sequential_on_two_blocks(calib):
    base = _neox()
    seq, shared = copy.deepcopy(base), copy.deepcopy(base)
    r_seq = quantize_(seq, GPTQConfig(3, group_size=32), calib)
    H = collect_hessians(base, calib)
    r_sh = quantize_(shared, GPTQConfig(3, group_size=32, shared_hessian=True), hessians=H)
    assert r_sh.n_calibration_tokens is None  # no calibration pass when H is given
    diffs = []
    for (n, ms), ma in zip(seq.named_modules(), shared.modules()):
        if isinstance(ms, torch.nn.Linear) and ".layers." in n:
            diffs.append(float(((ms.weight - ma.weight).norm() / ms.weight.norm()).detach()))
    assert diffs[0] < 1e-5  # first linear: identical inputs
    assert max(diffs) < 0.5  # later ones differ, but only by some grid steps
    assert abs(r_seq.mean_rel_error - r_sh.mean_rel_error) < 0.05


def test_collect_hessians_reused_across_bit_widths(calib):
    base = _neox()
    H = collect_hessians(base, calib)
    assert set(H) == {n for n, m in base.named_modules()
                      if isinstance(m, torch.nn.Linear) and ".layers." in n}
    errs = []
    for bits in (2, 3, 4):
        m = copy.deepcopy(base)
        errs.append(quantize_(m, GPTQConfig(bits, shared_hessian=True), hessians=H).mean_rel_error)
    assert errs[0] > errs[1] > errs[2]
    with pytest.raises(QidlabError, match="only used by"):
        quantize_(copy.deepcopy(base), GPTQConfig(3), hessians=H)
    with pytest.raises(QidlabError, match="no Hessian for"):
        quantize_(copy.deepcopy(base), GPTQConfig(3, shared_hessian=True),
                  hessians={"x": torch.eye(2)})


# ---- AWQ ---------------------------------------------------------------------------------


def test_awq_not_worse_than_rtn_and_better_with_outliers():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(32, 64, generator=g)
    X = torch.randn(256, 64, generator=g)
    X[:, :4] *= 30  # a few salient input channels, as in LLM activations
    cfg = AWQConfig(3, group_size=32)
    Q, s = awq_quantize_layer(W, X, cfg)
    R = grids.fake_quantize(W, 3, 32, symmetric=False)
    e_awq, e_rtn = (X @ (W - Q).T).norm(), (X @ (W - R).T).norm()
    assert e_awq < 0.9 * e_rtn
    assert s.shape == (64,) and s[:4].min() > s[4:].max()
    # W' * s lies on the integer grid: at most 2^bits values per group
    for grp in grids.group_view(Q * s, 32).reshape(-1, 32):
        assert _levels(grp.round(decimals=4)) <= 8


def test_awq_duo_scales_formula():
    """AutoAWQ's duo scaling: x^a / (w^(1-a) + 1e-4), clamped at 1e-4, over sqrt(max * min)."""
    x, w = torch.tensor([1.0, 4.0, 0.0]), torch.tensor([0.5, 0.25, 1.0])
    s = candidate_scales(x, w, 0.5)
    raw = torch.tensor([1 / (0.5**0.5 + 1e-4), 2 / (0.5 + 1e-4), 1e-4])
    assert torch.allclose(s, raw / (raw.max() * raw.min()).sqrt())
    assert torch.allclose(candidate_scales(x, None, 0.0), torch.ones(3))  # a = 0: plain RTN


def test_awq_clip_search_lowers_each_groups_error():
    """Each group's bound is its absmax times 1, 0.95, .., 0.55, and its partial output error is
    no worse than unclipped rounding; heavy-tailed weights get clipped somewhere."""
    g = torch.Generator().manual_seed(3)
    W = torch.distributions.StudentT(2.0).sample((32, 64))
    X = torch.randn(300, 64, generator=g)
    cfg = AWQConfig(3, group_size=16)
    m = awq_clip_search(W, X, cfg)  # (32, 4, 1)
    absmax = grids.group_view(W, 16).abs().amax(-1, keepdim=True)
    ratio = (m / absmax).flatten()
    assert torch.allclose(ratio * 20, (ratio * 20).round(), atol=1e-4) and ratio.min() >= 0.55 - 1e-6
    assert (ratio < 1).any()

    def err(w):  # per group: mean over tokens of the squared partial-output error
        d = grids.group_view(w - W, 16)  # (out, n_groups, G)
        return torch.einsum("tng,ong->otn", X.reshape(300, 4, 16), d).pow(2).mean(1)

    clipped = torch.clamp(grids.group_view(W, 16), -m, m).reshape(W.shape)
    e_clip = err(grids.fake_quantize(clipped, 3, 16, symmetric=False))
    e_plain = err(grids.fake_quantize(W, 3, 16, symmetric=False))
    assert (e_clip <= e_plain * (1 + 1e-5)).all() and (e_clip < 0.99 * e_plain).any()


def test_awq_clip_leaves_query_and_key(tiny, calib):
    """``clip`` clips every linear but the query/key projections (as llm-awq and AutoAWQ)."""
    plain, clipped = tiny, copy.deepcopy(tiny)
    quantize_(plain, AWQConfig(3, group_size=32), calib)
    quantize_(clipped, AWQConfig(3, group_size=32, clip=True), calib)
    a, b = dict(plain.named_parameters()), dict(clipped.named_parameters())
    changed = {n.split(".")[-2] for n in a if not torch.equal(a[n], b[n])}
    kept = {"q_proj", "k_proj", "query_key_value"}
    assert changed and not changed & kept
    assert changed <= {"v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "dense",
                       "dense_h_to_4h", "dense_4h_to_h"}


def test_awq_autoawq_backend_errors(tiny, calib):
    """What AutoAWQ cannot do is one error before any weight changes; so is its absence."""
    before = _snapshot(tiny)
    for cfg, words in [(AWQConfig(3, group_size=32, backend="autoawq", modules=("*mlp*",)), "modules"),
                       (AWQConfig(3, group_size=None, backend="autoawq"), "group_size"),
                       (AWQConfig(3, group_size=32, n_grid=10, backend="autoawq"), "n_grid=10")]:
        with pytest.raises(QidlabError, match=words):
            quantize_(tiny, cfg, calib)
    with pytest.raises(QidlabError, match=r"layers\.0\.self_attn\.v_proj: AutoAWQ's clip search needs "
                       r"out_features divisible by 64, got 32"):
        quantize_(_qwen2(), AWQConfig(3, group_size=32, clip=True, backend="autoawq"), calib)
    try:
        import awq  # noqa: F401
    except ImportError:
        with pytest.raises(QidlabError, match="needs AutoAWQ: pip install"):
            quantize_(tiny, AWQConfig(3, group_size=32, backend="autoawq"), calib)
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())


# ---- quantize_ on models -----------------------------------------------------------------


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("cfg", ALL_CONFIGS, ids=lambda c: c.key()[:40])
def test_quantize_changes_only_block_linears(tiny, calib, cfg):
    before = _snapshot(tiny)
    report = quantize_(tiny, cfg, calib)
    prefix, blocks = find_blocks(tiny)
    linears = {n for n, m in tiny.named_modules()
               if isinstance(m, torch.nn.Linear) and n.startswith(prefix + ".")}
    assert {m.name for m in report.modules} == linears
    after = tiny.state_dict()
    for k, v in before.items():
        changed = not torch.equal(v, after[k])
        assert changed == (k.endswith(".weight") and k[:-7] in linears), k
    d = report.to_dict()
    json.dumps(d)
    assert d["key"] == cfg.key() and len(d["modules"]) == len(linears)
    assert all(0 < m["rel_error"] < 1 for m in d["modules"])
    with torch.no_grad():
        assert torch.isfinite(tiny(calib[:2]).logits).all()


@pytest.mark.parametrize("cfg", [RTNConfig(3, group_size=16), RTNConfig(2, symmetric=False),
                                 GPTQConfig(2, group_size=16)],
                         ids=lambda c: c.key()[:40])
def test_every_weight_on_grid(tiny, calib, cfg):
    report = quantize_(tiny, cfg, calib)
    mods = dict(tiny.named_modules())
    for m in report.modules:
        w = mods[m.name].weight
        for grp in grids.group_view(w, cfg.group_size).reshape(-1, cfg.group_size or w.shape[1]):
            assert _levels(grp) <= 2**cfg.bits


@pytest.mark.parametrize("cfg", [RTNConfig(4, group_size=16), GPTQConfig(3, group_size=32),
                                 AWQConfig(4, group_size=16)], ids=lambda c: c.method)
def test_quantized_state_round_trip(tiny, calib, cfg):
    report = quantize_(tiny, cfg, calib)
    state = quantized_state(tiny, report)
    lo, hi = -(2 ** (cfg.bits - 1)), 2 ** (cfg.bits - 1) - 1
    back = dequantize_state(state)
    mods = dict(tiny.named_modules())
    for m in report.modules:
        codes = state[f"{m.name}.weight_codes"]
        assert codes.dtype == torch.int8 and codes.shape == m.shape
        assert int(codes.min()) >= lo and int(codes.max()) <= hi
        assert state[f"{m.name}.weight_scales"].shape == (m.shape[0], m.shape[1] // 16 if
                                                         cfg.group_size == 16 else
                                                         m.shape[1] // cfg.group_size)
        assert f"{m.name}.weight" not in state
        assert torch.allclose(back[f"{m.name}.weight"], mods[m.name].weight, atol=1e-5)
    assert set(back) == set(tiny.state_dict())
    with pytest.raises(QidlabError, match="integer codes"):
        quantized_state(tiny, quantize_(copy.deepcopy(tiny), NF4Config()))


def test_qwen2_gptq_and_rtn(calib):
    for cfg in (RTNConfig(4), GPTQConfig(4, group_size=32)):
        m = _qwen2()
        r = quantize_(m, cfg, calib)
        assert len(r.modules) == 14 and all(x.name.startswith("model.layers.") for x in r.modules)


def test_block_input_capture_reproduces_forward(tiny, calib):
    """Inputs caught at block 0 and run through every block give what the model computes."""
    _, blocks = find_blocks(tiny)
    seen = []
    h = blocks[-1].register_forward_hook(
        lambda mod, args, out: seen.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        for i in range(0, 8, 4):
            tiny(input_ids=calib[i:i + 4], use_cache=False)
        h.remove()
        inputs = capture_block_inputs(tiny, blocks, calib, batch_size=4)
        assert len(inputs.hidden) == 2
        for b in blocks:
            inputs = inputs.run(b)
    for got, want in zip(inputs.hidden, seen):
        assert torch.allclose(got, want, atol=1e-5)


def test_module_patterns(tiny, calib):
    before = _snapshot(tiny)
    report = quantize_(tiny, RTNConfig(3, modules=("*.mlp.*",)))
    assert report.modules and all(".mlp." in m.name for m in report.modules)
    after = tiny.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if ".mlp." not in k)
    # the head is lm_head (transformers 5; GPT-NeoX's was embed_out in transformers 4)
    name = next(n for n, m in tiny.named_modules() if m is tiny.get_output_embeddings())
    head = quantize_(tiny, RTNConfig(8, modules=(name,)), calib)
    assert [m.name for m in head.modules] == [name]
    with pytest.raises(QidlabError, match="no nn.Linear"):
        quantize_(tiny, RTNConfig(3, modules=("*.nothing",)))


def test_gptq_on_lm_head_by_pattern(calib):
    m = _llama()
    mods = ("lm_head", "model.layers.1.mlp.*")
    r = quantize_(m, GPTQConfig(4, modules=mods), calib)
    assert [x.name for x in r.modules][-1] == "lm_head" and len(r.modules) == 4
    H = collect_hessians(_llama(), calib, mods)  # runs past the blocks to reach lm_head
    assert set(H) == {"lm_head", *(f"model.layers.1.mlp.{p}" for p in ("gate_proj", "up_proj",
                                                                       "down_proj"))}
    assert all(float(h.diagonal().min()) > 0 for h in H.values())
    with pytest.raises(QidlabError, match="batch_size"):
        quantize_(m, RTNConfig(4), batch_size=0)


@pytest.mark.parametrize("cfg", [GPTQConfig(4), AWQConfig(4, group_size=32),
                                 GPTQConfig(4, shared_hessian=True)], ids=lambda c: c.method)
def test_calibration_required(tiny, cfg):
    with pytest.raises(QidlabError, match="needs calibration"):
        quantize_(tiny, cfg)
    with pytest.raises(QidlabError, match="token ids"):
        quantize_(tiny, cfg, torch.randn(4, 16))
    with pytest.raises(QidlabError, match="token ids"):
        quantize_(tiny, cfg, torch.randint(0, 10, (16,)))


def test_errors_name_the_layer_and_the_problem(tiny, calib):
    before = _snapshot(tiny)
    with pytest.raises(QidlabError, match=r"layers\.0\..*group_size 48 does not divide .* 64"):
        quantize_(tiny, RTNConfig(4, group_size=48))
    # shapes are checked for every selected layer before any weight changes
    with pytest.raises(QidlabError, match="group_size 128 does not divide"):
        quantize_(tiny, GPTQConfig(4, group_size=128), calib)
    after = tiny.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    with pytest.raises(QidlabError, match="needs a quantization config"):
        quantize_(tiny, {"method": "rtn", "bits": 4})


def test_bf16_model(calib):
    m = _llama().to(torch.bfloat16)
    r = quantize_(m, GPTQConfig(4, group_size=32), calib)
    assert m.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    state = quantized_state(m, r)
    back = dequantize_state(state)
    w = m.model.layers[0].mlp.up_proj.weight.float()
    assert torch.allclose(back["model.layers.0.mlp.up_proj.weight"], w, rtol=1e-2, atol=1e-3)


def test_true_sequential_order_groups_shared_inputs(tiny, calib):
    from qidlab.quantize.model import linears_in_order, select_linears

    _, blocks = find_blocks(tiny)
    names = {m: n for n, m in select_linears(tiny, None).items()}
    inputs = capture_block_inputs(tiny, blocks, calib, batch_size=4)
    order = [[n.split(".", 3)[-1] for n in grp] for grp in linears_in_order(blocks[0], names, inputs)]
    if hasattr(tiny, "gpt_neox"):
        want = [["attention.query_key_value"], ["attention.dense"], ["mlp.dense_h_to_4h"],
                ["mlp.dense_4h_to_h"]]
    else:
        want = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
                ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    assert order == want


def test_every_registered_method_is_covered():
    from qidlab.quantize import METHODS

    assert {c.method for c in ALL_CONFIGS} == set(METHODS)


def test_awq_search_by_gram_matrix_picks_what_the_direct_output_error_picks(monkeypatch):
    """The search scores each exponent through G = x^T x; the direct error mean((x W'^T - x W^T)^2)
    gives the same numbers (to float rounding) and the same choice."""
    from qidlab.quantize import awq
    from qidlab.quantize.awq import _fake, _weight_mean, awq_scales_search

    monkeypatch.setattr(awq, "GRAM_TOKENS", 64)  # G summed over several slices of x

    g = torch.Generator().manual_seed(0)
    for duo in (False, True):
        cfg = AWQConfig(bits=3, group_size=16, duo_scaling=duo)
        W = torch.randn(24, 64, generator=g)
        x = torch.randn(300, 64, generator=g) * torch.linspace(0.1, 5, 64)  # uneven channels
        s, a = awq_scales_search(W, x, cfg)
        w_mean = _weight_mean(W, 16) if duo else None
        direct = []
        for i in range(cfg.n_grid):
            c = candidate_scales(x.abs().mean(0), w_mean, i / cfg.n_grid)
            direct.append(float((x @ (_fake(W * c, cfg) / c).T - x @ W.T).pow(2).mean()))
        assert a == direct.index(min(direct)) / cfg.n_grid
        assert torch.allclose(s, candidate_scales(x.abs().mean(0), w_mean, a))
        assert len(set(round(d, 6) for d in direct)) > 1  # the exponent mattered
