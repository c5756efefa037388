"""One GPTQ block's whole column loop in one Triton launch.

``gptq.gptq_quantize_layer_bits`` sweeps the columns of a layer in blocks of ``block_size``;
inside a block, the eager loop quantizes one column at a time and updates the block's remaining
columns (about 15 tiny tensor ops per column: on a GPU the loop is bound by launching them).
``quantize_block`` runs that loop in one kernel launch. Given ``Hinv`` the rows are independent,
so each Triton program holds a tile of rows (of the flattened ``bit widths * out`` rows) times
the block's columns (padded to a power of 2, masked) in registers and walks the columns in
order; for column ``i`` and every row:

    q   = scale * (clamp(round(w_i / scale) + zero, 0, maxq) - zero)   # round half to even
    err = (w_i - q) / Hinv1[i, i]
    w_j = w_j - err * Hinv1[i, j]   for j > i

writing ``Q1`` (the dequantized column) and ``Err1``; the lazy update of the columns after the
block (``W[..., i2:] -= Err1 @ Hinv[i1:i2, i2:]``) stays a torch matmul in ``gptq``.
``scale``/``zero`` come per column, gathered by the caller before the block, so the kernel
serves every grid that is known when the block starts: per-channel, static groups, act_order,
and dynamic groups whose starts inside the block are all at its first column (group size a
multiple of the block size). ``gptq`` keeps its eager loop for the other blocks.

Every operation is rounded as the eager loop's separate torch kernels round it: divisions are
IEEE (``div_rn``, not Triton's default approximate ``/``), multiply and subtract are not fused
into an FMA (``enable_fp_fusion=False``), and round-half-to-even is exact float arithmetic (so it
also runs under ``TRITON_INTERPRET=1``, which has no libdevice). The kernel's ``Q1``/``Err1``
should therefore equal the eager loop's bit for bit on the same device; tests allow a tiny
fraction of codes to flip at rounding ties all the same. (A standalone copy of this kernel was
checked once on an H100 with triton 3.6: bit-identical to the eager torch loop with fusion off;
with Triton's default fusion on, a few codes in a million flipped and their rows' errors diverged.)

When it is used: environment variable ``QIDLAB_GPTQ_KERNEL`` (read at each call):
``auto`` (default): on CUDA tensors when ``triton`` imports, else the eager loop;
``eager``: always the eager loop (the reference; e.g. to measure the speed-up);
``triton``: always the kernel (CPU tensors need ``TRITON_INTERPRET=1``, for tests).
It is not a ``GPTQConfig`` field on purpose: it chooses how, not what, is computed, so it is
not part of a measurement's identity (``sweep.run.measurement_config`` hashes the config).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from qidlab.errors import QidlabError

ENV = "QIDLAB_GPTQ_KERNEL"
MODES = ("auto", "eager", "triton")
MAX_COLUMNS = 128  # a block's columns live in registers: wider blocks take the eager loop
#: rows per Triton program and warps per program (module-level so that bench/gptq_kernel.py can
#: try others). 8 x 2 was the fastest of 8 x 2, 16 x 4, 32 x 4 by 5-30% in one H100 check of a
#: standalone copy of this kernel on blocks of 2304 and 9216 rows (about 0.1-0.2 ms per launch).
BLOCK_ROWS, NUM_WARPS = 8, 2


def mode() -> str:
    """``QIDLAB_GPTQ_KERNEL``, validated (default ``auto``)."""
    m = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if m not in MODES:
        raise QidlabError(f"{ENV} must be one of {', '.join(MODES)}, got {m!r}")
    return m


def use_kernel(device: torch.device) -> bool:
    """Whether ``gptq`` runs blocks through the kernel for tensors on ``device``."""
    m = mode()
    if m == "eager":
        return False
    if m == "auto":
        return device.type == "cuda" and _triton() is not None
    if _triton() is None:
        raise QidlabError(f"{ENV}=triton but triton does not import")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "").lower() not in ("1", "true", "on"):
        raise QidlabError(f"{ENV}=triton on {device.type} tensors needs TRITON_INTERPRET=1")
    return True


@functools.cache
def _triton():
    try:
        import triton  # noqa: F401
    except ImportError:
        return None
    return triton


@functools.cache
def _kernel():
    """The jitted kernel, built on first use (``triton.jit`` reads TRITON_INTERPRET then)."""
    import triton
    import triton.language as tl

    @triton.jit
    def gptq_block(w_ptr, hinv_ptr, scale_ptr, zero_ptr, maxq_ptr, q_ptr, err_ptr, n_rows, n_cols,
                   BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BLOCK_C)
        rmask = rows < n_rows
        cmask = cols < n_cols
        w = tl.load(w_ptr + rows[:, None] * n_cols + cols[None, :],
                    mask=rmask[:, None] & cmask[None, :], other=0.0)
        maxq = tl.load(maxq_ptr + rows, mask=rmask, other=1.0)
        for i in range(n_cols):
            # column i of the register tile: one non-zero per row, so the sum is exact
            wi = tl.sum(tl.where(cols[None, :] == i, w, 0.0), axis=1)
            at = rows * n_cols + i
            scale = tl.load(scale_ptr + at, mask=rmask, other=1.0)
            zero = tl.load(zero_ptr + at, mask=rmask, other=0.0)
            x = tl.math.div_rn(wi, scale)
            # round half to even, as torch.round: adding 2^23 to |x| < 2^23 leaves no fraction bits
            ax = tl.abs(x)
            r = tl.where(ax < 8388608.0, (ax + 8388608.0) - 8388608.0, ax)
            r = tl.where(x < 0, -r, r)
            code = tl.minimum(tl.maximum(r + zero, 0.0), maxq)
            q = scale * (code - zero)
            d = tl.load(hinv_ptr + i * n_cols + i)
            err = tl.math.div_rn(wi - q, d)
            h = tl.load(hinv_ptr + i * n_cols + cols, mask=cmask & (cols > i), other=0.0)
            w = w - err[:, None] * h[None, :]
            tl.store(q_ptr + at, q, mask=rmask)
            tl.store(err_ptr + at, err, mask=rmask)

    return gptq_block


def quantize_block(W1: torch.Tensor, Hinv1: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                   maxq: torch.Tensor, block_rows: int | None = None, num_warps: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ's column loop over one block: ``W1`` ``(nb, out, bs)`` float32 weights of the block,
    ``Hinv1`` ``(bs, bs)`` (upper Cholesky factor of H^-1, the block's diagonal block),
    ``scale``/``zero`` ``(nb, out, bs)`` each column's grid, ``maxq`` ``(nb, 1)`` float32.
    Returns ``(Q1, Err1)``, both ``(nb, out, bs)``: the dequantized block and the scaled errors
    for the lazy update. ``bs`` at most ``MAX_COLUMNS``; ``W1`` is not changed. ``block_rows``
    (a power of 2) and ``num_warps``: the launch's tile, default ``BLOCK_ROWS``, ``NUM_WARPS``."""
    block_rows, num_warps = block_rows or BLOCK_ROWS, num_warps or NUM_WARPS
    nb, out, bs = W1.shape
    if bs > MAX_COLUMNS:
        raise QidlabError(f"quantize_block: {bs} columns, the kernel holds at most {MAX_COLUMNS}")
    n = nb * out
    flat = lambda t: t.reshape(n, bs).contiguous()  # noqa: E731
    w, s, z = flat(W1.float()), flat(scale.float()), flat(zero.float())
    mq = maxq.float().reshape(nb, 1).expand(nb, out).reshape(n).contiguous()
    h = Hinv1.float().contiguous()
    Q1, Err1 = torch.empty_like(w), torch.empty_like(w)
    cols = max(16, 1 << (bs - 1).bit_length())
    grid = (-(-n // block_rows),)
    # Triton launches on the current CUDA device, which need not be the tensors' one
    on = torch.cuda.device(w.device) if w.is_cuda else contextlib.nullcontext()
    with on:
        _kernel()[grid](w, h, s, z, mq, Q1, Err1, n, bs, BLOCK_R=block_rows, BLOCK_C=cols,
                        num_warps=num_warps, enable_fp_fusion=False)
    return Q1.view(nb, out, bs), Err1.view(nb, out, bs)
