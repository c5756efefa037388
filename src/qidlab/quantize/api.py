"""``quantize_(model, config, calibration)``: weight-only fake quantization, in place.

The method is chosen by the type of ``config``. Weights are replaced by their dequantized values
(in the weight's dtype), so any bit width can be scored by the ordinary forward pass.
``quantized_state`` exports integer codes and per-group scales for the integer methods.
"""

from __future__ import annotations

import copy
import re
import tempfile

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from qidlab.errors import QidlabError
from qidlab.quantize import grids
from qidlab.quantize.awq import awq_scaled_weight
from qidlab.quantize.config import (METHODS, AWQConfig, GPTQConfig, QuantConfig, RTNConfig, get_method,
                                    registered_methods)
from qidlab.quantize.gptq import (block_pass, collect_hessians, gptq_quantize_layer,
                                  gptq_quantize_layer_bits)
from qidlab.quantize.model import (batches, capture_block_inputs, check_calibration,
                                   find_blocks, linears_in_order, model_device, select_linears)

__all__ = ["quantize_", "QuantizeReport", "ModuleReport", "quantized_state", "dequantize_state"]


@dataclass
class ModuleReport:
    """One quantized linear: full name, weight shape ``(out, in)``, and the relative weight
    error ||W - W'||_F / ||W||_F."""

    name: str
    shape: tuple[int, int]
    rel_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "rel_error": self.rel_error}


@dataclass
class QuantizeReport:
    """What ``quantize_`` did. ``qparams`` (not serialised) holds, for integer methods, each
    module's float32 ``scale`` and ``zero`` ``(out, n_groups)`` (and AWQ's input scales)."""

    config: QuantConfig
    modules: list[ModuleReport] = field(default_factory=list)
    n_calibration_tokens: int | None = None
    qparams: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def replace(self, name: str, module: nn.Linear, new: torch.Tensor, **qparams: torch.Tensor) -> None:
        """Write ``new`` into ``module.weight`` (linear ``name``) and record its relative error and
        any grid tensors (``scale``, ``zero``): what a quantizer, built-in or plug-in, calls per linear."""
        _replace(self, name, module, new, **qparams)

    @property
    def mean_rel_error(self) -> float:
        return sum(m.rel_error for m in self.modules) / max(len(self.modules), 1)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.config.method, "config": self.config.to_dict(),
                "key": self.config.key(), "columns": self.config.columns(),
                "n_calibration_tokens": self.n_calibration_tokens,
                "mean_rel_error": self.mean_rel_error,
                "modules": [m.to_dict() for m in self.modules]}


@torch.no_grad()
def quantize_(model: nn.Module, config: QuantConfig, calibration: torch.Tensor | None = None, *,
              hessians: dict[str, torch.Tensor] | None = None, batch_size: int = 8
              ) -> QuantizeReport:
    """Quantize ``model``'s linears in place as ``config`` says; returns a ``QuantizeReport``.

    ``calibration``: token ids ``(n_samples, seq_len)``, required by GPTQ and AWQ, run in
    batches of ``batch_size`` samples. ``hessians``: precomputed ``collect_hessians`` output
    for ``GPTQConfig(shared_hessian=True)`` (then no calibration pass is needed).
    """
    handler = _quantizer(config)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise QidlabError(f"batch_size must be a positive integer, got {batch_size!r}")
    if hessians is not None and not (isinstance(config, GPTQConfig) and config.shared_hessian):
        raise QidlabError("hessians= is only used by GPTQConfig(shared_hessian=True)")
    _check_shapes(model, config)  # fail before any weight changes
    report = QuantizeReport(config)
    was_training = model.training
    model.eval()
    try:
        handler(model, config, calibration, report, hessians=hessians, batch_size=batch_size)
    finally:
        model.train(was_training)
    return report


# ---- helpers -----------------------------------------------------------------------------


def _check_shapes(model: nn.Module, config: QuantConfig) -> None:
    group = getattr(config, "group_size", None)
    for name, mod in select_linears(model, config.modules).items():
        if group is not None:
            _with_layer_name(name, grids.group_view, mod.weight.detach()[:1], group)


