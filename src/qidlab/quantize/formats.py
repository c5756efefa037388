"""Quantized checkpoints in the field's formats: ``save_quantized(model, report, folder, fmt)``.

``fake`` (qidlab's own, the default): the dequantized weights as an ordinary float checkpoint, plus
``quantized-codes.safetensors`` (int8 codes, float32 scales, zero points) for the integer methods.

``compressed-tensors``: llm-compressor's ``pack-quantized`` layout, written by compressed-tensors' own
``apply_quantization_config`` + ``ModelCompressor`` (what llm-compressor calls to save): per quantized
linear ``weight_packed`` (int32 words of 32/bits codes), ``weight_scale``, ``weight_shape``, and
``weight_zero_point`` (packed) when asymmetric; ``quantization_config`` with ``quant_method:
compressed-tensors`` in ``config.json``. transformers (with compressed-tensors installed) and vLLM
load it as a quantized model. RTN and GPTQ at 2..8 bits, per channel or any group size dividing the
input width. AWQ's per-input-channel scales have no place in compressed-tensors, so they are folded
into the layer that produces the linear's input (a norm, or a linear whose output rows are the
input channels): exact, as the rounded matrix Q(W*s) is stored and the producer's output divided
by s. A linear whose producer cannot take them (an activation function sits between, or the
producer also feeds a linear with other scales) is refused, naming it.

``bitsandbytes``: NF4/FP4 in bitsandbytes' own serialisation, as transformers saves a model loaded
with ``BitsAndBytesConfig(load_in_4bit=True)``: per quantized linear the packed uint8 codes
(``weight``), float32 ``weight.absmax`` (one per block), ``weight.quant_map`` and
``weight.quant_state.bitsandbytes__<type>`` (shape, blocksize, dtype); ``quantization_config`` with
``quant_method: bitsandbytes``, ``load_in_4bit``, ``bnb_4bit_quant_type``, compute dtype = the model's,
no double quantization (qidlab's absmax are not quantized), ``llm_int8_skip_modules`` = every linear
left unquantized. Codes come from bitsandbytes' own ``quantize_4bit`` of the fake-quantized weights,
and its ``dequantize_4bit`` is checked to give them back.

The written folder's logits equal the fake-quantized model's (tests/test_interop_formats.py; for
bitsandbytes on a CPU with AVX512-BF16, only with its bf16 CPU kernel off, as
``qidlab.checkpoints.load_checkpoint`` loads it: ``bnb_exact_cpu``).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from qidlab.errors import QidlabError

FORMATS = ("fake", "compressed-tensors", "bitsandbytes")
CT_METHODS = ("rtn", "gptq", "awq")  # the integer grids compressed-tensors' pack-quantized stores
BNB_METHODS = ("nf4", "fp4")  # bitsandbytes' 4-bit codebooks (its quant_type)
# (this module imports torch only inside its functions: study files check formats without it)

#: Per model type: (regex of a quantized linear, template of the module producing its input).
#: ``{b}`` is the decoder block's prefix. Producers not listed: the scales cannot be folded.
_PRODUCERS = {
    "gpt_neox": ((r"attention\.query_key_value", "input_layernorm"),
                 (r"mlp\.dense_h_to_4h", "post_attention_layernorm")),
    "llama": ((r"self_attn\.[qkv]_proj", "input_layernorm"), (r"self_attn\.o_proj", "self_attn.v_proj"),
              (r"mlp\.(gate|up)_proj", "post_attention_layernorm"), (r"mlp\.down_proj", "mlp.up_proj")),
}
_PRODUCERS["qwen2"] = _PRODUCERS["mistral"] = _PRODUCERS["qwen3"] = _PRODUCERS["llama"]


def check_format(config, fmt: str) -> None:
    """One clear error when ``config``'s quantized weights cannot be stored as ``fmt``."""
    if fmt not in FORMATS:
        raise QidlabError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "compressed-tensors" and config.method not in CT_METHODS:
        raise QidlabError(f"format compressed-tensors stores integer grids ({', '.join(CT_METHODS)}), "
                          f"not '{config.method}'; use format fake")
    if fmt == "bitsandbytes" and config.method not in BNB_METHODS:
        raise QidlabError(f"format bitsandbytes stores its 4-bit codebooks ({', '.join(BNB_METHODS)}), "
                          f"not '{config.method}'; use format fake")


def save_quantized(model, report, folder: Path, fmt: str = "fake") -> None:
    """Write ``model`` (quantized in place by ``quantize_``, whose ``report`` is given) into the
    existing empty ``folder`` as ``fmt``. The model is not changed (compressed-tensors works on a copy).
    Tokenizer and provenance are the caller's."""
    check_format(report.config, fmt)
    if fmt == "fake":
        _save_fake(model, report, folder)
    elif fmt == "bitsandbytes":
        save_bitsandbytes(model, report, folder)
    else:
        save_compressed_tensors(model, report, folder)


