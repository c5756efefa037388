"""Benchmark: speed and memory of measuring QiD (evaluate, GPTQ, one checkpoint of a sweep).

Model: a GPT-NeoX built from config (no pretrained weights are used or downloaded) at
Pythia-like shapes (``--shape``), optionally trained for ``--train-steps`` AdamW steps on an
English-like corpus (``tests/tiny_models.tiny_corpus``) so that it has learnt something and
quantizing it visibly raises its loss; then saved as a Hugging Face folder (safetensors) and
loaded with ``qidlab.checkpoints.load_checkpoint`` (bfloat16 on CUDA, float32 on CPU).
Text: ``tiny_corpus`` documents, joined into eval documents of about ``--doc-tokens`` tokens,
tokenized by a byte-level BPE trained with ``tiny_models.train_tokenizer`` (``--tok-vocab``
entries; the model keeps its own, larger, vocabulary). Train, eval and calibration text are
disjoint seeds of the corpus.

  1. eval      ``qidlab.evaluate.score`` over the eval set at each ``--batch-sizes``:
               tokens/s, achieved FLOP/s against the 2 * N_total * tokens forward limit
               (N_total: every parameter incl. embedding and head), peak memory;
  2. gptq      ``quantize_(GPTQConfig(bits, group_size))`` true-sequential vs shared-Hessian
               (``collect_hessians`` once, then ``quantize_(..., hessians=H)`` per bit width on
               restored weights): seconds in total and per linear, and the eval loss of each;
  3. sweep     the per-checkpoint cost of QiD at every bit width: the qidlab way (one load, one
               16-bit eval, calibration ids once [and shared Hessians once], then per bit width
               restore + quantize + eval + paired bootstrap) vs a naive pipeline (per bit width:
               fresh load, calibration and true-sequential GPTQ from scratch, then a separate
               evaluation including its own 16-bit eval). llm-compressor's ``oneshot`` is timed
               too when it is importable. qidlab's ways score in batches of
               ``--qidlab-eval-batch`` (the studies' scoring batch), the per-bit baselines in
               batches of ``--eval-batch`` (a researcher's loop); both default to ``--eval-batch``.

It prints figures and asserts nothing. Usage:

    .venv/bin/python bench/measure_speed.py [--device cpu|cuda] [--shape tiny|70m|160m|410m]
        [--parts eval,gptq,sweep] [--batch-sizes 1,4,8,16] [--n-docs N] [--doc-tokens T]
        [--calib-samples S] [--calib-seq-len L] [--bits 2,3,4] [--train-steps K]
        [--eval-batch B] [--qidlab-eval-batch B] [--json]

``--json`` prints a JSON summary on stdout (the human-readable report then goes to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_models  # noqa: E402  (tests/tiny_models.py: corpus and BPE trainer)

from qidlab.checkpoints import load_checkpoint  # noqa: E402
from qidlab.evaluate import load_eval_set, paired_bootstrap_qid, score  # noqa: E402
from qidlab.quantize import GPTQConfig, collect_hessians, gptq_shared_weights, quantize_  # noqa: E402
from qidlab.quantize import gptq_kernel  # noqa: E402
from qidlab.sweep.run import calibration_ids  # noqa: E402
from qidlab.sweep.study import CalibrationSpec  # noqa: E402

# hidden, layers, heads, vocab, context (Pythia's shapes; tiny for CPU runs)
SHAPES = {
    "tiny": (128, 2, 4, 512, 256),
    "70m": (512, 6, 8, 50304, 2048),
    "160m": (768, 12, 12, 50304, 2048),
    "410m": (1024, 24, 16, 50304, 2048),
    "1b": (2048, 16, 8, 50304, 2048),
}
H100_BF16_PEAK = 989.4e12  # H100 SXM dense bf16 tensor-core peak, FLOP/s

OUT = sys.stdout


def say(*a):
    print(*a, file=OUT, flush=True)


class Clock:
    """Wall-clock seconds of a block, synchronizing CUDA on both ends."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    @contextlib.contextmanager
    def __call__(self, into: dict, key: str):
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        into[key] = into.get(key, 0.0) + time.perf_counter() - t0


