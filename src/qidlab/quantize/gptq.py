"""GPTQ (Frantar et al. 2022), following IST-DASLab/gptq.

``HessianAccumulator`` builds H = 2 X^T X / n_tokens from a layer's inputs (forward hooks);
``gptq_quantize_layer`` does the column sweep on the integer grid of ``grids`` (so with
H = identity it is round-to-nearest). ``collect_hessians`` gathers one H per layer from the
unquantized model in full forward passes: the "shared Hessian" mode, reusable for every bit width
and group size. The block-by-block, true-sequential driver lives in ``api``. On CUDA a block of
columns goes through one Triton launch (``gptq_kernel``) where its grids are known when it starts;
``_eager_block`` is the column loop in torch ops (the reference, and the CPU path).

Robustness: ``gptq_layer`` retries a Hessian that is not positive definite after damping with the
damping x10 up to ``MAX_DAMP`` and returns the damping used; a Hessian holding NaN/inf, or one
still not positive definite at the cap, is a ``GPTQFailure`` (``on_failure="rtn"``: the layer is
rounded to nearest on the same grid instead, and the reason returned).
``gptq_quantize_layer_bits`` keeps the single configured damping (no retry).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from qidlab.errors import QidlabError
from qidlab.quantize import grids, gptq_kernel
from qidlab.quantize.config import GPTQConfig
from qidlab.quantize.model import (batches, check_calibration, find_blocks, model_device,
                                   select_linears, stop_after)


#: Precision of the X^T X products of a Hessian (the sums are float32 in every case).
PRECISIONS = ("float32", "tf32", "bf16")
#: Largest relative damping (fraction of mean diag H) ``gptq_layer`` tries by default.
MAX_DAMP = 1.0
ON_FAILURE = ("error", "rtn")


class GPTQFailure(QidlabError):
    """GPTQ cannot use a layer's Hessian: it holds NaN/inf, or is not positive definite at the
    largest damping tried. (``on_failure="rtn"`` turns exactly these into round-to-nearest.)"""


class HessianAccumulator:
    """Running H = 2 X^T X / n over the rows x (in_features,) of every input seen (float32).

    ``precision`` of the products X^T X, summed in float32 whatever it is:

    * ``"float32"`` (default): x in float32, full float32 products (the reference);
    * ``"tf32"``: float32 x, products under ``torch.set_float32_matmul_precision("high")``: on
      CUDA (Ampere and newer) TF32 tensor cores round the inputs to 10 mantissa bits; a CPU
      without TF32 computes in float32. Exact for bf16 activations (8 mantissa bits);
    * ``"bf16"``: x rounded to bfloat16, products on CUDA by cuBLAS with float32 accumulation and
      output (``torch.addmm(..., out_dtype=torch.float32)``), elsewhere by float32 products of the
      rounded values (the same numbers, without the tensor-core speed). Exact for bf16
      activations (a bf16 model, as ``load_checkpoint`` gives on CUDA): only the summation order
      changes; float32 activations lose their low 16 mantissa bits (relative error up to 2^-9
      per element, about 1e-3 in H).

    The two fast precisions fold the 2/n scaling and the running mean into one ``addmm``
    (no scaled copy of x); ``"float32"`` keeps the original arithmetic bit for bit.
    """

    def __init__(self, in_features: int, device: torch.device | str = "cpu", precision: str = "float32"):
        if precision not in PRECISIONS:
            raise QidlabError(f"Hessian precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.H = torch.zeros(in_features, in_features, device=device, dtype=torch.float32)
        self.n = 0
        self.precision = precision

    def add(self, x: torch.Tensor) -> None:
        """``x``: ``(..., in_features)`` activations entering the layer."""
        if self.precision != "float32":
            return self._add_fast(x.reshape(-1, x.shape[-1]))
        x = x.reshape(-1, x.shape[-1]).float()
        m = x.shape[0]
        self.H *= self.n / (self.n + m)
        self.n += m
        x = x * (2 / self.n) ** 0.5
        self.H += x.T @ x

    def _add_fast(self, x: torch.Tensor) -> None:
        """H <- H * n / (n + m) + (2 / (n + m)) x^T x in one addmm, ``x``: ``(m, in_features)``."""
        m = x.shape[0]
        beta = self.n / (self.n + m)
        self.n += m
        alpha = 2 / self.n
        if self.precision == "bf16":
            self.H = _addmm_bf16(self.H, x.to(torch.bfloat16), beta, alpha)
            return
        x = x.float()
        with _matmul_precision("high"):
            self.H.addmm_(x.T, x, beta=beta, alpha=alpha)

    def hook(self) -> Callable:
        def fn(_mod, args, _out):
            self.add(args[0].detach())
        return fn


_NO_BF16_ADDMM: set[str] = set()  # device types whose addmm lacks out_dtype (CPU: torch 2.13)


def _addmm_bf16(H: torch.Tensor, xb: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    """``beta * H + alpha * xb^T xb`` in float32 from bfloat16 ``xb`` ``(m, d)``: cuBLAS's bf16
    products with float32 accumulation where ``addmm(out_dtype=)`` exists, else the float32
    products of the bf16 values (the same numbers)."""
    if H.device.type not in _NO_BF16_ADDMM:
        try:
            return torch.addmm(H, xb.T, xb, beta=beta, alpha=alpha, out_dtype=torch.float32)
        except torch.OutOfMemoryError:
            raise
        except (NotImplementedError, RuntimeError, TypeError) as e:  # no out_dtype here: same numbers below
            _NO_BF16_ADDMM.add(H.device.type)
            if H.device.type != "cpu":
                warnings.warn(f"Hessian precision 'bf16': torch.addmm(out_dtype=float32) fails on {H.device.type} "
                              f"({type(e).__name__}); computing the same numbers in float32, without the speed",
                              stacklevel=2)
    x = xb.float()
    return H.addmm_(x.T, x, beta=beta, alpha=alpha)


@contextlib.contextmanager
def _matmul_precision(level: str):
    """``torch.set_float32_matmul_precision(level)`` inside the block, the previous one after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(level)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@dataclass