def _save_fake(model, report, folder: Path) -> None:
    from safetensors.torch import save_file

    from qidlab.quantize.api import quantized_state

    model.save_pretrained(folder)
    if report.config.integer_codes:
        state = quantized_state(model, report)
        codes = {k: v.contiguous() for k, v in state.items() if ".weight_" in k}
        save_file(codes, str(folder / "quantized-codes.safetensors"), metadata={"config": report.config.key()})


def save_compressed_tensors(model, report, folder: Path) -> None:
    """compressed-tensors ``pack-quantized`` of a model quantized by RTN, GPTQ or AWQ (see module doc)."""
    try:
        from compressed_tensors.compressors import ModelCompressor
        from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                     QuantizationStatus, apply_quantization_config)
    except ImportError:
        raise QidlabError("format compressed-tensors needs compressed-tensors: pip install 'qidlab[interop]'") from None
    cfg = report.config
    check_format(cfg, "compressed-tensors")
    import torch

    work = _host_copy(model)
    mods = dict(work.named_modules())
    grid = _grid_weights(mods, report)  # {name: (weight on the stored grid, scale, zero)}
    if cfg.method == "awq":
        _fold_awq(work, mods, report)
    args = QuantizationArgs(num_bits=cfg.bits, type="int", symmetric=cfg.symmetric,
                            strategy="channel" if cfg.group_size is None else "group", group_size=cfg.group_size)
    targets = ["re:^(" + "|".join(re.escape(n) for n in report.qparams) + ")$"]
    qconfig = QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=targets, weights=args)},
                                 format="pack-quantized", quantization_status="frozen")
    with torch.no_grad():
        for name, (w, _, _) in grid.items():  # float32, so that compressed-tensors' own rounding gives
            mods[name].weight = torch.nn.Parameter(w.float(), requires_grad=False)  # qidlab's codes exactly
        apply_quantization_config(work, qconfig, show_progress=False)  # float32 scales, like the weights
        shift = 2 ** (cfg.bits - 1)  # qidlab's codes are 0..2^b-1; compressed-tensors' are signed
        for name, (_, scale, zero) in grid.items():
            mod = mods[name]
            mod.weight_scale.copy_(scale.reshape(mod.weight_scale.shape))
            if not cfg.symmetric:
                mod.weight_zero_point.copy_((zero - shift).reshape(mod.weight_zero_point.shape))
            mod.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(work, quantization_format="pack-quantized")
    compressor.compress_model(work)
    work.save_pretrained(folder)
    compressor.update_config(str(folder))
    del work


def save_bitsandbytes(model, report, folder: Path) -> None:
    """bitsandbytes' 4-bit serialisation of a model quantized by NF4 or FP4 (see module doc)."""
    try:
        import bitsandbytes as bnb
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise QidlabError("format bitsandbytes needs bitsandbytes: pip install -c constraints.txt 'qidlab[interop]'") from None
    cfg = report.config
    check_format(cfg, "bitsandbytes")
    import torch

    work = _host_copy(model)
    mods = dict(work.named_modules())
    dtype = next(work.parameters()).dtype
    for rec in report.modules:
        _to_linear4bit(bnb, mods, rec.name, cfg, dtype)
    skip = [n for n, m in work.named_modules() if isinstance(m, torch.nn.Linear) and not isinstance(m, bnb.nn.Linear4bit)]
    work.config.quantization_config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=cfg.method, bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=False, bnb_4bit_quant_storage=torch.uint8, llm_int8_skip_modules=skip)
    work.save_pretrained(folder)
    del work


def _to_linear4bit(bnb, mods: dict, name: str, cfg, dtype) -> None:
    """Replace linear ``name`` (its weights fake-quantized to the codebook) by bitsandbytes'
    ``Linear4bit``, quantized by bitsandbytes itself; check its dequantized weights are qidlab's."""
    import torch

    old = mods[name]
    if old.in_features % cfg.block_size:
        raise QidlabError(f"{name}: block size {cfg.block_size} does not divide its input width {old.in_features}; "
                          f"bitsandbytes' CPU dequantization (0.50) decodes blocks that cross rows wrongly: "
                          f"use a block size dividing {old.in_features}")
    w = old.weight.detach().float()
    new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None, compute_dtype=dtype,
                            compress_statistics=False, quant_type=cfg.method, quant_storage=torch.uint8, device="meta")
    new.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, blocksize=cfg.block_size, compress_statistics=False,
                                   quant_type=cfg.method, quant_storage=torch.uint8, module=new).to("cpu")
    if old.bias is not None:
        new.bias = torch.nn.Parameter(old.bias.detach().clone(), requires_grad=False)
    back = bnb.functional.dequantize_4bit(new.weight.data, new.weight.quant_state).float().reshape(w.shape)
    # float32: exact up to rounding; a bf16/fp16 model's weights are q*absmax rounded to its dtype, and
    # bitsandbytes' absmax is then that rounded block maximum: within 2 of the dtype's spacings
    rel = 1e-6 if old.weight.dtype == torch.float32 else 2 * torch.finfo(old.weight.dtype).eps
    if float((back - w).abs().max()) > rel * float(w.abs().max()):
        raise QidlabError(f"{name}: its weights are not on bitsandbytes' {cfg.method} grid with block size "
                          f"{cfg.block_size} (bitsandbytes' codes would change them)")
    parent, _, leaf = name.rpartition(".")
    setattr(mods[parent] if parent else mods[""], leaf, new)
    mods[name] = new


