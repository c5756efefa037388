"""GPTQ's Triton block kernel (``qidlab.quantize.gptq_kernel``) against the eager column loop.

With a CUDA device the kernel is compiled and run for real; without one it runs in Triton's
interpreter (``TRITON_INTERPRET=1``, CPU tensors, numpy float32 arithmetic). Without triton the
kernel tests skip; the switch tests run regardless.

Tolerance: the kernel does the eager loop's float32 operations in the same order with the same
rounding (IEEE division, no FMA contraction, round half to even), so the two should agree bit
for bit, and do in the interpreter. On a GPU a different rounding of one operation could move
``w / scale`` across a rounding tie; that code then differs by one step and the row's later
columns see a slightly different error, so we compare codes (``round(Q / scale + zero)``) and
allow a small fraction of them, by at most one step, to differ; everywhere else the dequantized
weights must agree to float32 rounding.
"""

from __future__ import annotations

import os
import sys

import pytest

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
# triton builds its language for the interpreter only if TRITON_INTERPRET is set when it imports
LATE = not CUDA and "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
if not CUDA and not LATE:
    os.environ["TRITON_INTERPRET"] = "1"

from qidlab.errors import QidlabError  # noqa: E402
from qidlab.quantize import GPTQConfig  # noqa: E402
from qidlab.quantize import gptq_kernel  # noqa: E402
from qidlab.quantize.gptq import gptq_quantize_layer_bits  # noqa: E402

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False

needs_triton = pytest.mark.skipif(
    not HAVE_TRITON or LATE,
    reason="triton is not installed (kernel untested here)" if not HAVE_TRITON else
    "no CUDA, and triton was imported before this module could set TRITON_INTERPRET=1: "
    "run with TRITON_INTERPRET=1")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def device():
    """CUDA if present; else CPU tensors through Triton's interpreter (TRITON_INTERPRET=1 above)."""
    return torch.device("cuda" if CUDA else "cpu")


def _problem(rows, cols, seed, device):
    """A random weight and a correlated, positive definite H = X^T X / n."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * cols, cols, generator=g) @ (0.3 * torch.randn(cols, cols, generator=g) + torch.eye(cols))
    H = X.T @ X / X.shape[0]
    W = torch.randn(rows, cols, generator=g)
    return W.to(device), H.to(device)


def _codes(Q, scale, zero, cfg, cols):
    """Integer codes of a dequantized weight, each column on its group's grid."""
    g = cols if cfg.group_size is None else cfg.group_size
    grp = torch.arange(cols, device=Q.device) // g
    return torch.round(Q / scale[:, grp] + zero[:, grp])


