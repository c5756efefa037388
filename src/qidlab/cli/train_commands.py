"""Commands that make suites: ``qidlab corpus build`` and ``qidlab train``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..corpus import build_corpus
from ..train import folders_of, load_suite_config, train_suite
from ..train.config import data_seeds
from ..train.data import data_folder
from ..train.loop import STATS_FILE
from ..train.lr_sweep import SWEEP_FILE
from ..files import check_writable
from ..torchenv import THREADS_HELP, idle_cores
from .args import emit, library_names, positive_int


def register(sub) -> None:
    p = sub.add_parser("corpus", help="build a training corpus (deduplicated, seeded train/eval split, manifest)")
    csub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True, parser_class=type(p))
    b = csub.add_parser("build", help="build (or reuse) the corpus of a recipe in a folder")
    b.add_argument("recipe", help="stdlib (this Python's standard library sources), files (with --files), "
                                  "debian-en (English from Debian documentation packages), debian-python "
                                  "(Python code from Debian packages), or the eval-only "
                                  "brown (the Brown corpus) and shakespeare (Shakespeare and Milton)")
    b.add_argument("--out", required=True, help="output folder (train.jsonl, eval.jsonl, manifest.json)")
    b.add_argument("--files", nargs="+", metavar="PATH", help="recipe files: text files, folders, JSONL, Parquet")
    b.add_argument("--seed", type=int, default=0, help="seed of the train/eval split (default: %(default)s)")
    b.add_argument("--eval-fraction", type=float, help="held-out share (default 0.05; 1 for brown, shakespeare)")
    b.add_argument("--compress", action="store_true", help="write train.jsonl.gz and eval.jsonl.gz")
    b.add_argument("--cache", metavar="DIR", help="where fetched sources are kept "
                                                  "(default $QIDLAB_CACHE or ~/.cache/qidlab/sources)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(run=run_corpus_build)

    p = sub.add_parser("train", help="train a suite of models (Pythia-style checkpoints; resumes an interrupted run)")
    p.add_argument("suite", help="suite file (TOML; see qidlab/train/config.py)")
    p.add_argument("--out", required=True, help="output folder; the suite goes to OUT/<suite name>/")
    p.add_argument("--threads", type=positive_int, help=THREADS_HELP)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the suite file's, else auto)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the forward pass")
    p.add_argument("--peak-tflops", type=float, help="accelerator peak (dense bf16) for MFU, if not known by name")
    p.add_argument("--models", nargs="+", metavar="NAME", help="train only these models of the suite (e.g. one per GPU job)")
    p.add_argument("--data-only", action="store_true",
                   help="make the tokenizer and token file (OUT/<suite>/_data; seed runs' own, _data-seed<S>) and stop "
                        "(before parallel --models jobs)")
    p.add_argument("--lr-sweep", action=argparse.BooleanOptionalAction, default=None,
                   help="choose each model's learning rate by short runs first (settings: the suite's lr_sweep); "
                        "--no-lr-sweep: not even when the suite file has an lr_sweep table")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_train)
    library_names(p, out_dir="out")


def run_corpus_build(args):
    check_writable(args.out, folder=True)
    log = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    m = build_corpus(args.recipe, args.out, files=args.files, seed=args.seed, eval_fraction=args.eval_fraction,
                     compress=args.compress, cache=args.cache, log=log)
    doc = {"out": str(m.path), "reused": m.reused, **m.to_dict()}
    d = m.documents
    text = (f"{'reused' if m.reused else 'built'} {m.path}: {d['train']} train + {d['eval']} eval documents "
            f"({m.bytes['train']:,} + {m.bytes['eval']:,} bytes; {d['duplicates']} duplicates and {d['empty']} "
            f"empty dropped); licences: {', '.join(m.licenses) or 'unknown'}")
    emit(args, doc, text)


def run_train(args):
    config = load_suite_config(args.suite)
    check_writable(args.out, folder=True)
    log = None if args.quiet or args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    threads = args.threads or idle_cores()
    paths = train_suite(config, args.out, models=args.models, data_only=args.data_only, threads=threads, device=args.device, compile=args.compile,
                        peak_tflops=args.peak_tflops, lr_sweep=args.lr_sweep, log=log)
    suite_dir = Path(args.out) / config.name
    stats = [json.loads(f.read_text()) for m in config.models for name in folders_of(m, config.seed)
             if (f := suite_dir / name / STATS_FILE).is_file()]
    doc = {"suite": config.name, "out": str(suite_dir), "tokens_per_step": config.tokens_per_step,
           "checkpoints": [str(p) for p in paths], "models": stats}
    if args.lr_sweep or (args.lr_sweep is None and config.lr_sweep):  # the sweeps done so far (--models: some)
        doc["lr_sweep"] = {m.name: json.loads(f.read_text())["result"]
                           for m in config.models if (f := suite_dir / m.name / SWEEP_FILE).is_file()}
    data_dirs = ", ".join(str(suite_dir / data_folder(s)) for s in [None, *data_seeds(config, args.models)])
    head = (f"{config.name}: data ready in {data_dirs}" if args.data_only
            else f"{config.name}: {len(paths)} checkpoints in {suite_dir}")
    text = "\n".join(
        [head]
        + [f"  {s['model']}: last training call: {s['steps_trained']} steps from step {s['resumed_from']}, "
           f"{s['tokens_per_s'] or 0:,.0f} tokens/s" + (f", MFU {s['mfu']:.1%}" if s.get("mfu") is not None else "")
           + f" ({s.get('device', 'cpu')}, {s['threads']} threads)" for s in stats]
        + [f"  {name}: lr sweep chose {r['chosen']:g} of " + ", ".join(
            f"{lr:g} ({loss:.3f})" for lr, loss in zip(r["lrs"], r["heldout_loss"])) + " (held-out loss, nats/token)"
           for name, r in doc.get("lr_sweep", {}).items()])
    emit(args, doc, text)