def _replace(report: QuantizeReport, name: str, module: nn.Linear, new: torch.Tensor,
             **qparams: torch.Tensor) -> None:
    """Write ``new`` into ``module.weight`` and record the error and grid parameters."""
    w = module.weight
    err = (w.float() - new.float()).norm() / w.float().norm().clamp(min=1e-30)
    w.copy_(new.to(w.dtype))
    report.modules.append(ModuleReport(name, tuple(w.shape), float(err)))
    if qparams:
        report.qparams[name] = {k: v.detach().cpu() for k, v in qparams.items()}


def _with_layer_name(name: str, fn: Callable, *args):
    try:
        return fn(*args)
    except QidlabError as e:
        raise QidlabError(f"{name}: {e}") from None


def _weight_only(fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict]]) -> Callable:
    """Handler for methods that need no calibration: ``fn(W) -> (W', qparams)`` per linear."""
    def handler(model, config, calibration, report, **_):
        for name, mod in select_linears(model, config.modules).items():
            new, qp = _with_layer_name(name, fn, config, mod.weight)
            _replace(report, name, mod, new, **qp)
    return handler


def _rtn(config: RTNConfig, w: torch.Tensor):
    g = grids.group_view(w, config.group_size)
    s, z = grids.choose_qparams(g, config.bits, config.symmetric)
    new = grids.dequantize(grids.quantize(g, s, z, config.bits), s, z).reshape(w.shape)
    return new, {"scale": s[..., 0], "zero": z[..., 0]}


def _block_of(blocks: nn.ModuleList, linears: dict[str, nn.Linear]) -> list[dict[str, nn.Linear]]:
    """Split the selected linears by decoder block (index i) ; the rest go in ``[-1]``."""
    out: list[dict[str, nn.Linear]] = [{} for _ in range(len(blocks) + 1)]
    where = {id(m): i for i, b in enumerate(blocks) for m in b.modules()}
    for n, m in linears.items():
        out[where.get(id(m), -1)][n] = m
    return out


def _prepare(model, config, calibration, report, batch_size):
    calibration = check_calibration(calibration, config.method)
    report.n_calibration_tokens = int(calibration.numel())
    _, blocks = find_blocks(model)
    linears = select_linears(model, config.modules)
    inputs = capture_block_inputs(model, blocks, calibration, batch_size)
    return calibration, blocks, linears, inputs


# ---- GPTQ --------------------------------------------------------------------------------


def _gptq(model, config: GPTQConfig, calibration, report, *, hessians, batch_size):
    if config.backend == "llmcompressor":
        return _gptq_llmcompressor(model, config, calibration, report)
    if config.shared_hessian:
        if hessians is None:
            calibration = check_calibration(calibration, "gptq")
            report.n_calibration_tokens = int(calibration.numel())
            hessians = collect_hessians(model, calibration, config.modules, batch_size)
        for name, mod in select_linears(model, config.modules).items():
            if name not in hessians:
                raise QidlabError(f"no Hessian for {name} in hessians= (collect_hessians with "
                                  "the same modules)")
            _gptq_one(report, name, mod, hessians[name], config)
        return
    calibration, blocks, linears, inputs = _prepare(model, config, calibration, report, batch_size)
    per_block = _block_of(blocks, linears)
    for block, mine in zip(blocks, per_block):
        if mine:
            names = {m: n for n, m in mine.items()}
            order = (linears_in_order(block, names, inputs) if config.true_sequential
                     else [list(mine)])
            for group in order:
                acc = block_pass(block, {n: mine[n] for n in group}, inputs)[0]  # outputs dropped at once
                for n in group:
                    _gptq_one(report, n, mine[n], acc[n].H if acc[n].n else None, config)
        inputs = inputs.run(block)  # outputs of the quantized block feed the next one
    if per_block[-1]:  # linears outside the blocks (e.g. lm_head by pattern): full passes
        rest = per_block[-1]
        H = collect_hessians(model, calibration, tuple(rest), batch_size)
        for n, m in rest.items():
            _gptq_one(report, n, m, H[n], config)


