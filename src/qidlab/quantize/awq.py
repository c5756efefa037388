"""AWQ (Lin et al. 2024), fake-quantized, one linear at a time.

Per input channel j, s_j = mean|x_j|^a (normalised by sqrt(max s * min s), as llm-awq does);
the layer is quantized as W' = Q(W * s) / s, where Q is the integer grid of ``grids``. The
exponent a is searched on ``n_grid`` points i / n_grid of [0, 1) to minimise the output error
||X W^T - X W'^T||^2 on calibration inputs X. a = 0 is plain round-to-nearest, so AWQ never
does worse than RTN on the calibration data. (llm-awq's weight-clipping search is not done.)
"""

from __future__ import annotations

import torch

from qidlab.quantize import grids
from qidlab.quantize.config import AWQConfig


def awq_scales_search(weight: torch.Tensor, x: torch.Tensor, config: AWQConfig
                      ) -> tuple[torch.Tensor, float]:
    """Best per-input-channel scales ``(in,)`` and their exponent a.

    ``weight``: ``(out, in)``; ``x``: calibration inputs ``(n_tokens, in)``."""
    W = weight.detach().float()
    x = x.reshape(-1, W.shape[1]).float()
    ref = x @ W.T  # (n_tokens, out)
    x_mean = x.abs().mean(0).clamp(min=1e-8)  # (in,)
    best = (float("inf"), None, 0.0)
    for i in range(config.n_grid):
        a = i / config.n_grid
        s = x_mean.pow(a)
        s = s / (s.max() * s.min()).sqrt()
        Wq = _fake(W * s, config) / s
        err = (x @ Wq.T - ref).pow(2).mean().item()
        if err < best[0]:
            best = (err, s, a)
    return best[1], best[2]


def awq_quantize_layer(weight: torch.Tensor, x: torch.Tensor, config: AWQConfig
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(W' in weight's dtype, scales (in,))`` with W' = Q(W * s) / s."""
    s, _ = awq_scales_search(weight, x, config)
    Wq = _fake(weight.detach().float() * s, config) / s
    return Wq.to(weight.dtype), s


def _fake(W: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    return grids.fake_quantize(W, config.bits, config.group_size, config.symmetric)
