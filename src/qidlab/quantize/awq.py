"""AWQ (Lin et al. 2024), fake-quantized, one linear at a time.

Per input channel j, s_j = mean|x_j|^a (normalised by sqrt(max s * min s), as llm-awq does;
``duo_scaling``: s_j = mean|x_j|^a / w_j^(1-a), AutoAWQ's default, w_j = the mean over output
rows of |W_ij| / (absmax of its quantization group)); the layer is quantized as
W' = Q(W * s) / s, where Q is the integer grid of ``grids``. The exponent a is searched on
``n_grid`` points i / n_grid of [0, 1) to minimise the output error ||X W^T - X W'^T||^2 on
calibration inputs X. a = 0 is plain round-to-nearest (without duo scaling), so AWQ never does
worse than RTN on the calibration data.

``clip`` adds AWQ's weight-clipping search (llm-awq's ``auto_clip``, AutoAWQ's ``apply_clip``):
after scaling, each quantization group of W * s is clamped to +-m, m = absmax * (1 - i/20) for
i = 0..9, the i with the least error of the group's partial output sum_k x_k w_k / s_k on (at
most ~512 of) the calibration tokens. Constants and the order of operations follow AutoAWQ 0.2.9
(``awq/quantize/quantizer.py``); tests/test_quantize_crosscheck.py checks the scales and weights
against it. Which linears are clipped is the caller's choice (``quantize_`` skips query/key
projections by name, as both references do).
"""

from __future__ import annotations

import torch

from qidlab.quantize import grids
from qidlab.quantize.config import AWQConfig

CLIP_GRID = 20         # shrink steps of 1/20 of the group's absmax ...
CLIP_MAX_SHRINK = 0.5  # ... down to half of it (steps 0..9)
CLIP_TOKENS = 512      # calibration tokens the clip search samples (every k-th token)
GRAM_TOKENS = 8192     # calibration tokens per float64 slice when forming G = x^T x (memory only)
CLIP_ROWS_PER_CHUNK = 256  # output rows searched at once (memory only: rows are independent)