def peak_reset(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float:
    """CUDA: max_memory_allocated since the last reset; CPU: the process's ru_maxrss (ever)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---- setup -------------------------------------------------------------------------------


def build_text(tok, n_docs, doc_tokens, seed):
    """``n_docs`` documents of about ``doc_tokens`` tokens: tiny_corpus documents joined by blank lines."""
    pieces = iter(tiny_models.tiny_corpus(n_docs * max(1, doc_tokens // 40) + 100, seed=seed))
    docs = []
    for _ in range(n_docs):
        parts, n = [], 0
        while n < doc_tokens - 1:
            p = next(pieces)
            parts.append(p)
            n += len(tok(p + "\n\n", add_special_tokens=False)["input_ids"])
        docs.append("\n\n".join(parts))
    return docs


def make_checkpoint(args, folder: Path, tok, device):
    """Build (and optionally train) the model; save it as an HF folder; return facts about it."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    hidden, layers, heads, vocab, ctx = SHAPES[args.shape]
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=ctx, rotary_pct=0.25, use_parallel_residual=True,
                        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).to(device)
    info = {"hidden": hidden, "layers": layers, "heads": heads, "vocab": vocab, "context": ctx}
    if args.train_steps:
        info.update(train(model, tok, args, device))
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    model.to(dtype).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "qidlab.json").write_text(json.dumps({"tokens": args.train_steps * args.train_batch * args.train_seq,
                                                    "step": args.train_steps}))
    del model
    return info


