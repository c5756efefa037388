"""Benchmark: one checkpoint measured as a QiD sweep does, at each of Pythia's shapes (issue 14).

Models: GPT-NeoX with the hidden size, layers, heads and vocabulary of Pythia 160m ... 12b (built
from transformers' ``GPTNeoXConfig``: nothing is downloaded), random weights, made directly on the
device in bfloat16 (float32 on CPU). ``--tiny``: a 2-block model on the CPU, seconds in all (the
test's mode). Text: ``tests/tiny_models.tiny_corpus`` documents joined into ``--docs`` eval
documents of about ``--doc-tokens`` tokens, tokenized by a byte-level BPE of ``--tok-vocab``
entries (the model keeps Pythia's vocabulary); calibration: ``--calib-samples`` x ``--calib-len``
token windows drawn by the sweep's own ``calibration_ids`` from other documents of the corpus.

Stages per size, each through qidlab's own functions, timed (CUDA synchronized) with the peak
device memory since a reset before it (``torch.cuda.max_memory_allocated``; CPU: the process's
peak RSS, a high-water mark over the whole run):

  load             ``save_pretrained`` to a temporary folder (not counted), then
                   ``qidlab.checkpoints.load_checkpoint`` (``--load``; without it the built model
                   is measured and load is left out);
  snapshot         ``snapshot_weights``: the linears' 16-bit weights into (pinned) host memory;
  score16          one 16-bit scoring pass, ``qidlab.evaluate.score`` (``--eval-batch``);
  hessians, gptq   ``gptq_shared_blockwise``: the block passes collecting each block's Hessians
                   (``--hessian-dtype`` products) and GPTQ of every ``--bits`` width in one column
                   pass per layer, block by block (one peak for the two: they interleave);
  restore, score_quantized   per bit width: ``restore_weights`` of its weights, then a scoring pass
                   (seconds summed over the widths; each width's loss and QiD in ``per_bits``).

The table also gives the host memory high-water mark (``ru_maxrss``: the pinned 16-bit snapshot
and every width's weights live there), how many layers needed more damping than 0.01 ("damp>")
and how many fell back to round-to-nearest ("rtn", ``--on-failure rtn``, the default here so that
an unattended run finishes).

Seconds per checkpoint = the sum of the stages. The paper's study (sizes 160m, 410m, 1b, 2.8b,
6.9b, 12b x 20 checkpoints, download time left out) is estimated from the measured sizes; a size not
measured is scaled from the measured one nearest in non-embedding parameters, in proportion to
them, and marked so.

It prints a table, writes ``--out`` (JSON) and asserts nothing. Usage:

    PYTHONPATH=src python bench/pythia_shapes.py --device cuda --load --out pythia-shapes.json \\
        [--sizes 160m,410m,1b,1.4b,2.8b,6.9b,12b] [--docs 1000] [--doc-tokens 1000] [--eval-batch 32]
        [--calib-samples 128] [--calib-len 2048] [--hessian-dtype float32|tf32|bf16] [--bits 2,3,4]
    PYTHONPATH=src python bench/pythia_shapes.py --tiny --load --out tiny.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402  (tests/tiny_models.py: corpus and BPE trainer)
from measure_speed import Clock, build_text, peak_gib, peak_reset  # noqa: E402

from qidlab import provenance  # noqa: E402
from qidlab.checkpoints import load_checkpoint  # noqa: E402
from qidlab.errors import QidlabError  # noqa: E402
from qidlab.evaluate import load_eval_set, score  # noqa: E402
from qidlab.quantize import GPTQConfig  # noqa: E402
from qidlab.quantize.gptq_blockwise import gptq_shared_blockwise, restore_weights, snapshot_weights  # noqa: E402
from qidlab.sweep.run import calibration_ids  # noqa: E402
from qidlab.sweep.study import CalibrationSpec  # noqa: E402

#: Pythia's shapes (hidden, layers, heads, vocabulary), from the models' config.json; context 2048,
#: rotary 25%, parallel residual, untied head, MLP 4 x hidden. "tiny" is for CPU runs.
SHAPES = {
    "tiny": (64, 2, 4, 512),
    "160m": (768, 12, 12, 50304),
    "410m": (1024, 24, 16, 50304),
    "1b": (2048, 16, 8, 50304),
    "1.4b": (2048, 24, 16, 50304),
    "2.8b": (2560, 32, 32, 50304),
    "6.9b": (4096, 32, 32, 50432),
    "12b": (5120, 36, 40, 50688),
}
PAPER_SIZES = ("160m", "410m", "1b", "2.8b", "6.9b", "12b")
PAPER_CHECKPOINTS = 20
STAGES = ("load", "snapshot", "score16", "hessians", "gptq", "restore", "score_quantized")
H100_BF16_PEAK = 989.4e12  # dense bf16 tensor-core peak of an H100 SXM, FLOP/s (H200: the same)


def say(*a) -> None:
    print(*a, flush=True)


def nonembedding_params(size: str) -> int:
    """Parameters of the blocks (QKV, attention out, MLP in and out with biases, two LayerNorms)."""
    h, layers, _, _ = SHAPES[size]
    return layers * (12 * h * h + 13 * h)


# ---- setup -------------------------------------------------------------------------------


def build_model(size: str, device: str, seed: int):
    """A Pythia-shaped GPT-NeoX with random weights, made on ``device`` in bf16 (float32 on CPU)."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    h, layers, heads, vocab = SHAPES[size]
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * h, max_position_embeddings=2048 if size != "tiny" else 256,
                        rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
                        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.to(device).eval()