def _host_copy(model):
    """A copy of ``model`` in host memory (a GPU sweep's model is never duplicated on the device);
    tied tensors stay tied."""
    import torch

    memo: dict = {}
    for p in model.parameters():
        if id(p) not in memo:
            memo[id(p)] = torch.nn.Parameter(p.detach().to("cpu", copy=True), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo.setdefault(id(b), b.detach().to("cpu", copy=True))
    return copy.deepcopy(model, memo)


def _grid_weights(mods: dict, report) -> dict:
    """Per quantized linear: the matrix on its integer grid (AWQ: Q(W*s), before dividing by s), its
    scale and zero ``(out, n_groups)``; checked to reproduce the fake-quantized weights."""
    from qidlab.quantize import grids

    cfg = report.config
    out = {}
    for name, qp in report.qparams.items():
        w = mods[name].weight.detach().float()
        s_in = qp.get("input_scale")
        if s_in is not None:
            w = w * s_in.to(w.device)
        scale, zero = qp["scale"].to(w.device).float(), qp["zero"].to(w.device).float()
        g = w.reshape(w.shape[0], scale.shape[1], -1)
        codes = grids.quantize(g, scale[..., None], zero[..., None], cfg.bits)
        on_grid = grids.dequantize(codes, scale[..., None], zero[..., None]).reshape(w.shape)
        back = on_grid / s_in.to(w.device) if s_in is not None else on_grid
        have = mods[name].weight.detach()
        tol = 1e-5 * float(scale.abs().max())  # float32 rounding; a bf16 model compares in bf16
        if float((back.to(have.dtype).float() - have.float()).abs().max()) > tol:
            raise QidlabError(f"{name}: its weights are not on the grid of its scales and zero points "
                              f"(cannot be stored as integer codes)")
        out[name] = (on_grid, scale, zero)
    return out


def _fold_awq(model, mods: dict, report) -> None:
    """Divide the output of each AWQ linear's input producer by the linear's input scales s, so that
    the stored Q(W*s) gives the same outputs; refuse, naming the linear, where that is impossible."""
    import torch
    from torch import nn

    mtype = getattr(getattr(model, "config", None), "model_type", None)
    rules = _PRODUCERS.get(mtype, ())
    linears = [n for n, m in mods.items() if isinstance(m, nn.Linear)]
    prod_of = {n: _producer(n, rules, mods, model) for n in linears}
    for name in report.qparams:
        prod = prod_of[name]
        if prod is None:
            raise QidlabError(f"{name}: AWQ's input scales cannot be folded into the layer before it (an "
                              f"activation or attention sits between; model type {mtype}): compressed-tensors "
                              f"has no per-input-channel scale. Quantize fewer modules, or use `format` fake",
                              params=("format",))
        if prod in report.qparams:
            raise QidlabError(f"{name}: AWQ's input scales cannot be folded into {prod}, which is quantized "
                              f"itself (its rows would leave their grid)")
    for prod in dict.fromkeys(prod_of[n] for n in report.qparams):
        feeds = [n for n in linears if prod_of[n] == prod]
        s = report.qparams[feeds[0]]["input_scale"] if feeds[0] in report.qparams else None
        others = [n for n in feeds if n not in report.qparams or s is None
                  or not torch.equal(report.qparams[n]["input_scale"], s)]
        if others:
            raise QidlabError(f"{feeds[0]}: AWQ's input scales cannot be folded into {prod}: it also feeds "
                              f"{', '.join(others)} with other (or no) scales; qidlab's AWQ scales each linear alone")
        _divide_output(mods[prod], s)


def _producer(name: str, rules, mods: dict, model) -> str | None:
    """The module whose output is linear ``name``'s input, by the model type's rules; None if none."""
    for pattern, template in rules:
        m = re.match(r"^(.+)\." + pattern + "$", name)
        if m:
            prod = m.group(1) + "." + template
            if prod not in mods or (template.endswith("v_proj") and _gqa(model)):
                return None  # GQA: one v channel feeds several heads' o_proj inputs
            return prod
    return None


def _gqa(model) -> bool:
    c = model.config
    kv = getattr(c, "num_key_value_heads", None)
    return kv is not None and kv != c.num_attention_heads


def _divide_output(mod, s) -> None:
    """Output channel j of ``mod`` (a norm's weight and bias, or a linear's rows and bias) divided by s_j."""
    import torch

    s = s.to(mod.weight.device).float()
    div = s[:, None] if mod.weight.dim() == 2 else s
    with torch.no_grad():
        mod.weight.copy_((mod.weight.float() / div).to(mod.weight.dtype))
        if getattr(mod, "bias", None) is not None:
            mod.bias.copy_((mod.bias.float() / s).to(mod.bias.dtype))