def _gptq_llmcompressor(model, config: GPTQConfig, calibration, report) -> None:
    """GPTQ by llm-compressor itself: ``oneshot`` with a ``GPTQModifier`` of the same grid on a copy
    of the model (llm-compressor attaches its own state to the modules it quantizes), then its
    fake-quantized weights (it compresses only on save) and grids copied into ``model``."""
    try:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier
    except ImportError:
        raise QidlabError("backend 'llmcompressor' needs llm-compressor (pip install llmcompressor; "
                          "it pins its own transformers version)") from None
    from torch.utils.data import DataLoader

    calibration = check_calibration(calibration, "gptq")
    report.n_calibration_tokens = int(calibration.numel())
    linears = select_linears(model, config.modules)
    weights = {"num_bits": config.bits, "type": "int", "symmetric": config.symmetric,
               "strategy": "channel" if config.group_size is None else "group", "group_size": config.group_size}
    targets = ["re:^" + re.escape(name) + "$" for name in linears]
    recipe = GPTQModifier(config_groups={"qidlab": {"targets": targets, "weights": weights}},
                          actorder="static" if config.act_order else None, dampening_frac=config.damp,
                          block_size=config.block_size)
    work = copy.deepcopy(model)
    rows = calibration.to(model_device(model))
    loader = DataLoader([{"input_ids": r, "attention_mask": torch.ones_like(r)} for r in rows], batch_size=1)
    with tempfile.TemporaryDirectory() as where, torch.enable_grad():  # oneshot sets its own grad mode
        work.config.save_pretrained(where)  # oneshot re-reads the config from config.name_or_path
        work.config._name_or_path = where
        oneshot(model=work, dataset=loader, recipe=recipe, processor=_placeholder_tokenizer())
    for name, mod in linears.items():
        done = work.get_submodule(name)
        grid = {k: getattr(done, attr) for k, attr in (("scale", "weight_scale"), ("zero", "weight_zero_point"))
                if isinstance(getattr(done, attr, None), torch.Tensor)}
        _replace(report, name, mod, done.weight.detach(), **grid)
    del work