def save_checkpoint(model, tok, folder: Path) -> None:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "qidlab.json").write_text(json.dumps({"tokens": 0, "step": 0}))


def text_inputs(args, tmp: Path):
    """The BPE tokenizer, the eval set and the calibration spec (``calibration_ids`` draws from it)."""
    tok = tiny_models.train_tokenizer(tiny_models.tiny_corpus(2000, seed=0), args.tok_vocab)
    es = load_eval_set(build_text(tok, args.docs, args.doc_tokens, seed=1), n_docs=None, name="bench")
    per_doc = 70  # tokens of a tiny_corpus document, about
    n_calib_docs = 2 * args.calib_samples * args.calib_len // per_doc + 100
    (tmp / "calib.txt").write_text("\n\n".join(tiny_models.tiny_corpus(n_calib_docs, seed=2)))
    spec = CalibrationSpec(source=tmp / "calib.txt", n_samples=args.calib_samples, seq_len=args.calib_len, seed=0)
    return tok, es, spec


# ---- one size ----------------------------------------------------------------------------


class Stages:
    """Seconds and peak device GiB per stage (``STAGES``), timed by ``Clock``."""

    def __init__(self, device: str):
        self.device, self.clock, self.rows = device, Clock(device), {}

    def run(self, name: str, fn, *args, **kw):
        peak_reset(self.device)
        t: dict = {}
        with self.clock(t, "s"):
            out = fn(*args, **kw)
        row = self.rows.setdefault(name, {"seconds": 0.0, "peak_gib": 0.0})
        row["seconds"] += t["s"]
        row["peak_gib"] = max(row["peak_gib"], peak_gib(self.device))
        return out


