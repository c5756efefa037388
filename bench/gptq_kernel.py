"""GPU check of GPTQ's Triton block kernel (``qidlab.quantize.gptq_kernel``) against the eager loop.

On random weights and Hessians (H = X^T X / n, X correlated) at Pythia-160m's linear shapes
(``(out, in)``: QKV 2304x768, attention out 768x768, MLP up 3072x768, MLP down 768x3072), all
bit widths of ``--bits`` in one pass (``gptq_quantize_layer_bits``, as the shared-Hessian sweep):

  1. correctness: kernel vs eager per linear and grid (dynamic groups, static groups,
     act_order): max |Q_kernel - Q_eager| and the fraction of integer codes that differ;
  2. speed: milliseconds per linear (eager, kernel), then a 12-layer model (48 linears), eager
     and kernel, and the kernel alone at a few tile sizes (rows per program x warps) on one block.

Prints figures; exits non-zero if more than 1% of codes differ anywhere. Usage (about a minute
on an H100):

    PYTHONPATH=src python bench/gptq_kernel.py --device cuda

CPU smoke test (Triton's interpreter; small shapes, minutes):

    TRITON_INTERPRET=1 PYTHONPATH=src python bench/gptq_kernel.py --device cpu --hidden 128 --layers 1 --block-rows 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from qidlab.quantize import GPTQConfig
from qidlab.quantize import gptq_kernel
from qidlab.quantize.gptq import gptq_quantize_layer_bits


def say(*a):
    print(*a, flush=True)


def shapes(h):
    return {"qkv": (3 * h, h), "attn_out": (h, h), "mlp_up": (4 * h, h), "mlp_down": (h, 4 * h)}


def problem(out, inp, device, seed):
    g = torch.Generator().manual_seed(seed)
    n = 2 * inp
    X = torch.randn(n, inp, generator=g).to(device)
    X = X @ (0.1 * torch.randn(inp, inp, generator=g).to(device) + torch.eye(inp, device=device))
    H = 2 * X.T @ X / n
    W = (0.02 * torch.randn(out, inp, generator=g)).to(device)
    return W, H


def run(mode, W, H, cfg, bits):
    os.environ[gptq_kernel.ENV] = mode
    return gptq_quantize_layer_bits(W, H, cfg, bits)


def timed(device, fn, reps=1):
    """Median wall seconds of ``reps`` calls, synchronizing CUDA around each."""
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def codes(Q, scale, zero, group, cols):
    grp = torch.arange(cols, device=Q.device) // (cols if group is None else group)
    return torch.round(Q / scale[:, grp] + zero[:, grp])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--hidden", type=int, default=768, help="model width (160m: 768)")
    p.add_argument("--layers", type=int, default=12, help="layers of the model timing (160m: 12)")
    p.add_argument("--bits", default="2,3,4")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--block-rows", type=int, default=None, help=f"rows per program (default {gptq_kernel.BLOCK_ROWS})")
    p.add_argument("--num-warps", type=int, default=None, help=f"warps per program (default {gptq_kernel.NUM_WARPS})")
    p.add_argument("--no-eager-model", action="store_true", help="skip timing the whole model eagerly (~15 s on an H100)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    if device.type == "cpu":
        torch.set_num_threads(1)
    gptq_kernel.BLOCK_ROWS = args.block_rows or gptq_kernel.BLOCK_ROWS
    gptq_kernel.NUM_WARPS = args.num_warps or gptq_kernel.NUM_WARPS
    bits = [int(b) for b in args.bits.split(",")]
    import triton

    os.environ[gptq_kernel.ENV] = "auto"
    say(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}, "
        f"triton {triton.__version__}; interpreter {os.environ.get('TRITON_INTERPRET', '0')}; "
        f"auto uses the kernel here: {gptq_kernel.use_kernel(device)}; tile {gptq_kernel.BLOCK_ROWS} rows x "
        f"{gptq_kernel.NUM_WARPS} warps")
    layers = {name: problem(o, i, device, seed) for seed, (name, (o, i)) in enumerate(shapes(args.hidden).items())}
    gs = args.group_size
    grids = {"dynamic groups": GPTQConfig(4, group_size=gs),
             "static groups": GPTQConfig(4, group_size=gs, static_groups=True),
             "act_order": GPTQConfig(4, group_size=gs, act_order=True)}

    say(f"\n1. kernel vs eager, group {gs} (Q: dequantized float32; codes: round(Q/scale + zero))")
    say(f"  {'grid':15s} {'linear':9s} {'shape':12s} bits  {'max|dQ|':>9s}  {'codes differ':>12s}  {'max step':>8s}"
        f"  {'scale rel diff':>14s}")
    worst = 0.0
    eager_ms, kernel_ms = {}, {}
    for mode in ("eager", "triton"):  # warm-up: CUDA context, cuBLAS, the kernel's compilation
        run(mode, *layers["attn_out"], grids["dynamic groups"], bits)
    for gname, cfg in grids.items():
        for name, (W, H) in layers.items():
            t = time.perf_counter()
            ref = run("eager", W, H, cfg, bits)
            if device.type == "cuda":
                torch.cuda.synchronize()
            te = time.perf_counter() - t
            got = run("triton", W, H, cfg, bits)
            for b, (q0, s0, z0), (q1, s1, z1) in zip(bits, ref, got):
                c0, c1 = codes(q0, s0, z0, gs, W.shape[1]), codes(q1, s1, z1, gs, W.shape[1])
                frac = (c0 != c1).float().mean().item()
                worst = max(worst, frac)
                say(f"  {gname:15s} {name:9s} {str(tuple(W.shape)):12s} {b:4d}  {(q1 - q0).abs().max().item():9.2e}"
                    f"  {frac:12.2e}  {(c1 - c0).abs().max().item():8.0f}  {((s1 - s0).abs() / s0).max().item():14.1e}")
            if gname == "dynamic groups":
                eager_ms[name] = 1000 * te

    say(f"\n2. time per linear, all {len(bits)} bit widths in one pass, {list(grids)[0]} (ms; kernel: median of 3)")
    cfg = grids["dynamic groups"]
    for name, (W, H) in layers.items():
        kernel_ms[name] = 1000 * timed(device, lambda: run("triton", W, H, cfg, bits), reps=3)
        say(f"  {name:9s} {tuple(W.shape)}: eager {eager_ms[name]:9.1f} ms   kernel {kernel_ms[name]:8.2f} ms   "
            f"x{eager_ms[name] / kernel_ms[name]:.1f}")
    n_lin = 4 * args.layers

    def model(mode):
        for _ in range(args.layers):
            for W, H in layers.values():
                run(mode, W, H, cfg, bits)

    tk = timed(device, lambda: model("triton"))
    say(f"  {args.layers}-layer model ({n_lin} linears): kernel {1000 * tk:.1f} ms")
    if not args.no_eager_model:
        te = timed(device, lambda: model("eager"))
        say(f"  {args.layers}-layer model ({n_lin} linears): eager  {1000 * te:.1f} ms   x{te / tk:.1f}")
    else:
        say(f"  {args.layers}-layer model, eager estimated from the per-linear times: "
            f"{args.layers * sum(eager_ms.values()):.0f} ms")

    reps = 20 if device.type == "cuda" else 1
    say(f"\n3. the kernel alone on one block of the widest layer (ms per launch, median of {reps})")
    W, H = layers["mlp_up"]
    nb, bs = len(bits), min(128, W.shape[1])
    W1 = W[:, :bs].unsqueeze(0).repeat(nb, 1, 1).float()
    Hinv1 = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(
        H[:bs, :bs] + 0.01 * torch.diag(H).mean() * torch.eye(bs, device=device))), upper=True)
    scale = W1.abs().amax(-1, keepdim=True).expand_as(W1) / 4
    zero = torch.full_like(W1, 8.0)
    maxq = torch.tensor([[2.0**b - 1] for b in bits], device=device)
    tiles = [(8, 2), (16, 4), (32, 4), (64, 8)] if device.type == "cuda" else [(gptq_kernel.BLOCK_ROWS, 4)]
    for rows, warps in tiles:
        t = timed(device, lambda: gptq_kernel.quantize_block(W1, Hinv1, scale, zero, maxq, rows, warps),
                  reps=reps)
        say(f"  {nb}x{W.shape[0]} rows x {bs} columns, tile {rows:3d} rows x {warps} warps: {1000 * t:.3f} ms")
    os.environ[gptq_kernel.ENV] = "auto"
    say(f"\nworst fraction of differing codes: {worst:.2e}" + ("  (OK: <= 1%)" if worst <= 0.01 else "  (TOO MANY)"))
    sys.exit(0 if worst <= 0.01 else 1)


if __name__ == "__main__":
    main()
