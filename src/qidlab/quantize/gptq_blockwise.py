"""Shared-Hessian GPTQ one decoder block at a time, and the 16-bit weights kept in host memory.

``collect_hessians`` keeps every layer's float32 Hessian on the device at once (104 GiB at
Pythia-6.9B with a second GPU copy of the weights: issue 14). ``gptq_shared_blockwise`` runs the
calibration windows through the decoder blocks one at a time (the GPTQ reference code's
sequential calibration, ``capture_block_inputs``), with the 16-bit weights throughout, so every
layer's Hessian is the one ``collect_hessians`` gives, up to float summation order. After a
block's pass it quantizes that block's linears at every requested bit width in one column pass
(``gptq.gptq_layer``), moves the dequantized weights to host memory (pinned when they come from
CUDA, packed by ``PinnedArena``) and frees the block's Hessians before the next block. Peak
device memory: the model, one block's Hessians and GPTQ's work on its largest linear, and the
calibration activations entering and leaving one block.

``snapshot_weights`` / ``restore_weights`` keep the 16-bit weights of the linears (the only
tensors a quantization method changes) in host memory instead of a second device copy.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
from torch import nn

from qidlab.errors import QidlabError
from qidlab.quantize.api import _block_of, _check_shapes, _with_layer_name
from qidlab.quantize.config import GPTQConfig
from qidlab.quantize.gptq import (MAX_DAMP, ON_FAILURE, PRECISIONS, block_pass, collect_hessians,
                                  gptq_layer)
from qidlab.quantize.model import (BlockInputs, capture_block_inputs, check_calibration, find_blocks,
                                   select_linears)

__all__ = ["SharedGPTQ", "gptq_shared_blockwise", "block_hessians", "snapshot_weights",
           "restore_weights", "snapshot_state", "PinnedArena"]


@dataclass
class SharedGPTQ:
    """What ``gptq_shared_blockwise`` computed.

    ``weights``: ``{bits: {linear name: dequantized weight (out, in)}}`` in the model's dtype, on
    the host (pinned when the model is on CUDA), names in model order; ``damp``: ``{name: relative
    damping used}`` (``config.damp`` unless a retry raised it; None where the layer fell back);
    ``fallback``: ``{name: why GPTQ failed}`` for the layers rounded to nearest
    (``on_failure="rtn"``); ``n_calibration_tokens``: tokens run through the model."""

    weights: dict[int, dict[str, torch.Tensor]]
    damp: dict[str, float | None] = field(default_factory=dict)
    fallback: dict[str, str] = field(default_factory=dict)
    n_calibration_tokens: int = 0


@torch.no_grad()
def gptq_shared_blockwise(model: nn.Module, config: GPTQConfig, bits: Iterable[int],
                          calibration: torch.Tensor, *, batch_size: int = 8, precision: str = "float32",
                          max_damp: float = MAX_DAMP, on_failure: str = "error",
                          pin: bool | None = None, timings: dict[str, float] | None = None) -> SharedGPTQ:
    """Shared-Hessian GPTQ of ``model``'s linears (``config.modules``) at every width of ``bits``,
    block by block; the model is not changed (it must hold its 16-bit weights) and
    ``config.bits`` is ignored.

    Each result equals ``gptq_shared_weights(model, config, bits, collect_hessians(model,
    calibration, config.modules, batch_size))`` up to float summation order (tests/test_gptq_blockwise.py
    bounds the difference), with the robustness of ``gptq.gptq_layer``: ``max_damp`` caps the
    damping retries, ``on_failure`` is ``"error"`` or ``"rtn"``. ``calibration``: token ids
    ``(n_samples, seq_len)`` run ``batch_size`` samples at a time. ``precision``: of the X^T X
    products (``HessianAccumulator``: ``"float32"``, ``"tf32"``, ``"bf16"``). ``pin``: pin the
    host copies (default: when the weights are on CUDA). NaN or inf in the activations entering a
    layer is a ``QidlabError`` naming the layer, whatever ``on_failure`` says. ``timings``: a dict
    to which the seconds of the block passes (``"hessians_s"``) and of GPTQ with the copies to the
    host (``"gptq_s"``) are added (CUDA is synchronized at each boundary; None: no syncs).
    """
    if not (isinstance(config, GPTQConfig) and config.shared_hessian):
        raise QidlabError("gptq_shared_blockwise needs a GPTQConfig with shared_hessian=True")
    if on_failure not in ON_FAILURE:
        raise QidlabError(f"on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
    if precision not in PRECISIONS:
        raise QidlabError(f"Hessian precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    bits = [int(b) for b in bits]
    _check_shapes(model, config)
    calibration = check_calibration(calibration, "gptq")
    linears = select_linears(model, config.modules)
    out = SharedGPTQ({b: {} for b in bits}, n_calibration_tokens=int(calibration.numel()))
    arenas = {b: _arena([m.weight for m in linears.values()], pin) for b in bits}  # one per width: freed apart
    blocks = block_hessians(model, calibration, linears, batch_size=batch_size, precision=precision)
    for mine, hessians in _timed(blocks, timings, "hessians_s"):
        with _stopwatch(timings, "gptq_s"):
            for name, mod in mine.items():
                layer = _with_layer_name(name, gptq_layer, mod.weight, hessians.pop(name), config, bits,
                                         max_damp, on_failure)
                out.damp[name] = layer.damp
                if layer.fallback is not None:
                    out.fallback[name] = layer.fallback
                for b, (q, _scale, _zero) in zip(bits, layer.results):
                    out.weights[b][name] = _to_host(q, arenas[b])
    _sync()  # the non-blocking copies to pinned memory have landed
    out.weights = {b: {n: w[n] for n in linears} for b, w in out.weights.items()}  # model order
    return out


def block_hessians(model: nn.Module, calibration: torch.Tensor, linears: dict[str, nn.Linear], *,
                   batch_size: int = 8, precision: str = "float32"
                   ) -> Iterator[tuple[dict[str, nn.Linear], dict[str, torch.Tensor]]]:
    """Yield ``(linears of one block, {name: H (in, in) float32})`` block by block, in model order,
    for the ``linears`` given (``select_linears``); those outside the decoder blocks (e.g. the
    head, by pattern) come last, from full forward passes (``collect_hessians``). Each H is what
    ``collect_hessians`` gives: the 16-bit model's activations, ``HessianAccumulator`` over the same
    calibration batches. Only one block's Hessians are alive at a time if the consumer drops them
    (pops the dict) before asking for the next. Blocks after the last one needed are not run.
    Raises a ``QidlabError`` naming the layer when the activations entering it hold NaN or inf."""
    _, blocks = find_blocks(model)
    per_block = _block_of(blocks, linears)
    needed = [i for i, mine in enumerate(per_block[:-1]) if mine]
    if needed:
        inputs = capture_block_inputs(model, blocks, calibration, batch_size)
        for i in range(needed[-1] + 1):
            if not per_block[i]:
                inputs = inputs.run(blocks[i])
                continue
            acc, outputs = block_pass(blocks[i], per_block[i], inputs, precision)
            hessians = {n: a.H for n, a in acc.items()}
            del acc
            _check_activations(blocks[i], per_block[i], hessians, inputs)
            inputs = outputs  # the block's inputs are freed before its GPTQ
            del outputs
            yield per_block[i], hessians
            del hessians
        del inputs
    if per_block[-1]:
        yield per_block[-1], collect_hessians(model, calibration, tuple(per_block[-1]), batch_size,
                                              precision=precision)


def _check_activations(block: nn.Module, mine: dict[str, nn.Linear], hessians: dict[str, torch.Tensor],
                       inputs: BlockInputs) -> None:
    """A Hessian that is not finite either comes from non-finite activations (an error here, naming
    the layer and the first calibration batch) or overflowed X^T X (left to ``gptq_layer``, which
    reports the Hessian). One host sync per layer; the block runs again only on that rare path."""
    for name, H in hessians.items():
        if bool(torch.isfinite(H).all()):
            continue
        found = _nonfinite_inputs(block, mine[name], inputs)
        if found is not None:
            what, batch = found
            raise QidlabError(f"{name}: the activations entering this layer hold {what} (calibration "
                              f"batch {batch}): the 16-bit model's forward pass is not finite there")


def _nonfinite_inputs(block: nn.Module, module: nn.Module, inputs: BlockInputs) -> tuple[str, int] | None:
    """``("NaN" | "inf", batch index)`` of the first calibration batch whose input to ``module``
    is not finite when ``block`` runs on ``inputs``; None if every one is finite."""
    seen: list[tuple[str, int]] = []
    calls = iter(range(len(inputs.hidden)))

    def hook(_mod, args):
        k = next(calls, -1)
        x = args[0]
        if not seen and not bool(torch.isfinite(x).all()):
            seen.append(("NaN" if bool(torch.isnan(x).any()) else "inf", k))

    handle = module.register_forward_pre_hook(hook)
    try:
        inputs.run(block)
    finally:
        handle.remove()
    return seen[0] if seen else None


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextlib.contextmanager
def _stopwatch(timings: dict[str, float] | None, key: str):
    """Add the block's wall-clock seconds to ``timings[key]`` (CUDA synchronized at both ends);
    nothing at all when ``timings`` is None."""
    if timings is None:
        yield
        return
    _sync()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _sync()
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _timed(items: Iterator, timings: dict[str, float] | None, key: str) -> Iterator:
    """``items``, with the time spent producing each added to ``timings[key]`` (``_stopwatch``)."""
    end = object()
    while True:
        with _stopwatch(timings, key):
            item = next(items, end)
        if item is end:
            return
        yield item


class PinnedArena:
    """Host tensors carved out of pinned slabs whose size is a power of two.

    PyTorch's pinned-memory allocator rounds every allocation up to a power of two (its cache's
    size classes): pinned one by one, Pythia-12B's weights (150, 50, 200 and 200 MiB per layer)
    would take about 1.4 times their size. Packed into slabs of ``min(1 GiB, the power of two
    >= total_bytes)`` they waste at most the tail of each slab; a tensor larger than a slab gets
    its own allocation. A slab is freed (back to PyTorch's pinned cache, which reuses it) when no
    tensor cut from it is left. ``pin=False``: the same packing in ordinary memory (tests)."""

    MAX_SLAB = 2**30
    ALIGN = 512  # bytes: every tensor starts aligned for any dtype and for fast copies

    def __init__(self, total_bytes: int, pin: bool = True):
        self.slab_bytes = min(self.MAX_SLAB, 1 << max(int(total_bytes) - 1, 1).bit_length())
        self.pin = pin
        self.slab: torch.Tensor | None = None
        self.used = 0
        self.n_slabs = 0

    def empty(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised host tensor of ``shape`` and ``dtype`` (pinned when ``pin``)."""
        numel = 1
        for d in shape:
            numel *= int(d)
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        if nbytes > self.slab_bytes:
            return torch.empty(shape, dtype=dtype, pin_memory=self.pin)
        if self.slab is None or self.used + nbytes > self.slab_bytes:
            self.slab = torch.empty(self.slab_bytes, dtype=torch.uint8, pin_memory=self.pin)
            self.used, self.n_slabs = 0, self.n_slabs + 1
        view = self.slab[self.used:self.used + nbytes].view(dtype).view(shape)
        self.used += -(-nbytes // self.ALIGN) * self.ALIGN
        return view


def _arena(tensors: list[torch.Tensor], pin: bool | None) -> PinnedArena | None:
    """A ``PinnedArena`` sized for host copies of ``tensors`` when they are to be pinned (``pin``;
    default: when they are on CUDA), else None (ordinary host memory)."""
    pin = any(t.is_cuda for t in tensors) if pin is None else pin
    return PinnedArena(sum(t.numel() * t.element_size() for t in tensors)) if pin else None


def _to_host(t: torch.Tensor, arena: PinnedArena | None) -> torch.Tensor:
    """``t`` in host memory: a CPU tensor as it is; a device tensor copied into ``arena`` (pinned,
    without blocking: synchronize before reading it on the host) or into ordinary memory."""
    if t.device.type == "cpu":
        return t
    host = arena.empty(t.shape, t.dtype) if arena is not None else torch.empty(t.shape, dtype=t.dtype)
    host.copy_(t, non_blocking=arena is not None)
    return host


@torch.no_grad()
def snapshot_weights(model: nn.Module, names: Iterable[str] | None = None, *,
                     pin: bool | None = None) -> dict[str, torch.Tensor]:
    """Host copies of linears' weights ``{linear name: weight (out, in)}``, to undo a quantization
    with ``restore_weights``. ``names``: the linears (default: every ``nn.Linear`` of the model,
    head included: every weight a quantization method may change). Pinned (``PinnedArena``) when
    the weights are on CUDA unless ``pin`` says otherwise; a CPU model's weights are cloned. Costs
    host memory of the linears' size in the model's dtype (plus the slabs' unused tails), no
    device memory."""
    mods = dict(model.named_modules())
    names = [n for n, m in mods.items() if isinstance(m, nn.Linear)] if names is None else list(names)
    weights = [mods[n].weight.detach() for n in names]
    arena = _arena(weights, pin)
    snap = {n: w.clone() if w.device.type == "cpu" else _to_host(w, arena) for n, w in zip(names, weights)}
    _sync()
    return snap


@torch.no_grad()
def snapshot_state(model: nn.Module, *, pin: bool | None = None) -> dict[str, torch.Tensor]:
    """Host copies of ``model.state_dict()`` (every parameter and buffer), to undo any method's
    changes with ``model.load_state_dict``: like ``snapshot_weights``, host memory instead of a
    second device copy, pinned when the model is on CUDA unless ``pin`` says otherwise."""
    state = {k: v.detach() for k, v in model.state_dict().items()}
    arena = _arena(list(state.values()), pin)
    snap = {k: v.clone() if v.device.type == "cpu" else _to_host(v, arena) for k, v in state.items()}
    _sync()
    return snap


@torch.no_grad()
def restore_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``{linear name: weight}`` (``snapshot_weights``, or one bit width of
    ``SharedGPTQ.weights``) into ``model``'s linears, on their device and in their dtype."""
    for name, w in weights.items():
        model.get_submodule(name).weight.copy_(w, non_blocking=True)
