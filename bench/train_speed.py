"""Benchmark: training speed of the suite trainer's update (tokens/s and MFU).

Builds a GPT-NeoX with the trainer's own ``qidlab.train.engine`` (``build_model``, fused AdamW on
CUDA, bf16 autocast, SDPA attention, optional ``torch.compile``) and runs ``--warmup-steps`` updates
(not timed: compilation, allocator warm-up), then ``--steps`` timed updates with no host
synchronisation inside the timed stretch (the losses stay on the device until the end). Tokens are
random ids (``--vocab``), or consecutive sequences of a token file (``--tokens``: a ``tokens.bin``
of a suite's ``_data``, whose ``data.json`` gives its dtype; or ``--tokens-dtype``).

The default shape (``--shape base``: hidden 768, 8 layers, 12 heads, MLP 3072, vocab 50,304) has
56.7M non-embedding parameters; ``--shape tiny`` (hidden 64, 2 layers) runs on a CPU in seconds.
MFU uses ``qidlab.train.speed``: ``flops_per_token = 6 N + 6 V h + 12 L h T`` against the device's
dense bf16 peak (H100 SXM / H200: 989 TFLOP/s; ``--peak-tflops`` overrides; none on a CPU).

It prints figures and asserts nothing. Usage:

    python bench/train_speed.py [--device auto|cpu|cuda] [--shape base|tiny] [--hidden H --layers L
        --heads A --vocab V] [--batch-size B] [--seq-len T] [--steps S] [--warmup-steps W] [--compile]
        [--precision bitnet-b1.58] [--tokens PATH] [--peak-tflops X] [--threads N] [--out result.json]

Needs only torch and transformers (and qidlab: the ``src`` folder next to this one is put on the path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPES = {"base": dict(hidden=768, layers=8, heads=12, vocab=50304, batch_size=16, seq_len=1024),
          "tiny": dict(hidden=64, layers=2, heads=4, vocab=512, batch_size=4, seq_len=64)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Training speed of the suite trainer's update (tokens/s, MFU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--shape", choices=SHAPES, default="base")
    for key in ("hidden", "layers", "heads", "vocab", "batch-size", "seq-len"):
        p.add_argument(f"--{key}", type=int, help="overrides the shape's")
    p.add_argument("--steps", type=int, default=20, help="timed updates")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed updates first (compilation)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--precision", help="a low-bit preset to train with (bitnet-b1.58)")
    p.add_argument("--tokens", type=Path, help="token file (default: random ids)")
    p.add_argument("--tokens-dtype", help="dtype of --tokens when no data.json is beside it (uint16, uint32)")
    p.add_argument("--peak-tflops", type=float)
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    for key, value in SHAPES[args.shape].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def token_batches(args, n: int):
    """``n`` CPU batches (B, T) of int64 ids: consecutive sequences of ``--tokens``, or seeded random ids."""
    import numpy as np
    import torch

    shape = (args.batch_size, args.seq_len)
    if args.tokens is None:
        gen = torch.Generator().manual_seed(args.seed)
        return [torch.randint(0, args.vocab, shape, generator=gen) for _ in range(n)]
    info = args.tokens.parent / "data.json"
    dtype = args.tokens_dtype or (json.loads(info.read_text())["dtype"] if info.is_file() else "uint16")
    tokens = np.memmap(args.tokens, dtype=dtype, mode="r")
    per = args.batch_size * args.seq_len
    if tokens.shape[0] < per:
        raise SystemExit(f"{args.tokens}: {tokens.shape[0]} tokens, fewer than one batch ({per})")
    out = []
    for i in range(n):
        start = (i * per) % (tokens.shape[0] - per + 1)
        ids = torch.from_numpy(np.asarray(tokens[start:start + per], dtype=np.int64)).view(shape)
        out.append(ids.clamp(max=args.vocab - 1))
    return out


def run(args) -> dict:
    import torch
    import transformers

    from qidlab.checkpoints.params import count_params
    from qidlab.train.config import ModelSpec
    from qidlab.train.engine import Clock, build_model, device_name, make_optimizer, make_update, resolve_device
    from qidlab.train.precision import parse_qat
    from qidlab.train.speed import flops_per_token, mfu, peak_flops

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    qat = parse_qat(args.precision, None, "--precision")
    spec = ModelSpec(name="bench", hidden=args.hidden, layers=args.layers, heads=args.heads, lr=3e-4,
                     intermediate=4 * args.hidden, qat=qat)
    model = build_model(spec, args.vocab, args.seq_len, args.seed).to(device).train()
    n_nonembed, n_total = count_params(model)
    opt = make_optimizer(model, spec.lr, 0.01, device)
    update = make_update(model, opt, device, grad_clip=1.0, compile=args.compile)
    batches = token_batches(args, args.warmup_steps + args.steps)
    t0 = time.perf_counter()
    for batch in batches[:args.warmup_steps]:
        update(batch, spec.lr)
    clock = Clock(device)
    clock.start()
    warm_seconds = time.perf_counter() - t0
    losses = [update(batch, spec.lr) for batch in batches[args.warmup_steps:]]  # no host sync in here
    clock.stop()
    tokens_per_s = args.steps * args.batch_size * args.seq_len / clock.seconds
    fpt = flops_per_token(n_nonembed, args.vocab, args.hidden, args.layers, args.seq_len)
    peak = peak_flops(device_name(device), args.peak_tflops) if device.type == "cuda" else None
    return {"device": device_name(device), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "vocab": args.vocab,
                      "n_params_nonembedding": n_nonembed, "n_params_total": n_total,
                      "precision": qat.label() if qat else None},
            "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
            "warmup_steps": args.warmup_steps, "warmup_seconds": warm_seconds, "compile": args.compile,
            "autocast": "bfloat16" if device.type == "cuda" else None,
            "tokens": str(args.tokens) if args.tokens else "random", "seconds": clock.seconds,
            "tokens_per_s": tokens_per_s, "flops_per_token": fpt,
            "achieved_tflops": tokens_per_s * fpt / 1e12, "peak_tflops": None if peak is None else peak / 1e12,
            "mfu": mfu(tokens_per_s, fpt, peak), "first_loss": float(losses[0]), "last_loss": float(losses[-1]),
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def report(r: dict) -> str:
    m = r["model"]
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (no known peak)"
    return (f"{r['device']} | torch {r['torch']}, transformers {r['transformers']}\n"
            f"model: hidden {m['hidden']}, {m['layers']} layers, {m['heads']} heads, vocab {m['vocab']}: "
            f"N = {m['n_params_nonembedding'] / 1e6:.1f}M non-embedding ({m['n_params_total'] / 1e6:.1f}M total)"
            f"{', ' + m['precision'] if m['precision'] else ''}\n"
            f"batch {r['batch_size']} x {r['seq_len']} tokens, {r['steps']} timed steps after {r['warmup_steps']} "
            f"(warm-up {r['warmup_seconds']:.1f} s), compile={r['compile']}, autocast={r['autocast']}\n"
            f"tokens/s: {r['tokens_per_s']:,.0f}   model TFLOP/s: {r['achieved_tflops']:.1f}   MFU: {mfu}\n"
            f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(report(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{args.out.name}-", dir=args.out.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=1)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
