"""Quantization-aware and native low-bit training: fake quantization in the forward pass, gradients
by the straight-through estimator (STE).

``apply_qat(model, spec)`` turns every ``nn.Linear`` inside the decoder blocks into a ``QATLinear``,
in place: same parameters, same ``state_dict`` keys, so a saved checkpoint is an ordinary Hugging Face
folder of the latent (full-precision) weights; ``qidlab.json`` records the ``QATSpec`` and
``apply_qat(model, qat_from_dict(meta["qat"]))`` gives a loaded checkpoint its low-bit forward back.

``QATLinear`` computes ``y = A(x) @ Q(W)^T + b``, then, on GPT-NeoX's ``attention.query_key_value``,
rounds the keys and values of ``y`` (``KV``), per token and head, before attention (keys before the
rotary embedding is applied). ``Q`` is the PTQ grid of ``qidlab.quantize.grids`` named by
``spec.weights`` (the numbers ``quantize_`` with the same config writes); ``A`` and ``KV`` are the
symmetric absmax integer grid of ``precision.py``. The STE: the forward value is exactly the rounded
tensor and the gradient passes through unchanged (``q + (x - x.detach())``), so the optimizer updates
the latent fp32 weights.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from qidlab.errors import QidlabError
from qidlab.quantize import grids
from qidlab.quantize.config import FP4Config, FPConfig, NF4Config, QuantConfig, RTNConfig, TernaryConfig
from qidlab.quantize.model import select_linears
from qidlab.train.precision import ActSpec, QATSpec

KV_MODULE = "attention.query_key_value"  # GPT-NeoX: per head [query | key | value] along the output


def ste(x: torch.Tensor, fn) -> torch.Tensor:
    """``fn(x)`` in the forward pass, the identity in the backward pass (straight-through)."""
    q = fn(x.detach())
    return q.detach() + (x - x.detach())  # x - x.detach() is exactly 0 and carries x's gradient


#: The grid function of each config type whose ``supports_qat`` is true (tests check they agree).
_GRIDS = {
    RTNConfig: lambda c: partial(grids.fake_quantize, bits=c.bits, group_size=c.group_size, symmetric=c.symmetric),
    FPConfig: lambda c: partial(grids.fake_quantize_fp, exp_bits=c.exp_bits, man_bits=c.man_bits,
                                block_size=c.block_size),
    TernaryConfig: lambda c: partial(grids.fake_quantize_ternary, group_size=c.group_size),
    NF4Config: lambda c: partial(grids.fake_quantize_nf4, block_size=c.block_size),
    FP4Config: lambda c: partial(grids.fake_quantize_fp4, block_size=c.block_size),
}


def weight_fake_quant(config: QuantConfig, per_tensor: bool = False):
    """The PTQ grid of ``config`` as a function ``W (out, in) -> W'`` (dequantized, W's dtype);
    ``per_tensor``: the matrix viewed as one row, i.e. one scale for all of it."""
    if not getattr(config, "supports_qat", False):
        raise QidlabError(f"{type(config).__name__} is not a weight grid QAT can train through")
    fn = _GRIDS[type(config)](config)
    return partial(_whole_matrix, fn) if per_tensor else fn


def _whole_matrix(fn, w: torch.Tensor) -> torch.Tensor:
    return fn(w.reshape(1, -1)).reshape(w.shape)


def fake_quantize_absmax(x: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Symmetric integer absmax over the last dim (per token) or per ``group_size`` channels:
    scale = max|x| / (2^(bits-1) - 1) (at least 1e-5 / that), codes -2^(bits-1) .. 2^(bits-1) - 1;
    returns the dequantized ``x`` in its dtype. 8 bits: BitNet b1.58's activation quantizer."""
    half = 2 ** (bits - 1)
    g = grids.group_view(x.reshape(-1, x.shape[-1]), group_size)  # (tokens, n_groups, G)
    scale = g.float().abs().amax(-1, keepdim=True).clamp(min=1e-5) / (half - 1)
    zero = torch.full_like(scale, half)
    return grids.dequantize(grids.quantize(g, scale, zero, bits), scale, zero).reshape(x.shape).to(x.dtype)


def _kv_fake_quant(y: torch.Tensor, heads: int, spec: ActSpec) -> torch.Tensor:
    """Round the keys and values in a GPT-NeoX ``query_key_value`` output ``(..., 3 * hidden)``."""
    qkv = y.reshape(*y.shape[:-1], heads, 3, -1)  # (..., heads, [q, k, v], head_size)
    q, k, v = qkv.unbind(-2)
    quant = partial(fake_quantize_absmax, bits=spec.bits, group_size=spec.group_size)
    return torch.stack([q, ste(k, quant), ste(v, quant)], dim=-2).reshape(y.shape)


class QATLinear(nn.Linear):
    """An ``nn.Linear`` whose forward rounds its weight (``qat_weight``), its input (``qat_act``) and
    its output (``qat_out``, keys and values) with the STE; a ``None`` leaves that part alone."""

    qat_weight = None
    qat_act = None
    qat_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.qat_weight is None else ste(self.weight, self.qat_weight)
        if self.qat_act is not None:
            x = ste(x, self.qat_act)
        y = F.linear(x, w, self.bias)
        return y if self.qat_out is None else self.qat_out(y)


def apply_qat(model: nn.Module, spec: QATSpec) -> dict[str, QATLinear]:
    """Make every linear of ``model``'s decoder blocks a ``QATLinear`` rounding as ``spec`` says, in
    place; returns them by name. Shapes the grids cannot cut (a group size that does not divide a
    width) are one ``QidlabError`` before anything changes."""
    linears = select_linears(model, None)
    heads = model.config.num_attention_heads
    _check_shapes(linears, spec, model.config.hidden_size // heads)
    wq = None if spec.weights is None else weight_fake_quant(spec.weights, spec.per_tensor)
    aq = None if spec.activations is None else partial(fake_quantize_absmax, bits=spec.activations.bits,
                                                       group_size=spec.activations.group_size)
    for name, mod in linears.items():
        mod.__class__ = QATLinear
        mod.qat_weight, mod.qat_act = wq, aq
        if spec.kv is not None and name.endswith(KV_MODULE):
            mod.qat_out = partial(_kv_fake_quant, heads=heads, spec=spec.kv)
    return linears


def _check_shapes(linears: dict, spec: QATSpec, head_size: int) -> None:
    group = getattr(spec.weights, "group_size", None)
    for name, mod in linears.items():
        widths = [("weights", mod.in_features, group)]
        if spec.activations:
            widths.append(("activations", mod.in_features, spec.activations.group_size))
        for what, width, g in widths:
            if g is not None and width % g:
                raise QidlabError(f"qat.{what} group_size {g} does not divide the input width {width} of {name}")
    if spec.kv and spec.kv.group_size is not None and head_size % spec.kv.group_size:
        raise QidlabError(f"qat.kv group_size {spec.kv.group_size} does not divide the head size {head_size}")