def _placeholder_tokenizer():
    """oneshot insists on a processor when given data, but never uses it for a ready DataLoader of
    token ids; quantize_ has only the model, so a one-word tokenizer stands in."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))


@torch.no_grad()
def gptq_shared_weights(model: nn.Module, config: GPTQConfig, bits, hessians: dict[str, torch.Tensor]
                        ) -> dict[int, dict[str, torch.Tensor]]:
    """Shared-Hessian GPTQ of ``model``'s linears at every bit width of ``bits`` in one column pass
    per layer (``gptq_quantize_layer_bits``): ``{bits: {linear name: dequantized weight}}``, in the
    model's dtype and device. The model is not changed; ``config.bits`` is ignored. Each entry
    equals what ``quantize_(model, replace(config, bits=b), hessians=hessians)`` writes, up to float
    rounding of batched matrix products; the sweep uses it for the sibling bit widths of a study."""
    if not (isinstance(config, GPTQConfig) and config.shared_hessian):
        raise QidlabError("gptq_shared_weights needs a GPTQConfig with shared_hessian=True")
    bits = [int(b) for b in bits]
    _check_shapes(model, config)
    out: dict[int, dict[str, torch.Tensor]] = {b: {} for b in bits}
    for name, mod in select_linears(model, config.modules).items():
        if name not in hessians:
            raise QidlabError(f"no Hessian for {name} in hessians= (collect_hessians with the same modules)")
        results = _with_layer_name(name, gptq_quantize_layer_bits, mod.weight, hessians[name], config, bits)
        for b, (q, _s, _z) in zip(bits, results):
            out[b][name] = q
    return out


def _gptq_one(report, name, mod, H, config):
    if H is None:  # never called on calibration data: plain round-to-nearest
        H = torch.eye(mod.in_features, device=mod.weight.device)
    new, s, z = _with_layer_name(name, gptq_quantize_layer, mod.weight, H, config)
    _replace(report, name, mod, new, scale=s, zero=z)


# ---- AWQ ---------------------------------------------------------------------------------


def _awq(model, config: AWQConfig, calibration, report, *, batch_size, **_):
    if config.backend == "autoawq":
        return _autoawq(model, config, calibration, report, batch_size)
    calibration, blocks, linears, inputs = _prepare(model, config, calibration, report, batch_size)
    per_block = _block_of(blocks, linears)
    for block, mine in zip(blocks, per_block):
        xs = {n: [] for n in mine}
        handles = [m.register_forward_hook(_recorder(xs[n])) for n, m in mine.items()]
        try:
            outputs = inputs.run(block)  # unquantized block, as AWQ: activations stay 16-bit
        finally:
            for h in handles:
                h.remove()
        for n, m in mine.items():
            _awq_one(report, n, m, xs.pop(n), config)
        inputs = outputs
    rest = per_block[-1]
    if rest:
        xs = {n: [] for n in rest}
        handles = [m.register_forward_hook(_recorder(xs[n])) for n, m in rest.items()]
        dev = model_device(model)
        try:
            for ids in batches(calibration, batch_size):
                model(input_ids=ids.to(dev), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        for n, m in rest.items():
            _awq_one(report, n, m, xs.pop(n), config)


def _autoawq(model, config: AWQConfig, calibration, report, batch_size):
    from qidlab.quantize.autoawq import autoawq_quantize

    calibration = check_calibration(calibration, config.method)
    report.n_calibration_tokens = int(calibration.numel())
    linears = select_linears(model, None)
    done = autoawq_quantize(model, config, calibration, list(linears), batch_size)
    for name, (new, qparams) in done.items():
        _replace(report, name, linears[name], new, **qparams)


def _recorder(store: list) -> Callable:
    def fn(_mod, args, _out):
        store.append(args[0].detach().reshape(-1, args[0].shape[-1]))
    return fn


def _awq_one(report, name, mod, xs, config):
    if not xs:
        x = torch.ones(1, mod.in_features, device=mod.weight.device)
    else:
        x = torch.cat(xs)
    clip = config.clip and not _is_query_key(name)
    ws, s = _with_layer_name(name, awq_scaled_weight, mod.weight, x, config, clip)
    g = grids.group_view(ws, config.group_size)  # the matrix AWQ rounds, by group
    sc, z = grids.choose_qparams(g, config.bits, config.symmetric)
    new = grids.dequantize(grids.quantize(g, sc, z, config.bits), sc, z).reshape(ws.shape) / s
    _replace(report, name, mod, new, scale=sc[..., 0], zero=z[..., 0], input_scale=s)


def _is_query_key(name: str) -> bool:
    """Linears AWQ's clip search leaves alone (their error passes through q k^T): llm-awq's and
    AutoAWQ's name test, on the last part of the name."""
    leaf = name.rsplit(".", 1)[-1]
    return any(t in leaf for t in ("q_", "k_", "query", "key", "Wqkv"))


def _codebook4(config, w: torch.Tensor, ours: Callable) -> torch.Tensor:
    """NF4/FP4 fake quantization by qidlab's grids or by bitsandbytes itself (``backend``)."""
    if config.backend == "qidlab":
        return ours(w, config.block_size)
    try:
        import bitsandbytes.functional as bnb
    except ImportError:
        raise QidlabError("backend 'bitsandbytes' needs bitsandbytes: pip install -c constraints.txt "
                          "bitsandbytes") from None
    packed, state = bnb.quantize_4bit(w.contiguous(), blocksize=config.block_size, quant_type=config.method)
    return bnb.dequantize_4bit(packed, state).reshape(w.shape).to(w.dtype)


