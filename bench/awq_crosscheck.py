"""Benchmark: QiD of qidlab's AWQ variants and of AutoAWQ itself on trained tiny models.

For each ``--archs`` (gpt_neox, llama): a tiny model trained by ``tests/tiny_models.py``'s
``make_tiny_checkpoint`` (``--hidden``, 2 layers, ``--steps`` AdamW steps on ``tiny_corpus``
seed 0), saved and reloaded as a Hugging Face folder. Calibration: ``--calib-samples`` seeded
windows of ``--calib-seq-len`` tokens of ``tiny_corpus`` seed 1; eval: ``--n-docs`` documents
of seed 2. Per bit width (``--bits``, group size ``--group-size``): RTN (asymmetric), qidlab's
AWQ with duo scaling and clipping off/on, and ``backend="autoawq"`` with the same switches when
AutoAWQ is importable. Each is quantized from restored 16-bit weights and scored with
``qidlab.evaluate.score``; QiD (nats/token) with its 95% paired-bootstrap interval.

It prints figures and asserts nothing. Usage (torch on one thread):

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/awq_crosscheck.py [--archs gpt_neox,llama]
        [--bits 3,4] [--group-size 32] [--hidden 128] [--steps 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_models  # noqa: E402

from qidlab.evaluate import paired_bootstrap_qid, score  # noqa: E402
from qidlab.quantize import AWQConfig, RTNConfig, quantize_  # noqa: E402

SWITCHES = [(False, False), (True, False), (False, True), (True, True)]  # (duo_scaling, clip)


def configs(bits: int, group: int, with_autoawq: bool) -> list[tuple[str, object]]:
    out = [("rtn", RTNConfig(bits, group_size=group, symmetric=False))]
    backends = ["qidlab", "autoawq"] if with_autoawq else ["qidlab"]
    for backend in backends:
        for duo, clip in SWITCHES:
            label = f"awq {backend} duo={int(duo)} clip={int(clip)}"
            out.append((label, AWQConfig(bits, group_size=group, duo_scaling=duo, clip=clip,
                                         backend=backend)))
    return out


def texts(args) -> tuple[list[str], list[str], list[str]]:
    """(train, calibration, eval) documents: ``tiny_corpus`` seeds 0/1/2, or a corpus folder's
    train split (first ``--train-docs`` for training, the rest for calibration) and eval split."""
    if args.corpus is None:
        return (tiny_models.tiny_corpus(200, seed=0), tiny_models.tiny_corpus(400, seed=1),
                tiny_models.tiny_corpus(args.n_docs, seed=2))
    from qidlab.evaluate import load_eval_set

    train = [json.loads(line)["text"] for line in open(Path(args.corpus) / "train.jsonl")]
    evals = load_eval_set(args.corpus, n_docs=args.n_docs, max_chars=args.max_chars).docs
    return train[:args.train_docs], train[args.train_docs:args.train_docs + 50], evals


def calibration(tok, docs: list[str], n: int, seq_len: int) -> torch.Tensor:
    ids = tok("\n\n".join(docs))["input_ids"]
    starts = np.random.default_rng(0).integers(0, len(ids) - seq_len, size=n)
    return torch.tensor([ids[s:s + seq_len] for s in starts], dtype=torch.long)


def kl_windows(tok, docs: list[str], n: int = 64, seq_len: int = 128) -> torch.Tensor:
    """The first ``n`` windows of ``seq_len`` tokens of the eval text, for the KL divergence."""
    ids = tok("\n\n".join(docs))["input_ids"][: n * seq_len]
    return torch.tensor(ids[: len(ids) // seq_len * seq_len]).reshape(-1, seq_len)


@torch.no_grad()
def log_probs(model, windows: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(input_ids=w).logits.float().log_softmax(-1) for w in windows.split(8)])


def run_arch(arch: str, args, with_autoawq: bool, tmp: Path) -> list[dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train, calib_docs, docs = texts(args)
    path = tiny_models.make_tiny_checkpoint(tmp / arch, arch=arch, hidden=args.hidden,
                                            layers=args.layers, steps=args.steps, seq_len=128,
                                            docs=train, vocab_size=args.vocab)
    model = AutoModelForCausalLM.from_pretrained(path).float().eval()
    tok = AutoTokenizer.from_pretrained(path)
    calib = calibration(tok, calib_docs, args.calib_samples, args.calib_seq_len)
    windows = kl_windows(tok, docs)
    state16 = {k: v.clone() for k, v in model.state_dict().items()}
    s16, lp16 = score(model, tok, docs), log_probs(model, windows)
    print(f"{arch}: 16-bit loss {s16.loss():.4f} nats/token on {len(docs)} docs", file=sys.stderr)
    rows = []
    for bits in args.bits:
        for label, cfg in configs(bits, args.group_size, with_autoawq):
            model.load_state_dict(state16)
            t = time.perf_counter()
            quantize_(model, cfg, calib)
            secs = time.perf_counter() - t
            sq = score(model, tok, docs)
            qid, lo, hi = paired_bootstrap_qid(s16, sq, n_boot=1000, seed=0)
            kl = float((lp16.exp() * (lp16 - log_probs(model, windows))).sum(-1).mean())
            rows.append({"arch": arch, "bits": bits, "config": label, "loss16": s16.loss(),
                         "loss": sq.loss(), "qid": qid, "qid_lo": lo, "qid_hi": hi, "kl": kl,
                         "quantize_s": secs})
            print(f"{arch:9s} {bits}b {label:28s} loss {sq.loss():.4f}  QiD {qid:+.4f} "
                  f"[{lo:+.4f}, {hi:+.4f}]  KL {kl:.4f}  {secs:5.1f} s", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="gpt_neox,llama")
    p.add_argument("--bits", default="3,4", type=lambda s: [int(b) for b in s.split(",")])
    p.add_argument("--group-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--corpus", help="a `qidlab corpus build` folder (default: tiny_corpus text)")
    p.add_argument("--train-docs", type=int, default=200)
    p.add_argument("--max-chars", type=int, default=4000, help="eval documents cut to this (--corpus)")
    p.add_argument("--calib-samples", type=int, default=16)
    p.add_argument("--calib-seq-len", type=int, default=128)
    p.add_argument("--n-docs", type=int, default=200)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        import awq  # noqa: F401
        with_autoawq = True
    except ImportError:
        with_autoawq = False
        print("AutoAWQ not importable: qidlab's AWQ only", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for a in args.archs.split(",") for r in run_arch(a, args, with_autoawq, Path(tmp))]
    if args.json:
        versions = {"torch": torch.__version__}
        import transformers
        versions["transformers"] = transformers.__version__
        if with_autoawq:
            versions["autoawq"] = awq.__version__
        print(json.dumps({"versions": versions, "args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
