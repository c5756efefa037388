"""``AWQConfig(backend="autoawq")``: AutoAWQ itself (PyPI ``autoawq``, tested with 0.2.9) searches
the scales and clips; qidlab only writes the resulting weights back (fake quantization).

AutoAWQ runs on a copy of the model, ``quantize(..., export_compatible=True)``: per decoder block
it searches one scale vector s per group of linears that read the same input (q/k/v; gate/up;
its per-architecture table, e.g. GPT-NeoX's attention.dense is not scaled), folds 1/s into the op
before them (a norm, an activation, or the last rows of a previous linear, whose rows are then
divided by s: r below) and, with ``clip``, clips the weights; nothing is rounded yet. Every block
linear of the model then gets the weights that AutoAWQ's quantized model computes with,
rounded by AutoAWQ's own ``pseudo_quantize_tensor``:

    W' = Q(W_awq) * r[:, None] / s[None, :]        (r, s = 1 where AutoAWQ did not scale)

so the model keeps its own modules and parameters (a sweep restores them by ``load_state_dict``)
and computes what AutoAWQ's packed model computes, up to rounding of the folded norms.

On a CPU, AutoAWQ 0.2.9's scale search keeps the weights to restore between candidates as
``v.cpu()``, which there is the weight itself, and the first candidate scales it in place; with
duo scaling that candidate is not all ones and leaks into the result (mit-han-lab/llm-awq#163 is
the same bug). The search here gets copies, as it does on a GPU. docs/crosschecks.md has the rest.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from qidlab.errors import QidlabError
from qidlab.quantize.config import AWQConfig

__all__ = ["autoawq_quantize"]


def autoawq_quantize(model: nn.Module, config: AWQConfig, calibration: torch.Tensor,
                     names: list[str], batch_size: int
                     ) -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """AutoAWQ's weights for the linears ``names`` (those inside the decoder blocks).

    ``calibration``: token ids ``(n_samples, seq_len)``, run ``batch_size`` samples at a time.
    Returns ``{name: (W' float32, {"scale", "zero": (out, n_groups), "input_scale": (in,)})}``
    with W' * input_scale = scale * (codes - zero) on each group; ``model`` is not changed."""
    _check(config)
    _check_clip_shapes(model, config, names)
    quantizer_cls, model_map = _import_autoawq()
    wrapper = model_map.get(getattr(model.config, "model_type", None))
    if wrapper is None:
        raise QidlabError(f"AutoAWQ has no support for model type {model.config.model_type!r}")
    work = copy.deepcopy(model)
    work.config.use_cache = False  # as AutoAWQ's from_pretrained: else blocks append to a KV cache
    found: list[tuple[nn.Module, tuple[nn.Module, ...], torch.Tensor]] = []
    awq_model = wrapper(work, model.config.model_type, False, work.config, None, None)
    awq_model.quantize(None, quant_config=_quant_config(config), calib_data=calibration.tolist(),
                       max_calib_samples=calibration.shape[0], max_calib_seq_len=calibration.shape[1],
                       n_parallel_calib_samples=batch_size, duo_scaling=config.duo_scaling,
                       apply_clip=config.clip, export_compatible=True,
                       quantizer_cls=_recording(quantizer_cls, found))
    rows, cols = _folded_scales(found)
    mods = dict(work.named_modules())
    out = {}
    for name in names:
        lin = mods[name]
        r = rows.get(lin, torch.ones(lin.out_features))
        s = cols.get(lin, torch.ones(lin.in_features))
        out[name] = _effective(awq_model.quantizer, lin.weight.detach(), r, s, config)
    return out


def _check(config: AWQConfig) -> None:
    if config.modules is not None:
        raise QidlabError("backend 'autoawq' quantizes every linear in the decoder blocks: "
                          "leave modules unset")
    if config.group_size is None:
        raise QidlabError("backend 'autoawq' needs a group_size (AutoAWQ's scale search "
                          "works on groups)")
    if config.n_grid != 20:
        raise QidlabError(f"backend 'autoawq' searches 20 exponents (its fixed grid), got n_grid={config.n_grid}")


def _check_clip_shapes(model: nn.Module, config: AWQConfig, names: list[str]) -> None:
    """AutoAWQ's clip search takes output rows 64 (or 256) at a time and asserts that they
    divide; say so before it fails."""
    if not config.clip:
        return
    from qidlab.quantize.model import find_blocks

    prefix, _ = find_blocks(model)
    mods = dict(model.named_modules())
    for name in names:
        inner = name[len(prefix) + 1:].split(".", 1)[-1]  # the name inside its block
        skipped = any(t in inner for t in ("q_", "k_", "query", "key", "Wqkv"))
        if not skipped and mods[name].out_features % 64:
            raise QidlabError(f"{name}: AutoAWQ's clip search needs out_features divisible by "
                              f"64, got {mods[name].out_features} (use clip = false)")


def _import_autoawq():
    try:
        with warnings.catch_warnings():  # its import warns that it is deprecated, at length
            warnings.simplefilter("ignore")
            from awq.models.auto import AWQ_CAUSAL_LM_MODEL_MAP
            from awq.quantize.quantizer import AwqQuantizer
    except ImportError:
        raise QidlabError("backend 'autoawq' needs AutoAWQ: pip install -c constraints.txt "
                          "autoawq (docs/crosschecks.md)") from None
    return AwqQuantizer, AWQ_CAUSAL_LM_MODEL_MAP


def _quant_config(config: AWQConfig) -> dict[str, Any]:
    return {"zero_point": not config.symmetric, "q_group_size": config.group_size,
            "w_bit": config.bits, "version": "gemm"}


def _recording(base: type, found: list) -> type:
    """AutoAWQ's quantizer, recording each (previous op, linears, scales) it folds, and giving
    its scale search copies of the weights to restore (as ``.cpu()`` does on a GPU)."""

    class Recording(base):
        def _search_best_scale(self, module, prev_op, layers, *args, **kwargs):
            out = super()._search_best_scale(module, prev_op, layers, *args, **kwargs)
            found.append((prev_op, tuple(layers), out[2].detach().float().cpu()))
            return out

        def _compute_best_scale(self, x, w_mean, x_mean, module2inspect, *args, **kwargs):
            state_dict = module2inspect.state_dict
            module2inspect.state_dict = lambda *a, **k: {
                n: v.clone() for n, v in state_dict(*a, **k).items()}
            try:
                return super()._compute_best_scale(x, w_mean, x_mean, module2inspect, *args,
                                                   **kwargs)
            finally:
                del module2inspect.state_dict

    return Recording


def _folded_scales(found) -> tuple[dict[nn.Module, torch.Tensor], dict[nn.Module, torch.Tensor]]:
    """Per linear, the factor its output rows were divided by (r, when it was the previous op
    of a scaled group) and the one its input columns were multiplied by (s)."""
    rows: dict[nn.Module, torch.Tensor] = {}
    cols: dict[nn.Module, torch.Tensor] = {}
    for prev, layers, s in found:
        for lin in layers:
            cols[lin] = s
        if isinstance(prev, nn.Linear):  # AutoAWQ's scale_fc_fc(s): its last len(s) rows / s
            r = rows.get(prev, torch.ones(prev.out_features)).clone()
            r[-s.numel():] *= s
            rows[prev] = r
    return rows, cols


def _effective(quantizer, w: torch.Tensor, r: torch.Tensor, s: torch.Tensor, config: AWQConfig
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """W' = Q(W_awq) r / s and its grid, by AutoAWQ's ``pseudo_quantize_tensor``."""
    q, scale, zero = quantizer.pseudo_quantize_tensor(w.float().cpu())
    new = q * r[:, None] / s[None, :]
    if zero is None:  # symmetric: codes -2^(b-1) .. 2^(b-1) - 1, i.e. zero point 2^(b-1)
        zero = torch.full_like(scale, 2 ** (config.bits - 1))
    qparams = {"scale": scale.float() * r[:, None], "zero": zero.float(), "input_scale": s}
    return new, qparams