def train(model, tok, args, device):
    docs = tiny_models.tiny_corpus(4000, seed=0)
    stream = []
    for d in docs:
        stream += [tok.bos_token_id, *tok(d, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    stream = torch.tensor(stream, dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    cuda = torch.device(device).type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    model.train()
    t0, losses = time.perf_counter(), []
    for step in range(args.train_steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 20)
        starts = torch.randint(0, len(stream) - args.train_seq - 1, (args.train_batch,), generator=gen)
        batch = torch.stack([stream[s:s + args.train_seq] for s in starts.tolist()]).to(device)
        with amp:
            loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    secs = time.perf_counter() - t0
    say(f"trained {args.train_steps} steps ({args.train_batch}x{args.train_seq} tokens) in {secs:.1f}s: "
        f"train loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}")
    return {"train_steps": args.train_steps, "train_seconds": secs, "train_loss_first": losses[0],
            "train_loss_last10": float(np.mean(losses[-10:]))}


# ---- 1. evaluation throughput ----------------------------------------------------------


def bench_eval(args, ckpt, es, device, clock, n_total):
    model, tok = ckpt.model, ckpt.tokenizer
    score(model, tok, es.docs[:4], batch_size=2)  # warm-up (kernels, allocator)
    rows = []
    for bs in args.batch_sizes:
        t = {}
        peak_reset(device)
        try:
            with clock(t, "s"):
                s = score(model, tok, es, batch_size=bs)
        except torch.OutOfMemoryError:
            say(f"  batch {bs}: out of memory")
            rows.append({"batch_size": bs, "oom": True})
            torch.cuda.empty_cache()
            continue
        scored = int(s.n_tokens.sum())
        inputs = scored + len(es.docs) * int(s.settings["bos"])  # model positions run (no padding)
        row = {"batch_size": bs, "seconds": t["s"], "scored_tokens": scored, "input_tokens": inputs,
               "tokens_per_s": scored / t["s"], "peak_gib": peak_gib(device),
               "loss": s.summary()["nats_per_token"]}
        if torch.device(device).type == "cuda":
            flops = 2 * n_total * inputs / t["s"]
            row.update(tflops=flops / 1e12, frac_of_peak=flops / H100_BF16_PEAK)
        rows.append(row)
        say(f"  batch {bs:3d}: {t['s']:7.2f}s  {row['tokens_per_s']:10,.0f} tok/s  peak {row['peak_gib']:6.2f} GiB"
            + (f"  {row['tflops']:6.1f} TFLOP/s = {100 * row['frac_of_peak']:.1f}% of bf16 peak"
               if "tflops" in row else "") + f"  loss {row['loss']:.4f}")
    if torch.device(device).type == "cuda":
        for bs in args.profile_batches:
            try:
                rows.append(profile_batch(model, tok, es.docs, bs, clock))
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
    return rows


def profile_batch(model, tok, docs, bs, clock, reps=3):
    """Where one batch of ``bs`` documents goes: the whole model's forward pass (logits at every
    position) and the float32 cross_entropy of its scored rows (score()'s path for model types
    outside ``PLAIN_HEAD_TYPES``), against score()'s own path: the model's body, then the output
    head on the scored positions in chunks of ``LOGIT_CHUNK_ELEMENTS`` logits, forward and loss
    together. Median of ``reps`` after a warm-up; peak memory of each path."""
    import torch.nn.functional as F

    from qidlab.evaluate.score import _body_and_head, _scored_nll

    seqs = [[tok.bos_token_id] + tok(d, add_special_tokens=False)["input_ids"] for d in docs[:bs]]
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, x in enumerate(seqs):
        ids[r, :len(x)], mask[r, :len(x)] = torch.tensor(x), 1
    dev = next(model.parameters()).device
    ids, mask = ids.to(dev), mask.to(dev)
    scored = mask[:, 1:].bool()
    parts = _body_and_head(model)
    steps = {
        "forward": lambda: model(input_ids=ids, attention_mask=mask, use_cache=False).logits,
        "loss_full_logits": lambda lg: F.cross_entropy(lg[:, :-1][scored].float(), ids[:, 1:][scored],
                                                       reduction="none"),
        "score_chunked_head": lambda: _scored_nll(model, parts, ids, mask, scored),
    }
    times = {k: [] for k in steps}
    peaks = {}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for rep in range(reps + 1):
            t = {}
            peak_reset(dev)
            with clock(t, "forward"):
                lg = steps["forward"]()
            with clock(t, "loss_full_logits"):
                steps["loss_full_logits"](lg)
            peaks["full_logits"] = peak_gib(dev)
            del lg
            if parts is not None:
                peak_reset(dev)
                with clock(t, "score_chunked_head"):
                    steps["score_chunked_head"]()
                peaks["chunked_head"] = peak_gib(dev)
            if rep:
                for k in t:
                    times[k].append(t[k])
    row = {"profile_batch": bs, "seq_len": T, **{k + "_ms": 1000 * float(np.median(v)) for k, v in times.items() if v},
           **{k + "_peak_gib": v for k, v in peaks.items()}}
    say(f"  one batch of {bs} x {T}: whole-model forward {row['forward_ms']:.1f} ms + float32 cross_entropy "
        f"{row['loss_full_logits_ms']:.1f} ms (peak {peaks['full_logits']:.2f} GiB)"
        + (f"; score()'s body + chunked head + loss {row['score_chunked_head_ms']:.1f} ms "
           f"(peak {peaks['chunked_head']:.2f} GiB)" if parts is not None else ""))
    return row


# ---- 2. GPTQ: true-sequential vs shared Hessian ------------------------------------------


def bench_gptq(args, ckpt, es, calib, device, clock):
    model, tok = ckpt.model, ckpt.tokenizer
    state16 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n_lin = None
    out = {"true_sequential": {}, "shared_hessian": {}}
    for bits in args.bits:
        t = {}
        model.load_state_dict(state16)
        peak_reset(device)
        with clock(t, "s"):
            rep = quantize_(model, GPTQConfig(bits=bits, group_size=args.group_size), calib,
                            batch_size=args.calib_batch)
        n_lin = len(rep.modules)
        peak = peak_gib(device)
        loss = score(model, tok, es, batch_size=args.eval_batch).summary()["nats_per_token"]
        out["true_sequential"][bits] = {"seconds": t["s"], "per_linear_s": t["s"] / n_lin, "loss": loss,
                                        "peak_gib": peak, "mean_rel_error": rep.mean_rel_error}
        say(f"  true-sequential {bits}-bit: {t['s']:7.2f}s  ({1000 * t['s'] / n_lin:6.1f} ms/linear, {n_lin} linears)"
            f"  peak {peak:.2f} GiB  loss {loss:.4f}")
    model.load_state_dict(state16)
    t = {}
    peak_reset(device)
    with clock(t, "s"):
        H = collect_hessians(model, calib, batch_size=args.calib_batch)
    out["collect_hessians_s"] = t["s"]
    out["hessians_gib"] = sum(h.numel() * h.element_size() for h in H.values()) / 2**30
    say(f"  collect_hessians: {t['s']:.2f}s ({len(H)} Hessians, {out['hessians_gib']:.2f} GiB float32)")
    for bits in args.bits:
        t = {}
        model.load_state_dict(state16)
        peak_reset(device)
        with clock(t, "s"):
            rep = quantize_(model, GPTQConfig(bits=bits, group_size=args.group_size, shared_hessian=True), hessians=H)
        peak = peak_gib(device)
        loss = score(model, tok, es, batch_size=args.eval_batch).summary()["nats_per_token"]
        ts = out["true_sequential"][bits]
        out["shared_hessian"][bits] = {"seconds": t["s"], "per_linear_s": t["s"] / n_lin, "loss": loss,
                                       "peak_gib": peak, "mean_rel_error": rep.mean_rel_error,
                                       "loss_minus_true_sequential": loss - ts["loss"]}
        say(f"  shared-Hessian  {bits}-bit: {t['s']:7.2f}s  ({1000 * t['s'] / n_lin:6.1f} ms/linear)"
            f"  peak {peak:.2f} GiB  loss {loss:.4f}  (shared - true-seq: {loss - ts['loss']:+.4f} nats)")
    del H
    model.load_state_dict(state16)
    out["n_linears"] = n_lin
    loss16 = score(model, tok, es, batch_size=args.eval_batch).summary()["nats_per_token"]
    out["loss16"] = loss16
    say(f"  16-bit loss {loss16:.4f}; totals over {len(args.bits)} bit widths: true-sequential "
        f"{sum(v['seconds'] for v in out['true_sequential'].values()):.1f}s, shared "
        f"{out['collect_hessians_s'] + sum(v['seconds'] for v in out['shared_hessian'].values()):.1f}s "
        f"(incl. collect_hessians)")
    return out


# ---- 3. per-checkpoint cost of a QiD sweep ----------------------------------------------


def qidlab_way(args, folder, es, spec, device, clock, shared: bool):
    """measure_checkpoint's steps (qidlab/sweep/run.py), on ``device``; optionally shared Hessians.
    Scores in batches of ``--qidlab-eval-batch``."""
    t, qids = {}, {}
    with clock(t, "total"):
        with clock(t, "load"):
            ckpt = load_checkpoint(folder, device=device)
        model, tok = ckpt.model, ckpt.tokenizer
        state16 = {k: v.detach().clone() for k, v in model.state_dict().items()}
        with clock(t, "eval"):
            s16 = score(model, tok, es, batch_size=args.qidlab_eval_batch)
        with clock(t, "calibrate"):
            calib = calibration_ids(tok, spec)
            H = collect_hessians(model, calib, batch_size=args.calib_batch) if shared else None
        if shared:  # as the sweep: every bit width in one pass over the columns
            with clock(t, "quantize"):
                cfg = GPTQConfig(bits=args.bits[0], group_size=args.group_size, shared_hessian=True)
                weights = gptq_shared_weights(model, cfg, args.bits, H)
        for bits in args.bits:
            with clock(t, "restore"):
                model.load_state_dict(state16)
            with clock(t, "quantize"):
                if shared:
                    with torch.no_grad():
                        for name, w in weights.pop(bits).items():
                            model.get_submodule(name).weight.copy_(w)
                else:
                    quantize_(model, GPTQConfig(bits=bits, group_size=args.group_size), calib,
                              batch_size=args.calib_batch)
            with clock(t, "eval"):
                sq = score(model, tok, es, batch_size=args.qidlab_eval_batch)
            with clock(t, "bootstrap"):
                qids[bits] = paired_bootstrap_qid(s16, sq, n_boot=1000, seed=0)
    del model, ckpt, state16, H
    return t, qids


def new_script() -> None:
    """Forget what qidlab caches per process (the calibration draw, eval sets' token ids): each bit
    width of a per-bit pipeline is a script of its own, which starts without them."""
    importlib.import_module("qidlab.sweep.run")._CALIBRATION_CACHE.clear()
    importlib.import_module("qidlab.evaluate.score")._ENCODED.clear()


def naive_way(args, folder, es, spec, device, clock):
    """Per bit width: fresh load, calibration + true-sequential GPTQ, then a separate evaluation
    script (fresh load, 16-bit eval, the quantized weights, quantized eval)."""
    t, qids = {}, {}
    with clock(t, "total"):
        for bits in args.bits:
            new_script()
            with clock(t, "load"):
                ckpt = load_checkpoint(folder, device=device)
            with clock(t, "calibrate"):
                calib = calibration_ids(ckpt.tokenizer, spec)
            with clock(t, "quantize"):
                quantize_(ckpt.model, GPTQConfig(bits=bits, group_size=args.group_size), calib,
                          batch_size=args.calib_batch)
                qstate = {k: v.detach().clone() for k, v in ckpt.model.state_dict().items()}  # "saved"
            del ckpt
            qids[bits] = separate_eval(args, folder, es, device, clock, t, qstate)
    return t, qids


def separate_eval(args, folder, es, device, clock, t, qstate):
    """The "evaluation script" of a per-bit pipeline: fresh load, 16-bit eval, the quantized
    weights ``qstate`` loaded (the saved quantized checkpoint), quantized eval, paired bootstrap."""
    with clock(t, "load"):
        ref = load_checkpoint(folder, device=device)
    with clock(t, "eval"):
        s16 = score(ref.model, ref.tokenizer, es, batch_size=args.eval_batch)
    with clock(t, "restore"):
        ref.model.load_state_dict(qstate, strict=False)
    with clock(t, "eval"):
        sq = score(ref.model, ref.tokenizer, es, batch_size=args.eval_batch)
    with clock(t, "bootstrap"):
        return paired_bootstrap_qid(s16, sq, n_boot=1000, seed=0)


def llmcompressor_way(args, folder, es, spec, device, clock):
    """The pipeline a researcher writes with llm-compressor, per bit width: fresh load, oneshot
    GPTQ (actorder none, dampening 0.01, the same scheme as ours: symmetric int, group size), then
    a separate evaluation (fresh 16-bit load and eval, the quantized weights, quantized eval).
    llm-compressor keeps fake-quantized weights in the model after oneshot (compression happens
    only on save), so its quantized weights are taken from the model as they are."""
    try:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier
    except Exception as exc:  # not installed (it pins its own transformers)
        return None, {"available": False, "reason": f"{type(exc).__name__}: {exc}"[:300]}
    from torch.utils.data import DataLoader

    t, qids = {}, {}
    try:
        with clock(t, "total"):
            for bits in args.bits:
                new_script()
                with clock(t, "load"):
                    ckpt = load_checkpoint(folder, device=device)
                with clock(t, "calibrate"):
                    calib = calibration_ids(ckpt.tokenizer, spec)
                    # a DataLoader goes to oneshot as is (no datasets fingerprinting, whose dill
                    # fails on Python 3.12 + pyarrow 26); batch 1 and the samples as llm-compressor's own
                    ds = DataLoader([{"input_ids": row, "attention_mask": torch.ones_like(row)} for row in calib],
                                    batch_size=1)
                weights = {"num_bits": bits, "type": "int", "symmetric": True, "strategy": "group",
                           "group_size": args.group_size}
                recipe = GPTQModifier(config_groups={"g0": {"targets": ["Linear"], "weights": weights}},
                                      ignore=["lm_head", "embed_out"], actorder=None, dampening_frac=0.01)
                with clock(t, "quantize"):
                    oneshot(model=ckpt.model, dataset=ds, recipe=recipe, max_seq_length=calib.shape[1],
                            num_calibration_samples=calib.shape[0])
                    qstate = {k: v.detach().clone() for k, v in ckpt.model.state_dict().items()
                              if k.endswith(".weight")}
                del ckpt
                qids[bits] = separate_eval(args, folder, es, device, clock, t, qstate)
    except Exception as exc:
        return None, {"available": True, "error": f"{type(exc).__name__}: {exc}"[:500]}
    import llmcompressor

    return (t, qids), {"available": True, "version": getattr(llmcompressor, "__version__", "?")}


def bench_sweep(args, folder, es, spec, device, clock):
    out = {}
    ways = (("qidlab_true_sequential", lambda: qidlab_way(args, folder, es, spec, device, clock, False)),
            ("qidlab_shared_hessian", lambda: qidlab_way(args, folder, es, spec, device, clock, True)),
            ("naive_true_sequential", lambda: naive_way(args, folder, es, spec, device, clock)),
            ("llmcompressor_then_eval", lambda: llmcompressor_way(args, folder, es, spec, device, clock)))
    for name, fn in ways:
        if name == "qidlab_shared_hessian" and not args.sweep_shared:
            continue
        if args.ways and name not in args.ways:
            continue
        if name == "llmcompressor_then_eval" and not args.llmcompressor:
            continue
        peak_reset(device)
        result = fn()
        if name == "llmcompressor_then_eval":
            result, info = result
            out["llmcompressor"] = info
            if result is None:
                say(f"  {name:24s} " + (info.get("error") or f"not available ({info['reason']})"))
                continue
        t, qids = result
        eval_batch = args.qidlab_eval_batch if name.startswith("qidlab") else args.eval_batch
        out[name] = {"seconds": t, "qid": {b: {"qid": q[0], "ci": [q[1], q[2]]} for b, q in qids.items()},
                     "peak_gib": peak_gib(device), "eval_batch": eval_batch}
        parts = "  ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total")
        say(f"  {name:24s} total {t['total']:7.1f}s  ({parts}; eval batch {eval_batch})")
        say("      QiD " + "  ".join(f"{b}-bit {q[0]:.4f} [{q[1]:.4f}, {q[2]:.4f}]" for b, q in qids.items()))
    for base_name in ("naive_true_sequential", "llmcompressor_then_eval"):
        if base_name not in out:
            continue
        base = out[base_name]["seconds"]["total"]
        for name in [n for n in out if n.startswith("qidlab")]:
            out[name][f"{base_name}_over_this"] = base / out[name]["seconds"]["total"]
        say(f"  {base_name} / qidlab: " + ", ".join(f"{n} x{out[n][base_name + '_over_this']:.2f}"
                                                  for n in out if n.startswith("qidlab")))
    q1 = out.get("qidlab_true_sequential", {}).get("qid")
    for other in ("naive_true_sequential", "llmcompressor_then_eval"):
        if other in out and q1 is not None:
            q2 = out[other]["qid"]
            say(f"  QiD (qidlab true-seq) - QiD ({other}): "
                + ", ".join(f"{b}-bit {q1[b]['qid'] - q2[b]['qid']:+.5f}" for b in q1))
    return out


# ---- main --------------------------------------------------------------------------------


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    if "--json" in sys.argv:
        _stdout_to_stderr()
    global OUT
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shape", default=None, choices=list(SHAPES), help="default: tiny on CPU, 160m on CUDA")
    p.add_argument("--parts", default="eval,gptq,sweep")
    p.add_argument("--batch-sizes", type=ints, default=None, help="eval batch sizes to sweep (default 1,4,8,16; CPU 1,8)")
    p.add_argument("--profile-batches", type=ints, default=[8, 32],
                   help="CUDA: batch sizes to break down (full logits vs score()'s chunked head)")
    p.add_argument("--eval-batch", type=int, default=8,
                   help="batch size of the evals inside part 2 and of part 3's baselines (naive, llm-compressor)")
    p.add_argument("--qidlab-eval-batch", type=int, default=None,
                   help="part 3: batch size of qidlab's own ways' evals (default: --eval-batch)")
    p.add_argument("--n-docs", type=int, default=None, help="eval documents (default 256; CPU 64)")
    p.add_argument("--doc-tokens", type=int, default=None, help="approximate tokens per eval document (default 1024; CPU 200)")
    p.add_argument("--tok-vocab", type=int, default=None, help="BPE vocabulary (default min(4096, model vocab))")
    p.add_argument("--calib-samples", type=int, default=None, help="default 128; CPU 16")
    p.add_argument("--calib-seq-len", type=int, default=None, help="default 2048; CPU 128")
    p.add_argument("--calib-batch", type=int, default=8)
    p.add_argument("--bits", type=ints, default=[2, 3, 4])
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--train-steps", type=int, default=None, help="default 300; CPU 100 (0: random weights)")
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--train-seq", type=int, default=None, help="default 512; CPU 64")
    p.add_argument("--lr", type=float, default=None, help="default 6e-4 (CPU 3e-3)")
    p.add_argument("--no-sweep-shared", dest="sweep_shared", action="store_false",
                   help="part 3 without the shared-Hessian qidlab variant")
    p.add_argument("--ways", type=lambda v: [w for w in v.split(",") if w], default=None,
                   help="part 3: only these pipelines (qidlab_true_sequential, qidlab_shared_hessian, "
                        "naive_true_sequential, llmcompressor_then_eval)")
    p.add_argument("--no-llmcompressor", dest="llmcompressor", action="store_false",
                   help="skip the llm-compressor-then-evaluate pipeline of part 3")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --device cpu, as tests/tiny_models; else torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cpu = args.device == "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    args.shape = args.shape or ("tiny" if cpu else "160m")
    args.qidlab_eval_batch = args.qidlab_eval_batch or args.eval_batch
    args.batch_sizes = args.batch_sizes or ([1, 8] if cpu else [1, 4, 8, 16])
    args.n_docs = args.n_docs or (64 if cpu else 256)
    args.doc_tokens = args.doc_tokens or (200 if cpu else 1024)
    args.calib_samples = args.calib_samples or (16 if cpu else 128)
    args.calib_seq_len = args.calib_seq_len or (128 if cpu else 2048)
    args.train_steps = (100 if cpu else 300) if args.train_steps is None else args.train_steps
    args.train_seq = args.train_seq or (64 if cpu else 512)
    args.lr = args.lr or (3e-3 if cpu else 6e-4)
    args.tok_vocab = args.tok_vocab or min(4096, SHAPES[args.shape][3])
    parts = set(args.parts.split(","))
    args.threads = args.threads or (1 if cpu else None)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json:
        OUT = sys.stderr
    device = args.device
    clock = Clock(device)

    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "device": torch.cuda.get_device_name() if not cpu else platform.processor() or platform.machine(),
           # GPTQ's column loop: the Triton block kernel or the eager loop (env QIDLAB_GPTQ_KERNEL)
           "gptq_kernel": {"mode": gptq_kernel.mode(), "triton_kernel": gptq_kernel.use_kernel(torch.device(device))}}
    say(f"env: {env}")
    result = {"env": env, "args": {k: v for k, v in vars(args).items()}}
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="qidlab-bench-") as tmp:
        tok = tiny_models.train_tokenizer(tiny_models.tiny_corpus(2000, seed=0), args.tok_vocab)
        folder = Path(tmp) / "ckpt"
        result["model"] = make_checkpoint(args, folder, tok, device)
        docs = build_text(tok, args.n_docs, args.doc_tokens, seed=1)
        es = load_eval_set(docs, n_docs=None, name="bench")
        (Path(tmp) / "calib.txt").write_text("\n\n".join(tiny_models.tiny_corpus(3000, seed=2)))
        spec = CalibrationSpec(source=Path(tmp) / "calib.txt", n_samples=args.calib_samples,
                               seq_len=args.calib_seq_len, seed=0)
        t = {}
        with clock(t, "load"):
            ckpt = load_checkpoint(folder, device=device)
        n_total, n_nonemb = ckpt.n_params_total, ckpt.n_params
        result["model"].update(n_params_total=n_total, n_params_nonembedding=n_nonemb, load_s=t["load"],
                               dtype=str(next(ckpt.model.parameters()).dtype))
        calib = calibration_ids(ckpt.tokenizer, spec)
        n_tok = sum(len(ckpt.tokenizer(d, add_special_tokens=False)["input_ids"]) for d in docs)
        result["eval_set"] = {"n_docs": len(docs), "tokens": n_tok, "bytes": sum(len(d.encode()) for d in docs)}
        say(f"model: GPT-NeoX {args.shape} {result['model']}")
        say(f"eval set: {len(docs)} docs, {n_tok} tokens; calibration {tuple(calib.shape)}")

        if "eval" in parts:
            say(f"\n1. evaluation throughput (score(); bf16 autocast on CUDA; float32 logits of the scored positions; "
                f"FLOP limit 2*N_total*tokens, N_total={n_total:,})")
            result["eval"] = bench_eval(args, ckpt, es, device, clock, n_total)
        if "gptq" in parts:
            say(f"\n2. GPTQ (group_size={args.group_size}, calibration {tuple(calib.shape)}): true-sequential vs shared Hessian")
            result["gptq"] = bench_gptq(args, ckpt, es, calib, device, clock)
        del ckpt
        if "sweep" in parts:
            say(f"\n3. one checkpoint of a QiD sweep, GPTQ at {args.bits} bits (eval batch: qidlab's ways "
                f"{args.qidlab_eval_batch}, the baselines {args.eval_batch})")
            result["sweep"] = bench_sweep(args, folder, es, spec, device, clock)
    result["wall_s"] = time.perf_counter() - t_start
    say(f"\nwall time {result['wall_s']:.1f}s")
    if args.json:
        print(json.dumps(result, indent=1, default=str), file=JSON_OUT, flush=True)


#: where --json goes: the process's real stdout. main() points file descriptor 1 at stderr, so
#: that libraries printing to stdout (llm-compressor's loguru) cannot mix into the JSON.
JSON_OUT = sys.stdout


def _stdout_to_stderr() -> None:
    global JSON_OUT
    sys.stdout.flush()
    JSON_OUT = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)


if __name__ == "__main__":
    main()