# rows x bit widths is never a multiple of the 16-row tile; with 160 columns the last block is
# shorter than the others (not possible with dynamic groups that the kernel takes: those need
# group_size a multiple of block_size, and group_size divides the width)
CASES = {
    "per-channel": (dict(group_size=None), 21, 160, [2, 3, 4]),
    "static groups, asymmetric": (dict(group_size=32, static_groups=True, symmetric=False), 21, 160, [2, 4, 8]),
    "act_order": (dict(group_size=32, act_order=True), 21, 160, [2, 3, 4]),
    "dynamic groups of 2 blocks": (dict(group_size=64, block_size=32), 13, 192, [2, 3, 4]),
    "dynamic groups = blocks, asymmetric": (dict(group_size=64, block_size=64, symmetric=False), 13, 192, [3, 4]),
    # groups of 48 in blocks of 32: blocks where a group starts mid-block take the eager loop
    "dynamic, mixed kernel and eager blocks": (dict(group_size=48, block_size=32), 13, 192, [2, 4]),
}
KERNEL_BLOCKS = {"dynamic, mixed kernel and eager blocks": 4}  # of 6 blocks: 32-64 and 128-160 are eager


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_eager_loop(name, device, monkeypatch):
    kw, rows, cols, bits = CASES[name]
    cfg = GPTQConfig(4, **kw)
    W, H = _problem(rows, cols, seed=len(name), device=device)
    monkeypatch.setenv(gptq_kernel.ENV, "eager")
    ref = gptq_quantize_layer_bits(W, H, cfg, bits)

    calls = []
    real = gptq_kernel.quantize_block
    monkeypatch.setattr(gptq_kernel, "quantize_block", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv(gptq_kernel.ENV, "triton")
    got = gptq_quantize_layer_bits(W, H, cfg, bits)
    n_blocks = -(-cols // cfg.block_size)
    assert len(calls) == KERNEL_BLOCKS.get(name, n_blocks)

    for b, (q0, s0, z0), (q1, s1, z1) in zip(bits, ref, got):
        assert torch.allclose(s1, s0, rtol=1e-5, atol=0) and (z1 - z0).abs().max() <= 1
        c0, c1 = _codes(q0, s0, z0, cfg, cols), _codes(q1, s1, z1, cfg, cols)
        flipped = c0 != c1
        frac = flipped.float().mean().item()
        assert frac <= 0.01, f"{b}-bit: {frac:.4%} of codes differ"
        assert (c0 - c1).abs().max() <= 1
        same = ~flipped
        assert torch.allclose(q1[same], q0[same], rtol=1e-5, atol=1e-6)
        if not CUDA:  # the interpreter's numpy float32 ops round as torch's CPU ops
            assert torch.equal(q1, q0), f"{b}-bit: not bit-identical in the interpreter"


@needs_triton
@pytest.mark.parametrize("bs, group", [(128, 32), (37, None)])
def test_block_matches_eager_block(bs, group, device):
    """One block alone, both outputs: the dequantized block and the errors that feed the lazy update."""
    from qidlab.quantize import grids
    from qidlab.quantize.gptq import _eager_block, _inverse_cholesky

    nb, rows = 3, 29
    W, H = _problem(rows, bs, seed=bs, device=device)
    H += 0.01 * torch.diag(H).mean() * torch.eye(bs, device=device)
    Hinv1 = _inverse_cholesky(H)
    W1 = torch.stack([W * (1 + k) for k in range(nb)])
    maxq = torch.tensor([[3.0], [7.0], [15.0]], device=device)
    sz = [grids.choose_qparams(grids.group_view(W1[k], group), b, True) for k, b in enumerate((2, 3, 4))]
    scales = torch.stack([s[..., 0] for s, _ in sz])
    zeros = torch.stack([z[..., 0] for _, z in sz])
    g = bs if group is None else group
    grp = torch.arange(bs, device=device) // g
    Q0, E0 = _eager_block(W1, 0, bs, Hinv1, list(range(bs)), g, None, scales, zeros, maxq)
    Q1, E1 = gptq_kernel.quantize_block(W1, Hinv1, scales[:, :, grp], zeros[:, :, grp], maxq)
    same = (Q1 == Q0).all(dim=(0, 2), keepdim=True).expand_as(Q0)  # rows without a flipped code
    assert same.float().mean() >= 0.95
    # ulp-level rounding of w, divided by w - q (which may cancel) and Hinv1[i, i]: rtol alone is too strict
    assert torch.allclose(E1[same], E0[same], rtol=1e-4, atol=1e-5 * E0.abs().max().item())
    if not CUDA:
        assert torch.equal(Q1, Q0) and torch.equal(E1, E0)


@needs_triton
def test_kernel_rounds_half_to_even_and_clamps(device):
    """Identity Hinv (no error feedback): each column is plain rounding, compared with torch.round."""
    vals = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -0.3, 0.49999997, 0.50000006, 7.5, -7.5,
                         100.5, -100.5, 1e9, -1e9, 2.0**23 + 2, 126.5, 127.5, -128.5])
    n = vals.numel()
    W1 = vals.view(1, n, 1).expand(1, n, 20).clone()  # 20 columns, the same values in each
    scale = torch.ones(1, n, 20)
    scale[..., 1::2] = 0.5  # odd columns: w / scale = 2 w
    zero = torch.full((1, n, 20), 128.0)
    maxq = torch.tensor([[255.0]])
    d = torch.full((20,), 1.25)
    Q1, Err1 = gptq_kernel.quantize_block(*(t.to(device) for t in (W1, torch.diag(d), scale, zero, maxq)))
    want_q = scale * (torch.clamp(torch.round(W1 / scale) + zero, 0, 255) - zero)
    assert torch.equal(Q1.cpu(), want_q)
    assert torch.equal(Err1.cpu(), (W1 - want_q) / 1.25)


def test_switch(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(gptq_kernel.ENV, raising=False)
    assert gptq_kernel.mode() == "auto" and not gptq_kernel.use_kernel(cpu)  # CPU: the eager loop
    monkeypatch.setenv(gptq_kernel.ENV, "eager")
    assert not gptq_kernel.use_kernel(torch.device("cuda"))
    monkeypatch.setenv(gptq_kernel.ENV, "fast")
    with pytest.raises(QidlabError, match="QIDLAB_GPTQ_KERNEL must be one of auto, eager, triton"):
        gptq_kernel.use_kernel(cpu)
    monkeypatch.setenv(gptq_kernel.ENV, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(QidlabError, match="TRITON_INTERPRET=1" if HAVE_TRITON else "triton does not import"):
        gptq_kernel.use_kernel(cpu)


def test_switch_is_not_part_of_the_config():
    """How GPTQ runs is not what it computes: the config (hashed into a measurement's identity) has
    no field for it."""
    assert not any("kernel" in k for k in GPTQConfig(4).to_dict())