# the built-in quantizers, registered by name in qidlab.quantize.config (register_method)
_quantize_rtn = _weight_only(_rtn)
_quantize_gptq = _gptq
_quantize_awq = _awq
_quantize_nf4 = _weight_only(lambda c, w: (_codebook4(c, w, grids.fake_quantize_nf4), {}))
_quantize_fp4 = _weight_only(lambda c, w: (_codebook4(c, w, grids.fake_quantize_fp4), {}))
_quantize_fp = _weight_only(lambda c, w: (grids.fake_quantize_fp(w, c.exp_bits, c.man_bits, c.block_size), {}))
_quantize_ternary = _weight_only(lambda c, w: (grids.fake_quantize_ternary(w, c.group_size), {}))


def _quantizer(config) -> Callable:
    """The registered quantizer of ``config``'s method (a built-in or a plug-in)."""
    if not isinstance(config, QuantConfig) or not config.rounds_weights:
        known = ", ".join(m.config_class.__name__ for m in registered_methods().values())
        raise QidlabError(f"quantize_ needs a quantization config (one of {known}), got {type(config).__name__}")
    method = get_method(config.method)
    if method.config_class is not type(config):
        raise QidlabError(f"method {config.method!r} is registered with {method.config_class.__name__}, "
                          f"not {type(config).__name__}")
    return method.quantizer()


# ---- export ------------------------------------------------------------------------------


def quantized_state(model: nn.Module, report: QuantizeReport) -> dict[str, torch.Tensor]:
    """Integer codes and grids of a model quantized by ``quantize_`` (RTN, GPTQ, AWQ), for
    saving with safetensors. For each quantized linear ``name``:

    - ``name.weight_codes``: int8 ``(out, in)``, the code minus 2^(bits-1);
    - ``name.weight_scales``: float32 ``(out, n_groups)``;
    - ``name.weight_zeros``: int8 ``(out, n_groups)``, the zero point minus 2^(bits-1);
    - AWQ also ``name.weight_input_scales``: float32 ``(in,)``;

    so that ``W'[:, group g] = scales[:, g] * (codes - zeros[:, g]) / input_scales``. Every
    other entry of ``model.state_dict()`` is included unchanged (on CPU).
    """
    cfg = report.config
    if not cfg.integer_codes:
        *most, last = [m for m, c in METHODS.items() if c.integer_codes]
        raise QidlabError(f"integer codes exist for {', '.join(most)} and {last}, not '{cfg.method}'")
    shift = 2 ** (cfg.bits - 1)
    mods = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for name, qp in report.qparams.items():
        w = mods[name].weight.detach().float().cpu()
        if "input_scale" in qp:
            w = w * qp["input_scale"]
        g = qp["scale"].shape[1]
        grouped = w.reshape(w.shape[0], g, -1)  # (out, n_groups, G)
        codes = grids.quantize(grouped, qp["scale"][..., None], qp["zero"][..., None], cfg.bits)
        out[f"{name}.weight_codes"] = (codes.to(torch.int16) - shift).to(torch.int8).reshape(w.shape)
        out[f"{name}.weight_scales"] = qp["scale"].float().contiguous()
        out[f"{name}.weight_zeros"] = (qp["zero"] - shift).to(torch.int8)
        if "input_scale" in qp:
            out[f"{name}.weight_input_scales"] = qp["input_scale"].float().contiguous()
    for k, v in model.state_dict().items():
        if not (k.endswith(".weight") and k[: -len(".weight")] in report.qparams):
            out[k] = v.detach().cpu().contiguous()
    return out


def dequantize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``quantized_state``: ``name.weight`` (float32) for every set of codes; every
    other entry unchanged."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith(".weight_codes"):
            base = k[: -len("_codes")]
            s, z = state[base + "_scales"], state[base + "_zeros"]
            grouped = v.reshape(v.shape[0], s.shape[1], -1)
            w = grids.dequantize(grouped, s[..., None], z[..., None].float()).reshape(v.shape)
            if base + "_input_scales" in state:
                w = w / state[base + "_input_scales"]
            out[base] = w
        elif not k.endswith(("_scales", "_zeros")):
            out[k] = v
    return out