class LayerGPTQ:
    """``gptq_layer``'s result: ``results``, one ``(dequantized weight, scale, zero)`` per bit
    width (as ``gptq_quantize_layer_bits``); ``damp``, the relative damping used (fraction of
    mean diag H; None when the layer fell back); ``fallback``, None or why round-to-nearest
    replaced GPTQ."""

    results: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    damp: float | None
    fallback: str | None = None


def gptq_quantize_layer(weight: torch.Tensor, H: torch.Tensor, config: GPTQConfig
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``weight`` ``(out, in)`` with Hessian ``H`` ``(in, in)``.

    Returns ``(dequantized weight in weight's dtype, scale, zero)`` with ``scale`` and ``zero``
    float32 ``(out, n_groups)`` (one group per row when ``group_size`` is None), so that
    ``W' = scale[:, g] * (codes - zero[:, g])`` column-group by column-group.
    Groups are contiguous input columns; their scales are chosen when the sweep reaches their
    first column (from the error-updated weights), or, with ``static_groups`` or ``act_order``,
    once beforehand from the unquantized weights, which keeps groups contiguous.
    """
    return gptq_quantize_layer_bits(weight, H, config, [config.bits])[0]


def gptq_quantize_layer_bits(weight: torch.Tensor, H: torch.Tensor, config: GPTQConfig, bits: list[int]
                             ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``gptq_quantize_layer`` at several bit widths in one pass over the columns: one result per
    entry of ``bits`` (``config.bits`` is ignored), each equal to
    ``gptq_quantize_layer(weight, H, replace(config, bits=b))`` up to float rounding of batched
    matrix products. Every bit width's copy of the weights runs through the same kernel launches,
    so k bit widths cost about one (GPTQ's column loop is launch-bound on a GPU). Each block of
    ``block_size`` columns runs in ``gptq_kernel.quantize_block`` (one launch) when
    ``gptq_kernel.use_kernel`` says so (CUDA and triton, env ``QIDLAB_GPTQ_KERNEL``) and no
    dynamic group starts inside the block, else in ``_eager_block``. The Hessian is dampened
    by ``config.damp`` once (no retry: ``gptq_layer`` retries)."""
    return _column_pass(weight, H, config, bits, config.damp)[0]


def gptq_layer(weight: torch.Tensor, H: torch.Tensor, config: GPTQConfig, bits: list[int],
               max_damp: float = MAX_DAMP, on_failure: str = "error") -> LayerGPTQ:
    """``gptq_quantize_layer_bits`` with retries: a Hessian that is not positive definite after
    damping ``config.damp`` (relative to mean diag H) is tried again with the damping x10, up to
    ``max_damp`` (default ``MAX_DAMP`` = 1.0, itself tried last: 0.01 -> 0.1 -> 1.0); the damping
    that worked is returned. A ``GPTQFailure`` (H holds NaN/inf, or is still not positive definite
    at ``max_damp``) is raised with ``on_failure="error"``; with ``"rtn"`` the layer is quantized
    with the identity Hessian instead (round-to-nearest on the same grid, groups and bit widths)
    and the failure's message returned as ``fallback``. Results as ``gptq_quantize_layer_bits``:
    where ``config.damp`` works they are the same numbers."""
    if on_failure not in ON_FAILURE:
        raise QidlabError(f"on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
    try:
        results, damp = _column_pass(weight, H, config, bits, max(max_damp, config.damp))
        return LayerGPTQ(results, damp)
    except GPTQFailure as e:
        if on_failure == "error":
            raise
        eye = torch.eye(weight.shape[1], device=weight.device)
        return LayerGPTQ(_column_pass(weight, eye, config, bits, config.damp)[0], None, str(e))


def _column_pass(weight: torch.Tensor, H: torch.Tensor, config: GPTQConfig, bits: list[int],
                 max_damp: float) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], float]:
    """The column sweep behind ``gptq_quantize_layer_bits`` and ``gptq_layer``: its results and
    the damping used (``config.damp``, then x10 steps up to ``max_damp`` while H + damping is not
    positive definite)."""
    gs = config.group_size
    rows, cols = weight.shape
    if H.shape != (cols, cols):
        raise QidlabError(f"Hessian shape {tuple(H.shape)} does not match weight width {cols}")
    grids.group_view(weight, gs)  # validates the group size against the width
    for b in bits:
        grids._check_bits(b)
    g = cols if gs is None else gs
    nb = len(bits)
    W = weight.detach().float().unsqueeze(0).repeat(nb, 1, 1)  # (bit widths, out, in)
    H = H.to(W.device, torch.float32).clone()
    _check_finite(H)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, :, dead] = 0
    maxq = torch.tensor([2**b - 1 for b in bits], device=W.device, dtype=torch.float32).view(nb, 1)

    scales = torch.zeros(nb, rows, cols // g, device=W.device)
    zeros = torch.zeros_like(scales)
    static = gs is None or config.act_order or config.static_groups
    if static:  # every group's grid from the (unquantized) weights
        for k, b in enumerate(bits):
            sk, zk = grids.choose_qparams(grids.group_view(W[k], gs), b, config.symmetric)
            scales[k], zeros[k] = sk[..., 0], zk[..., 0]

    perm = torch.arange(cols, device=W.device)
    if config.act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, :, perm], H[perm][:, perm]
    Hinv, damp = _dampened_inverse(H, config.damp, max_damp)

    def new_group(cur: torch.Tensor, grp: int) -> None:  # dynamic groups: grid from current weights
        for k, b in enumerate(bits):
            sk, zk = grids.choose_qparams(cur[k], b, config.symmetric)
            scales[k, :, grp], zeros[k, :, grp] = sk[:, 0], zk[:, 0]

    Q = torch.zeros_like(W)
    bs = config.block_size
    order = perm.tolist()  # column indices on the host: no device sync inside the column loop
    kernel = gptq_kernel.use_kernel(W.device) and min(bs, cols) <= gptq_kernel.MAX_COLUMNS
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        Hinv1 = Hinv[i1:i2, i1:i2]
        # the kernel needs every column's grid when the block starts: no group may start inside it
        if kernel and (static or (i2 - 1) // g == i1 // g):
            if not static and i1 % g == 0:
                new_group(W[:, :, i1:i1 + g], i1 // g)
            grp = perm[i1:i2] // g  # on the device: no host sync
            Q1, Err1 = gptq_kernel.quantize_block(W[:, :, i1:i2], Hinv1, scales[:, :, grp],
                                                  zeros[:, :, grp], maxq)
        else:
            Q1, Err1 = _eager_block(W, i1, i2, Hinv1, order[i1:i2], g, None if static else new_group,
                                    scales, zeros, maxq)
        Q[:, :, i1:i2] = Q1
        W[:, :, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if config.act_order:
        Q = Q[:, :, torch.argsort(perm)]
    return [(Q[k].to(weight.dtype), scales[k], zeros[k]) for k in range(nb)], damp


def _eager_block(W, i1, i2, Hinv1, order, g, new_group, scales, zeros, maxq
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ's column loop over the block ``W[:, :, i1:i2]`` in torch ops, column by column (the
    reference for ``gptq_kernel.quantize_block``): ``(Q1, Err1)``, the dequantized block and the
    scaled errors. ``order``: the block's original column indices; ``new_group(cur, grp)``, unless
    None, sets group ``grp``'s grid from ``cur`` when a column starts a group."""
    W1 = W[:, :, i1:i2].clone()
    Q1 = torch.zeros_like(W1)
    Err1 = torch.zeros_like(W1)
    for i, col in enumerate(order):
        grp = col // g
        if new_group is not None and col % g == 0:  # reached a new group: its grid from current weights
            new_group(torch.cat([W1[:, :, i:], W[:, :, i2:]], dim=2)[:, :, :g], grp)
        w, d = W1[:, :, i], Hinv1[i, i]
        sc, z = scales[:, :, grp], zeros[:, :, grp]
        q = sc * (torch.minimum(torch.clamp(torch.round(w / sc) + z, min=0), maxq) - z)  # grids.quantize
        Q1[:, :, i] = q
        err = (w - q) / d
        W1[:, :, i:] -= err.unsqueeze(2) * Hinv1[i, i:].view(1, 1, -1)
        Err1[:, :, i] = err
    return Q1, Err1


def _check_finite(H: torch.Tensor) -> None:
    """A ``GPTQFailure`` saying whether ``H`` holds NaN, inf or both (one host sync when finite).
    (X^T X overflowing float32 gives inf on the diagonal, and NaN where the running mean meets
    infinities of both signs.)"""
    if not bool(torch.isfinite(H).all()):
        what = [w for w, bad in (("NaN", torch.isnan(H).any()), ("inf", torch.isinf(H).any())) if bool(bad)]
        raise GPTQFailure(f"GPTQ: the Hessian holds {' and '.join(what)}")


def _damps(damp: float, max_damp: float):
    """``damp``, then x10 steps, the last capped at ``max_damp``: 0.01, 0.1, 1.0."""
    yield damp
    while damp < max_damp:
        damp = min(damp * 10, max_damp)
        yield damp


def _dampened_inverse(H: torch.Tensor, damp: float, max_damp: float) -> tuple[torch.Tensor, float]:
    """GPTQ's Hinv of ``H`` ``(in, in)`` plus ``d * mean(diag H)`` on its diagonal, for the first
    ``d`` of ``_damps(damp, max_damp)`` that makes it positive definite: ``(Hinv, d)``. ``H``'s
    diagonal is overwritten (it is the caller's scratch copy)."""
    diag = torch.diag(H).clone()
    mean = torch.mean(diag)
    tried = []
    for d in _damps(damp, max_damp):
        H.diagonal().copy_(diag + d * mean)
        try:
            return _inverse_cholesky(H), d
        except GPTQFailure:
            tried.append(f"{d:g}")
    raise GPTQFailure(f"GPTQ: the dampened Hessian is not positive definite (damp {', '.join(tried)} "
                      "of mean diag H tried); raise damp or use more calibration data")


def _inverse_cholesky(H: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 (GPTQ's Hinv); a ``GPTQFailure`` if H is not positive definite."""
    try:
        L = torch.linalg.cholesky(H)
        return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except RuntimeError as e:  # torch.linalg.LinAlgError subclasses RuntimeError
        raise GPTQFailure("GPTQ: the dampened Hessian is not positive definite; "
                          "raise damp or use more calibration data") from e


def block_pass(block: nn.Module, mine: dict[str, nn.Linear], inputs, precision: str = "float32"
               ) -> tuple[dict[str, HessianAccumulator], object]:
    """Run ``block`` on ``inputs`` (``model.BlockInputs``) with a ``HessianAccumulator`` hooked on
    each linear of ``mine``: ``({name: accumulator}, the block's outputs)``."""
    acc = {n: HessianAccumulator(m.in_features, m.weight.device, precision) for n, m in mine.items()}
    handles = [m.register_forward_hook(acc[n].hook()) for n, m in mine.items()]
    try:
        outputs = inputs.run(block)
    finally:
        for h in handles:
            h.remove()
    return acc, outputs


@torch.no_grad()
def collect_hessians(model: nn.Module, calibration: torch.Tensor,
                     modules: tuple[str, ...] | None = None, batch_size: int = 8,
                     device: torch.device | str | None = None, precision: str = "float32"
                     ) -> dict[str, torch.Tensor]:
    """One Hessian per selected linear from full forward passes of the (16-bit) model:
    ``{module name: H (in, in) float32}``. ``modules`` as in the configs (None: every linear in
    the decoder blocks). ``device``: where to keep the H's (default: each layer's device).
    ``precision``: of the X^T X products (``HessianAccumulator``). Every H is on the device at
    once: ``gptq_blockwise.gptq_shared_blockwise`` holds one block's at a time."""
    calibration = check_calibration(calibration, "gptq")
    linears = select_linears(model, modules)
    acc = {n: HessianAccumulator(m.in_features, device or m.weight.device, precision)
           for n, m in linears.items()}
    handles = [m.register_forward_hook(acc[n].hook()) for n, m in linears.items()]
    dev = model_device(model)
    _, blocks = find_blocks(model)
    inside = {id(m) for m in blocks.modules()}
    last = blocks[-1] if all(id(m) in inside for m in linears.values()) else None
    try:
        for ids in batches(calibration, batch_size):
            with stop_after(last):  # no need to run the final norm and lm_head
                model(input_ids=ids.to(dev), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: a.H for n, a in acc.items()}
