"""Quantization grids: pure torch functions, no modules and no hooks.

Weights are ``(out_features, in_features)`` matrices. Integer grids group weights along the
input dimension (``group_size`` consecutive inputs of one output row share a scale; ``None``:
the whole row). Codebook formats (NF4, FP4, ExMy) share one absmax per ``block_size``
consecutive elements of the flattened (row-major) matrix, as bitsandbytes does. All math runs
in float32; ``fake_*`` functions return the dequantized weights in the input dtype.
"""

from __future__ import annotations

import torch

from qidlab.errors import QidlabError

__all__ = [
    "group_view", "choose_qparams", "quantize", "dequantize", "fake_quantize",
    "NF4_CODE", "FP4_CODE", "fp_values", "round_to_values", "fake_quantize_codebook",
    "fake_quantize_nf4", "fake_quantize_fp4", "fake_quantize_fp", "fake_quantize_ternary",
]

# QLoRA's NormalFloat-4 (bitsandbytes' NF4 table, sorted ascending).
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])

# bitsandbytes' FP4 (its CUDA dDequantizeFP4Tree table): magnitudes {0, 1/192, 1/6, 1/4, 1/3,
# 1/2, 2/3, 1} = {0, 0.03125, 1, 1.5, 2, 3, 4, 6} / 6, i.e. e2m1 with a tiny subnormal.
_FP4_POS = torch.tensor([0.0, 1 / 192, 1 / 6, 0.25, 1 / 3, 0.5, 2 / 3, 1.0])
FP4_CODE = torch.cat([-_FP4_POS.flip(0)[:-1], _FP4_POS])  # 15 distinct values (+0 and -0 merge)


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise QidlabError(f"bits must be an integer 2..8, got {bits!r}")
    return 2**bits - 1


