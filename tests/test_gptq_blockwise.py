"""Block-by-block shared-Hessian GPTQ (``quantize.gptq_blockwise``), GPTQ's damping retry and
failure modes, the Hessian product precisions, and the 16-bit snapshot in host memory.

Tolerance of "block-wise equals all-at-once": both paths accumulate each layer's Hessian from the
16-bit model's activations over the same calibration batches with the same float32 arithmetic;
only the forward pass differs (blocks run one at a time from captured inputs instead of in one
model call), so the activations, hence the Hessians, can differ only by float summation order
(on this CPU they are bit for bit equal). A Hessian differing in its last bits can flip a GPTQ
rounding decision (one grid step for that weight, and a slightly different error fed to the row's
later columns), so, as elsewhere in tests/test_quantize.py, weights are compared by the fraction
of entries that differ by more than 1e-5: under 1%.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from qidlab.errors import QidlabError  # noqa: E402
from qidlab.quantize import GPTQConfig, RTNConfig, collect_hessians, gptq_shared_weights, grids, quantize_  # noqa: E402
from qidlab.quantize.gptq import (GPTQFailure, HessianAccumulator, gptq_layer,  # noqa: E402
                                  gptq_quantize_layer_bits)
from qidlab.quantize.gptq_blockwise import (block_hessians, gptq_shared_blockwise,  # noqa: E402
                                            restore_weights, snapshot_weights)
from qidlab.quantize.model import select_linears  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=256, vocab_size=512,
                                            max_position_embeddings=128)).eval()


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=128, vocab_size=512,
                                        max_position_embeddings=128)).eval()


MODELS = {"neox": _neox, "llama": _llama}


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(1))


def _flipped(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of entries of a and b that differ by more than 1e-5."""
    return float(((a.float() - b.float()).abs() > 1e-5).float().mean())


# ---- block-wise == collect_hessians + gptq_shared_weights ---------------------------------


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("modules, group_size", [(None, 16), (None, None), (("*.mlp.*",), 32),
                                                 (("lm_head", "*.layers.1.*"), 16)])