def awq_scales_search(weight: torch.Tensor, x: torch.Tensor, config: AWQConfig
                      ) -> tuple[torch.Tensor, float]:
    """Best per-input-channel scales ``(in,)`` and their exponent a.

    ``weight``: ``(out, in)``; ``x``: calibration inputs ``(n_tokens, in)``. The output error of a
    candidate W' is mean((x W'^T - x W^T)^2) = sum(dW G * dW) / (n_tokens * out) with dW = W' - W
    and G = x^T x ``(in, in)``, formed once (float64): each grid point then costs out*in^2 instead
    of n_tokens*in*out (65,536 calibration tokens against in = 768: ~85x fewer operations)."""
    W = weight.detach().float()
    x = x.reshape(-1, W.shape[1]).float()
    G = torch.zeros(W.shape[1], W.shape[1], dtype=torch.float64, device=x.device)  # (in, in)
    for chunk in x.split(GRAM_TOKENS):  # float64 a slice at a time: no float64 copy of all of x
        c = chunk.double()
        G.addmm_(c.T, c)
    denom = x.shape[0] * W.shape[0]
    x_mean = x.abs().mean(0)  # (in,)
    w_mean = _weight_mean(W, config.group_size) if config.duo_scaling else None
    errs, cands = [], []
    for i in range(config.n_grid):
        a = i / config.n_grid
        s = candidate_scales(x_mean, w_mean, a)
        dW = (_fake(W * s, config) / s - W).double()
        errs.append(((dW @ G) * dW).sum() / denom)
        cands.append((s, a))
    best = int(torch.argmin(torch.stack(errs)))  # first of equal errors, as a strict < scan; one sync
    return cands[best]


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor | None, a: float) -> torch.Tensor:
    """AWQ's scales ``(in,)`` for exponent ``a``: x_mean^a (``w_mean`` None) or
    x_mean^a / (w_mean^(1-a) + 1e-4), clamped at 1e-4, over sqrt(max * min) (AutoAWQ's formula)."""
    if w_mean is None:
        s = x_mean.pow(a).clamp(min=1e-4)
    else:
        s = (x_mean.pow(a) / (w_mean.pow(1 - a) + 1e-4)).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def _weight_mean(W: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """Per input channel, the mean over output rows of |W| / its group's absmax ``(in,)``."""
    g = grids.group_view(W.abs(), group_size)  # (out, n_groups, G)
    return (g / (g.amax(-1, keepdim=True) + 1e-6)).reshape(W.shape).mean(0)


def awq_clip_search(w_scaled: torch.Tensor, x_scaled: torch.Tensor, config: AWQConfig
                    ) -> torch.Tensor:
    """Clipping bound m ``(out, n_groups, 1)`` per quantization group of ``w_scaled`` (= W * s,
    ``(out, in)``) that minimises the error of the group's partial outputs on ``x_scaled``
    (= X / s, ``(n_tokens, in)``), sampled every ``max(1, n_tokens // 512)``-th token."""
    g = grids.group_view(w_scaled.detach().float(), config.group_size)  # (out, n_groups, G)
    x = x_scaled.reshape(-1, w_scaled.shape[1]).float()
    x = x[:: max(1, x.shape[0] // CLIP_TOKENS)]
    xg = x.reshape(x.shape[0], g.shape[1], g.shape[2])  # (n_tok, n_groups, G)
    step = CLIP_ROWS_PER_CHUNK
    return torch.cat([_clip_rows(g[i:i + step], xg, config) for i in range(0, g.shape[0], step)])


def _clip_rows(g: torch.Tensor, xg: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    """``awq_clip_search`` for some output rows ``g`` ``(rows, n_groups, G)``."""
    ref = torch.einsum("tng,ong->otn", xg, g)  # (rows, n_tok, n_groups)
    absmax = g.abs().amax(-1, keepdim=True)  # (rows, n_groups, 1)
    best_m, best_err = absmax.clone(), torch.full_like(absmax, float("inf"))
    for i in range(int(CLIP_MAX_SHRINK * CLIP_GRID)):
        m = absmax * (1 - i / CLIP_GRID)
        q = _fake_grouped(torch.clamp(g, -m, m), config)
        err = (torch.einsum("tng,ong->otn", xg, q) - ref).pow(2).mean(1)[..., None]
        better = err < best_err  # first of equal errors wins, as in AutoAWQ
        best_err, best_m = torch.where(better, err, best_err), torch.where(better, m, best_m)
    return best_m


def awq_scaled_weight(weight: torch.Tensor, x: torch.Tensor, config: AWQConfig,
                      clip: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 matrix AWQ rounds, ``W * s`` (clipped when ``clip``, default
    ``config.clip``), and the scales ``s`` ``(in,)``."""
    s, _ = awq_scales_search(weight, x, config)
    Ws = weight.detach().float() * s
    if config.clip if clip is None else clip:
        m = awq_clip_search(Ws, x.reshape(-1, Ws.shape[1]).float() / s, config)
        g = grids.group_view(Ws, config.group_size)
        Ws = torch.clamp(g, -m, m).reshape(Ws.shape)
    return Ws, s


def awq_quantize_layer(weight: torch.Tensor, x: torch.Tensor, config: AWQConfig,
                       clip: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(W' in weight's dtype, scales (in,))`` with W' = Q(W * s) / s (W * s clipped
    when ``clip``, default ``config.clip``)."""
    Ws, s = awq_scaled_weight(weight, x, config, clip)
    return (_fake(Ws, config) / s).to(weight.dtype), s


def _fake(W: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    return grids.fake_quantize(W, config.bits, config.group_size, config.symmetric)


def _fake_grouped(g: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    """Round-to-nearest of grouped weights ``(..., G)``, one grid per last-dim row."""
    scale, zero = grids.choose_qparams(g, config.bits, config.symmetric)
    return grids.dequantize(grids.quantize(g, scale, zero, config.bits), scale, zero)