def measure_size(size: str, args, tok, es, spec, tmp: Path) -> dict:
    """Every stage of one checkpoint at ``size``: ``{"stages": {stage: {seconds, peak_gib}}, ...}``."""
    dev = args.device
    st = Stages(dev)
    t0 = time.perf_counter()
    model = build_model(size, dev, args.seed)
    out = {"size": size, "shape": dict(zip(("hidden", "layers", "heads", "vocab"), SHAPES[size])),
           "build_s": time.perf_counter() - t0}
    if args.load:
        folder = tmp / f"ckpt-{size}"
        t0 = time.perf_counter()
        save_checkpoint(model, tok, folder)
        out["save_s"] = time.perf_counter() - t0
        del model
        _free()
        model = st.run("load", load_checkpoint, folder, device=dev).model
    else:
        st.rows["load"] = {"seconds": None, "peak_gib": None, "skipped": "no --load"}
    out["n_params_total"] = sum(p.numel() for p in model.parameters())
    out["n_params_nonembedding"] = nonembedding_params(size)
    calib = calibration_ids(tok, spec)
    pin = False if args.no_pin else None
    snap = st.run("snapshot", snapshot_weights, model, pin=pin)
    s16 = st.run("score16", score, model, tok, es, batch_size=args.eval_batch)
    scored = int(s16.n_tokens.sum())
    out.update(loss16=s16.loss(), scored_tokens=scored)
    out["score16_tflops"] = 2 * out["n_params_total"] * (scored + len(es.docs)) / st.rows["score16"]["seconds"] / 1e12
    cfg = GPTQConfig(max(args.bits), group_size=args.group_size, shared_hessian=True)
    timings: dict = {}
    shared = st.run("hessians", gptq_shared_blockwise, model, cfg, args.bits, calib, batch_size=args.calib_batch,
                    precision=args.hessian_dtype, on_failure=args.on_failure, pin=pin, timings=timings)
    st.rows["gptq"] = {"seconds": timings["gptq_s"], "peak_gib": st.rows["hessians"]["peak_gib"],
                       "note": "peak shared with hessians (they interleave block by block)"}
    st.rows["hessians"]["seconds"] = timings["hessians_s"]
    out.update(damp_raised={n: d for n, d in shared.damp.items() if d is not None and d > cfg.damp},
               fallback=shared.fallback, n_linears=len(shared.damp))
    out["per_bits"] = {}
    for b in args.bits:
        st.run("restore", restore_weights, model, shared.weights.pop(b))
        sq = st.run("score_quantized", score, model, tok, es, batch_size=args.eval_batch)
        out["per_bits"][b] = {"loss": sq.loss(), "qid": sq.loss() - out["loss16"]}
    restore_weights(model, snap)
    out["stages"] = {k: st.rows[k] for k in STAGES}
    out["seconds_per_checkpoint"] = sum(r["seconds"] or 0.0 for r in out["stages"].values())
    out["peak_gib"] = max(r["peak_gib"] or 0.0 for r in out["stages"].values())
    out["host_peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process high-water mark
    return out


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the study estimate and the table ------------------------------------------------------


def study_estimate(rows: list[dict]) -> dict | None:
    """GPU-hours of the paper's study (``PAPER_SIZES`` x ``PAPER_CHECKPOINTS``) from the measured
    seconds per checkpoint; unmeasured sizes scaled by non-embedding parameters from the nearest
    measured size. None when no Pythia size was measured."""
    measured = {r["size"]: r["seconds_per_checkpoint"] for r in rows if "error" not in r and r["size"] in SHAPES
                and r["size"] != "tiny"}
    if not measured:
        return None
    per_size = {}
    for s in PAPER_SIZES:
        if s in measured:
            per_size[s] = {"seconds_per_checkpoint": measured[s], "from": "measured"}
            continue
        n = nonembedding_params(s)
        near = min(measured, key=lambda m: abs(math.log(n / nonembedding_params(m))))
        per_size[s] = {"seconds_per_checkpoint": measured[near] * n / nonembedding_params(near),
                       "from": f"scaled from {near}"}
    secs = sum(v["seconds_per_checkpoint"] for v in per_size.values()) * PAPER_CHECKPOINTS
    return {"sizes": per_size, "checkpoints_per_size": PAPER_CHECKPOINTS, "gpu_hours": secs / 3600}


def print_table(rows: list[dict], estimate: dict | None) -> None:
    head = ("size", "load s", "score16 s", "TFLOP/s", "hessians s", "gptq s", "quant. scores s", "peak GiB",
            "host GiB", "s/ckpt", "damp>", "rtn")
    say("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        if "error" in r:
            say(f"| {r['size']} | " + r["error"][:120] + " |" + " |" * (len(head) - 2))
            continue
        s = r["stages"]

        def sec(k):
            return "-" if s[k]["seconds"] is None else f"{s[k]['seconds']:.2f}"

        say(f"| {r['size']} | {sec('load')} | {sec('score16')} | {r['score16_tflops']:.0f} | {sec('hessians')} | "
            f"{sec('gptq')} | {sec('score_quantized')} | {r['peak_gib']:.1f} | {r['host_peak_gib']:.1f} | "
            f"{r['seconds_per_checkpoint']:.1f} | "
            f"{len(r['damp_raised'])} | {len(r['fallback'])} |")
    if estimate:
        say(f"\npaper's study ({len(PAPER_SIZES)} sizes x {PAPER_CHECKPOINTS} checkpoints): "
            f"{estimate['gpu_hours']:.2f} GPU-hours (" + ", ".join(
                f"{k}: {v['seconds_per_checkpoint']:.0f} s {v['from']}" for k, v in estimate["sizes"].items()) + ")")


# ---- main --------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=None, help=f"comma list of {', '.join(SHAPES)} "
                   "(default: every Pythia size on CUDA; tiny with --tiny)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tiny", action="store_true", help="CPU, the tiny shape, a few documents: seconds in all")
    p.add_argument("--load", action="store_true", help="time save_pretrained + load_checkpoint (else load is left out)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument("--docs", type=int, default=None, help="eval documents (default 1000; tiny 8)")
    p.add_argument("--doc-tokens", type=int, default=None,
                   help="tokens per eval document, about (default 1000; tiny 48)")
    p.add_argument("--eval-batch", type=int, default=None, help="scoring batch (default 32; tiny 4)")
    p.add_argument("--calib-samples", type=int, default=None, help="default 128; tiny 4")
    p.add_argument("--calib-len", type=int, default=None, help="default 2048; tiny 64")
    p.add_argument("--calib-batch", type=int, default=8, help="calibration samples per forward pass")
    p.add_argument("--bits", type=lambda v: [int(x) for x in v.split(",")], default=[2, 3, 4])
    p.add_argument("--group-size", type=int, default=None, help="default 128; tiny 32")
    p.add_argument("--hessian-dtype", default="float32", choices=["float32", "tf32", "bf16"],
                   help="precision of the X^T X products (float32 sums in every case)")
    p.add_argument("--on-failure", default="rtn", choices=["error", "rtn"],
                   help="a layer whose GPTQ fails: stop, or round it to nearest (counted in the table)")
    p.add_argument("--no-pin", action="store_true",
                   help="host copies (16-bit snapshot, every width's weights) in pageable memory: for hosts "
                        "with less RAM than about (1 + len(bits)) x the model's linears")
    p.add_argument("--tok-vocab", type=int, default=None, help="BPE vocabulary (default 4096; tiny 256)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    tiny = args.tiny

    def default(name, big, small):
        if getattr(args, name) is None:
            setattr(args, name, small if tiny else big)

    for name, big, small in (("sizes", ",".join(s for s in SHAPES if s != "tiny"), "tiny"), ("docs", 1000, 8),
                             ("doc_tokens", 1000, 48), ("eval_batch", 32, 4), ("calib_samples", 128, 4),
                             ("calib_len", 2048, 64), ("group_size", 128, 32), ("tok_vocab", 4096, 256)):
        default(name, big, small)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes if s not in SHAPES]
    if unknown:
        p.error(f"unknown sizes {unknown}; choose from {', '.join(SHAPES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    return args


def environment(args) -> dict:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": provenance.device_name(args.device),
            "code_revision": provenance.code_revision()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    result = {"env": environment(args), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                 for k, v in vars(args).items()}, "sizes": []}
    say(f"env: {result['env']}")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qidlab-pythia-") as tmp:
        tok, es, spec = text_inputs(args, Path(tmp))
        say(f"eval set: {len(es.docs)} docs; calibration {args.calib_samples} x {args.calib_len}; "
            f"GPTQ {args.bits} bits, group {args.group_size}, Hessian products {args.hessian_dtype}")
        for size in args.sizes:
            say(f"\n== {size}")
            try:
                row = measure_size(size, args, tok, es, spec, Path(tmp))
            except (QidlabError, RuntimeError, ValueError) as exc:  # OOM too: record it, go on to the next size
                row = {"size": size, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            _free()  # after the except block: the traceback no longer holds the model
            result["sizes"].append(row)
            say(json.dumps({k: v for k, v in row.items() if k not in ("per_bits",)}, default=str))
            for leftover in Path(tmp).glob(f"ckpt-{size}"):
                _rmtree(leftover)
    result["study_estimate"] = study_estimate(result["sizes"])
    result["wall_s"] = time.perf_counter() - t_start
    print_table(result["sizes"], result["study_estimate"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
        say(f"\nwrote {args.out}")
    return result


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