def group_view(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """``(out, in)`` -> ``(out, in // group_size, group_size)`` (a view); ``None``: one group."""
    if w.dim() != 2:
        raise QidlabError(f"expected a 2-d weight (out, in), got shape {tuple(w.shape)}")
    out_f, in_f = w.shape
    g = in_f if group_size is None else group_size
    if g < 1 or in_f % g:
        raise QidlabError(f"group_size {g} does not divide the layer's input width {in_f}")
    return w.reshape(out_f, in_f // g, g)


def choose_qparams(x: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of an integer grid over the last dim of ``x`` (IST-DASLab/gptq).

    The range always contains 0: [min(x, 0), max(x, 0)]. Asymmetric: scale = range / maxq,
    zero = round(-min / scale). Symmetric: scale = 2 amax / maxq, zero = (maxq + 1) / 2, so the
    grid is scale * {-2^(b-1), ..., 2^(b-1) - 1} (torchao's symmetric int grid). Returns
    float32 ``scale, zero`` shaped ``x.shape[:-1] + (1,)``; ``zero`` holds integers in [0, maxq].
    """
    maxq = _check_bits(bits)
    x = x.float()
    xmin = x.amin(-1, keepdim=True).clamp(max=0)
    xmax = x.amax(-1, keepdim=True).clamp(min=0)
    if symmetric:
        xmax = torch.maximum(-xmin, xmax)
        xmax = torch.where(xmax == 0, torch.ones_like(xmax), xmax)
        scale = 2 * xmax / maxq
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        empty = (xmin == 0) & (xmax == 0)
        xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
        xmax = torch.where(empty, torch.ones_like(xmax), xmax)
        scale = (xmax - xmin) / maxq
        zero = torch.round(-xmin / scale)
    return scale, zero


def quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zero, 0, 2^bits - 1)`` as uint8 (same shape as x;
    ``scale`` and ``zero`` broadcast)."""
    maxq = _check_bits(bits)
    q = torch.clamp(torch.round(x.float() / scale) + zero, 0, maxq)
    return q.to(torch.uint8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``scale * (codes - zero)`` in float32."""
    return scale * (codes.float() - zero)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int | None = None,
                  symmetric: bool = True) -> torch.Tensor:
    """Round-to-nearest on the integer grid, per group; returns dequantized weights (w's dtype)."""
    g = group_view(w, group_size)  # (out, n_groups, G)
    scale, zero = choose_qparams(g, bits, symmetric)
    return dequantize(quantize(g, scale, zero, bits), scale, zero).reshape(w.shape).to(w.dtype)


# ---- codebooks ---------------------------------------------------------------------------


def fp_values(exp_bits: int, man_bits: int) -> torch.Tensor:
    """Non-negative representable values of a float with E exponent and M mantissa bits,
    bias 2^(E-1) - 1, subnormals, every code finite (no inf/NaN), ascending, float64.

    E2M1 -> {0, 0.5, 1, 1.5, 2, 3, 4, 6}; E4M3 -> max 480 (OCP E4M3FN, which reserves the top
    code for NaN, stops at 448). E=0 gives the integers 0 .. 2^M - 1.
    """
    if exp_bits == 0:
        return torch.arange(2**man_bits, dtype=torch.float64)
    bias = 2 ** (exp_bits - 1) - 1
    m = torch.arange(2**man_bits, dtype=torch.float64) / 2**man_bits  # fraction
    vals = [m * 2.0 ** (1 - bias)]  # exponent code 0: subnormals (and zero)
    for e in range(1, 2**exp_bits):
        vals.append((1 + m) * 2.0 ** (e - bias))
    return torch.cat(vals)  # code order == value order


def round_to_values(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Nearest element of the ascending ``values`` for every element of ``x``; ties go to the
    even index (for a float codebook: round half to even mantissa). Returns float32."""
    v = values.to(device=x.device, dtype=torch.float32)
    mid = (v[1:] + v[:-1]) / 2
    x = x.float().contiguous()
    idx = torch.bucketize(x, mid)  # mid[i-1] < x <= mid[i] -> i
    tie = (idx < mid.numel()) & (x == mid[idx.clamp(max=mid.numel() - 1)]) & (idx % 2 == 1)
    return v[idx + tie.long()]


def _blocks(w: torch.Tensor, block_size: int) -> tuple[torch.Tensor, int]:
    """Flatten row-major and pad to whole blocks: ``(n_blocks, block_size)`` and the pad."""
    flat = w.reshape(-1).float()
    pad = (-flat.numel()) % block_size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.reshape(-1, block_size), pad


def _unblock(b: torch.Tensor, pad: int, like: torch.Tensor) -> torch.Tensor:
    flat = b.reshape(-1)
    if pad:
        flat = flat[:-pad]
    return flat.reshape(like.shape).to(like.dtype)


def fake_quantize_codebook(w: torch.Tensor, code: torch.Tensor, block_size: int) -> torch.Tensor:
    """Block-wise absmax quantization to a signed codebook in [-1, 1] (bitsandbytes' scheme):
    each block of the flattened ``w`` is divided by its absmax, rounded to the nearest code,
    multiplied back. A final partial block gets its own absmax, as in bitsandbytes."""
    b, pad = _blocks(w, block_size)  # zero padding leaves the last block's absmax unchanged
    absmax = b.abs().amax(-1, keepdim=True)
    absmax = absmax.clamp(min=1e-38)
    q = round_to_values(torch.clamp(b / absmax, -1, 1), code.sort().values)
    return _unblock(q * absmax, pad, w)


def fake_quantize_nf4(w: torch.Tensor, block_size: int = 64) -> torch.Tensor:
    """NF4 as bitsandbytes ``quantize_4bit(quant_type="nf4")`` then ``dequantize_4bit``."""
    return fake_quantize_codebook(w, NF4_CODE, block_size)


def fake_quantize_fp4(w: torch.Tensor, block_size: int = 64) -> torch.Tensor:
    """FP4 as bitsandbytes ``quantize_4bit(quant_type="fp4")`` then ``dequantize_4bit``."""
    return fake_quantize_codebook(w, FP4_CODE, block_size)


def fake_quantize_fp(w: torch.Tensor, exp_bits: int, man_bits: int, block_size: int) -> torch.Tensor:
    """ExMy with one scale per block: scale = block absmax / max representable; magnitudes
    rounded to nearest representable (ties to even), sign kept."""
    pos = fp_values(exp_bits, man_bits)
    b, pad = _blocks(w, block_size)
    scale = b.abs().amax(-1, keepdim=True).clamp(min=1e-38) / float(pos[-1])
    q = torch.sign(b) * round_to_values(b.abs() / scale, pos)
    return _unblock(q * scale, pad, w)


def fake_quantize_ternary(w: torch.Tensor, group_size: int | None = None,
                          eps: float = 1e-5) -> torch.Tensor:
    """BitNet b1.58 absmean: g = mean|W| per group, W' = g * clip(round(W / (g + eps)), -1, 1)."""
    grp = group_view(w, group_size).float()
    gamma = grp.abs().mean(-1, keepdim=True)
    q = torch.clamp(torch.round(grp / (gamma + eps)), -1, 1)
    return (q * gamma).reshape(w.shape).to(w.dtype)