def test_blockwise_equals_all_at_once(arch, modules, group_size, calib):
    model = MODELS[arch]()
    cfg = GPTQConfig(4, group_size=group_size, shared_hessian=True, modules=modules)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    H = collect_hessians(model, calib, modules, batch_size=4)
    want = gptq_shared_weights(model, cfg, [2, 3, 4], H)
    got = gptq_shared_blockwise(model, cfg, [2, 3, 4], calib, batch_size=4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # model untouched
    names = list(select_linears(model, modules))
    assert set(got.weights) == {2, 3, 4} and got.fallback == {}
    assert got.damp == {n: cfg.damp for n in names} and got.n_calibration_tokens == calib.numel()
    for b in (2, 3, 4):
        assert list(got.weights[b]) == names  # model order, head last
        for n in names:
            w = got.weights[b][n]
            assert w.device.type == "cpu" and w.dtype == model.get_submodule(n).weight.dtype
            assert _flipped(w, want[b][n]) < 0.01, (b, n)
    blockwise_H = {}
    for mine, hs in block_hessians(model, calib, select_linears(model, modules), batch_size=4):
        assert set(mine) == set(hs)
        blockwise_H.update(hs)
    for n in names:
        assert torch.allclose(blockwise_H[n], H[n], rtol=1e-5, atol=1e-6 * float(H[n].abs().max())), n


def test_blockwise_bf16_model_and_precisions(calib):
    """bf16 activations: bf16 (and tf32) products are exact, only the summation order changes."""
    model = _llama().to(torch.bfloat16)
    cfg = GPTQConfig(3, group_size=16, shared_hessian=True)
    timings: dict = {}
    ref = gptq_shared_blockwise(model, cfg, [3], calib, batch_size=4, timings=timings)
    assert set(timings) == {"hessians_s", "gptq_s"} and all(v > 0 for v in timings.values())
    for precision in ("bf16", "tf32"):
        fast = gptq_shared_blockwise(model, cfg, [3], calib, batch_size=4, precision=precision)
        for n, w in ref.weights[3].items():
            assert fast.weights[3][n].dtype == torch.bfloat16
            assert _flipped(fast.weights[3][n], w) < 0.01, (precision, n)


def test_blockwise_config_errors(calib):
    model = _neox()
    with pytest.raises(QidlabError, match="shared_hessian=True"):
        gptq_shared_blockwise(model, GPTQConfig(4), [2], calib)
    with pytest.raises(QidlabError, match="group_size 48 does not divide"):
        gptq_shared_blockwise(model, GPTQConfig(4, group_size=48, shared_hessian=True), [2], calib)
    with pytest.raises(QidlabError, match="on_failure must be one of error, rtn"):
        gptq_shared_blockwise(model, GPTQConfig(4, shared_hessian=True), [2], calib, on_failure="skip")
    with pytest.raises(QidlabError, match="precision must be one of float32, tf32, bf16"):
        gptq_shared_blockwise(model, GPTQConfig(4, shared_hessian=True), [2], calib, precision="fp16")


# ---- the 16-bit weights in host memory ----------------------------------------------------


def test_snapshot_and_restore(calib):
    model = _neox()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    snap = snapshot_weights(model)
    head = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
    assert set(snap) == set(select_linears(model, None)) | {head}
    quantize_(model, RTNConfig(2, modules=("*",)))
    assert not torch.equal(model.get_submodule(head).weight, before[f"{head}.weight"])
    restore_weights(model, snap)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    got = gptq_shared_blockwise(model, GPTQConfig(4, group_size=16, shared_hessian=True), [3], calib)
    restore_weights(model, got.weights[3])  # one bit width loaded as the sweep does
    ref = copy.deepcopy(model)
    restore_weights(ref, snap)
    quantize_(ref, GPTQConfig(3, group_size=16, shared_hessian=True), calib)
    for n in got.weights[3]:
        assert _flipped(model.get_submodule(n).weight, ref.get_submodule(n).weight) < 0.01


# ---- Hessian product precision ------------------------------------------------------------


def _accumulate(X: torch.Tensor, precision: str) -> torch.Tensor:
    acc = HessianAccumulator(X.shape[1], precision=precision)
    for chunk in X.split(70):
        acc.add(chunk)
    return acc.H


def test_hessian_precisions():
    """Where each precision's effect shows on a CPU: bf16 rounds float32 activations (H off by
    ~1e-3 relative, never worse than 2^-7) but is exact on bf16 values; tf32 has no CPU units
    and equals float32 up to summation order."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 48, generator=g) * (1 + 4 * torch.rand(48, generator=g))
    ref = _accumulate(X, "float32")
    assert torch.allclose(ref, 2 * X.T @ X / 300, rtol=1e-5, atol=1e-5)

    def rel(H):
        return float((H - ref).abs().max() / ref.abs().max())

    assert rel(_accumulate(X, "tf32")) < 1e-5
    assert 1e-5 < rel(_accumulate(X, "bf16")) < 2**-7
    Xb = X.to(torch.bfloat16).float()  # activations of a bf16 model
    refb = _accumulate(Xb, "float32")
    assert float((_accumulate(Xb, "bf16") - refb).abs().max() / refb.abs().max()) < 1e-5
    with pytest.raises(QidlabError, match="precision must be one of"):
        HessianAccumulator(8, precision="fp8")


# ---- damping retry, NaN/inf, fallback to round-to-nearest -----------------------------------


def _indefinite(d=32, corner=-0.03):
    """Identity but one negative diagonal entry: damp 0.01 x mean(diag) does not lift it, 0.1 does."""
    H = torch.eye(d)
    H[0, 0] = corner
    return H


def test_damping_retry_records_the_damping():
    W = torch.randn(8, 32)
    cfg = GPTQConfig(3, group_size=16)
    with pytest.raises(QidlabError, match="not positive definite"):  # no retry in the plain function
        gptq_quantize_layer_bits(W, _indefinite(), cfg, [3])
    r = gptq_layer(W, _indefinite(), cfg, [2, 3])
    assert r.damp == pytest.approx(0.1) and r.fallback is None and len(r.results) == 2
    assert gptq_layer(W, _indefinite(), cfg, [3], max_damp=0.05).damp == pytest.approx(0.05)  # capped
    with pytest.raises(GPTQFailure, match=r"not positive definite \(damp 0.01, 0.1, 1 of mean diag H"):
        gptq_layer(W, _indefinite(corner=-5.0), cfg, [3])
    ok = gptq_layer(W, torch.eye(32), cfg, [3])
    assert ok.damp == cfg.damp


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("inf"), "inf")])
def test_nonfinite_hessian_is_named(value, word):
    W, H = torch.randn(8, 32), torch.eye(32)
    H[3, 5] = value
    with pytest.raises(GPTQFailure, match=f"the Hessian holds {word}"):
        gptq_layer(W, H, GPTQConfig(3), [3])
    r = gptq_layer(W, H, GPTQConfig(3, group_size=16), [2, 3], on_failure="rtn")
    assert r.damp is None and f"holds {word}" in r.fallback
    for b, (q, _s, _z) in zip([2, 3], r.results):
        assert torch.allclose(q, grids.fake_quantize(W, b, 16), atol=1e-6)  # RTN on the same grid


def test_nan_activations_name_the_layer(calib):
    model = _neox()
    bad = int(calib[4, 0])
    with torch.no_grad():
        model.gpt_neox.embed_in.weight[bad] = float("nan")
    ids = calib.clone()
    ids[:4][ids[:4] == bad] = (bad + 1) % 512  # only the second batch of 4 holds the token
    cfg = GPTQConfig(4, group_size=16, shared_hessian=True)
    for on_failure in ("error", "rtn"):  # a broken forward pass is never rounded around
        with pytest.raises(QidlabError, match=r"gpt_neox\.layers\.0\.attention\.query_key_value: the activations "
                                              r"entering this layer hold NaN \(calibration batch 1\)"):
            gptq_shared_blockwise(model, cfg, [4], ids, batch_size=4, on_failure=on_failure)


def test_overflowing_hessian_falls_back_to_rtn(calib):
    """Huge but finite activations (the last block's MLP input x 1e25) overflow X^T X in float32:
    the Hessian, not the activations, is reported, and on_failure='rtn' rounds that layer."""
    model = _neox()
    with torch.no_grad():
        model.gpt_neox.layers[1].post_attention_layernorm.weight.mul_(1e25)
    cfg = GPTQConfig(4, group_size=16, shared_hessian=True)
    up = "gpt_neox.layers.1.mlp.dense_h_to_4h"
    with pytest.raises(QidlabError, match=rf"{up}: GPTQ: the Hessian holds NaN and inf"):
        gptq_shared_blockwise(model, cfg, [4], calib)
    got = gptq_shared_blockwise(model, cfg, [3, 4], calib, on_failure="rtn")
    assert set(got.fallback) == {up, "gpt_neox.layers.1.mlp.dense_4h_to_h"}
    assert got.damp[up] is None and got.damp["gpt_neox.layers.0.mlp.dense_h_to_4h"] == cfg.damp
    for b in (3, 4):
        w = model.get_submodule(up).weight
        assert torch.allclose(got.weights[b][up], grids.fake_quantize(w, b, 16), atol=1e-6)


def test_pinned_arena_packs_tensors_into_power_of_two_slabs():
    """The packing of PinnedArena (in ordinary memory here: pinning needs CUDA): disjoint aligned
    views of the right shapes and dtypes, slabs a power of two no larger than needed, few of them."""
    from qidlab.quantize.gptq_blockwise import PinnedArena

    shapes = [(300, 64), (64, 64), (256, 64), (64, 256)] * 3  # a GPT-NeoX block's four weights, 3 blocks
    total = sum(a * b * 2 for a, b in shapes)
    arena = PinnedArena(total, pin=False)
    assert arena.slab_bytes == 1 << (total - 1).bit_length()  # the power of two >= total
    views = [arena.empty(s, torch.bfloat16) for s in shapes]
    assert arena.n_slabs == 1
    for s, v in zip(shapes, views):
        v.copy_(torch.full(s, float(len(s) + s[0])))
        assert v.shape == s and v.dtype == torch.bfloat16
        assert (v.data_ptr() - views[0].data_ptr()) % PinnedArena.ALIGN == 0  # (pinned slabs are page-aligned)
    for s, v in zip(shapes, views):
        assert torch.all(v == float(len(s) + s[0]))  # no view overwrote another
    small = PinnedArena(64 * 64 * 4 * 3, pin=False)
    small.slab_bytes = 64 * 64 * 4 * 2  # two float32 (64, 64) per slab
    got = [small.empty((64, 64), torch.float32) for _ in range(5)]
    assert small.n_slabs == 3 and len({t.data_ptr() for t in got}) == 5
    assert small.empty((128, 128), torch.float32).shape == (128, 128)  # larger than a slab: its own
