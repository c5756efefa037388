"""The end-to-end demo behind ``qidlab demo``: text -> a trained suite -> QiD measurements ->
fitted laws -> report, the main paper in miniature on a CPU in minutes.

Each step writes the ordinary input of the next (a corpus folder, ``suite.toml``, ``study.toml``,
a SQLite store) into the output folder, so every step can be rerun or changed by hand with
``qidlab train`` / ``qidlab sweep`` / ``qidlab fit`` / ``qidlab report``; and each step reuses what
an earlier run finished (the corpus is kept, training resumes, the sweep skips stored jobs).

Units: N is non-embedding parameters, D training tokens, losses and QiD nats per model token.
"""

from __future__ import annotations

import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .corpus import build_corpus
from .corpus.build import write_jsonl
from .errors import QidlabError
from .evaluate import load_eval_set
from .files import write_text
from .laws.fit import fit_law
from .output import fit_cautions
from .quantize.config import PER_CHANNEL
from .show import ShowOptions, build_report
from .store import read_canonical
from .sweep import load_study, run_study
from .torchenv import require_measure, torch_threads
from .train import train_suite
from .train.schedule import checkpoint_steps

#: The main paper's unified fit (Ouyang et al. 2024, Eq. 4): QiD = k D^beta / (N^alpha P^gamma).
PAPER_EXPONENTS = {"beta": 0.5251, "alpha": 0.2261, "gamma": 5.4967}
EXPONENT_MEANING = {"beta": ("training tokens D", "grows"), "alpha": ("model size N", "shrinks"),
                    "gamma": ("bit width P", "shrinks")}


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is. ``models``: (name, hidden, layers, heads, learning rate)."""

    models: tuple[tuple[str, int, int, int, float], ...]
    steps: int
    batch_size: int
    seq_len: int
    vocab: int
    checkpoint_every: int      # Pythia-style: log-spaced 1, 2, 4, ... up to this, then every this many steps
    sweep_from: int            # measure checkpoints from this step on (earlier ones have QiD ~ 0)
    eval_docs: int
    eval_chars: int            # each eval document cut to its first eval_chars characters
    calibration_docs: int
    bits: tuple[int, ...] = (2, 3, 4)
    bootstrap: int = 200
    bitnet_twin_of: str | None = None  # also train a BitNet b1.58 twin of this model (Fig. 14); not swept


#: ~8 minutes on a 2-core CPU: 4 sizes x 12 checkpoints, 1.5M tokens each.
FULL = DemoScale(
    models=(("h32-l1", 32, 1, 2, 1e-2), ("h48-l2", 48, 2, 2, 8e-3), ("h64-l2", 64, 2, 4, 6e-3),
            ("h96-l2", 96, 2, 4, 5e-3)),
    steps=768, batch_size=16, seq_len=128, vocab=1024, checkpoint_every=64, sweep_from=64,
    eval_docs=30, eval_chars=2000, calibration_docs=64, bitnet_twin_of="h48-l2")

#: Seconds: for tests of the wiring (QiD values are noise at this size).
SMOKE = DemoScale(
    models=(("h16-l1", 16, 1, 2, 1e-2), ("h32-l1", 32, 1, 2, 1e-2)),
    steps=8, batch_size=4, seq_len=32, vocab=300, checkpoint_every=4, sweep_from=4,
    eval_docs=4, eval_chars=400, calibration_docs=8, bits=(2, 4), bootstrap=20)

SCALES = {"full": FULL, "smoke": SMOKE}


def run_demo(out_dir, *, scale: DemoScale = FULL, threads: int | None = None, report: bool = True,
             log: Callable[[str], None] = print) -> dict:
    """Run (or finish) the whole demo in ``out_dir``; return the summary (also in ``summary.json``)."""
    require_measure("the demo (it trains and measures models)")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    log(f"==> 1/6 corpus: this Python's standard library sources -> {out / 'corpus'}")
    corpus = build_demo_corpus(out)
    log("==> 2/6 eval and calibration texts")
    texts = write_texts(out, corpus, scale)
    twin = f" + a BitNet b1.58 twin of {scale.bitnet_twin_of}" if scale.bitnet_twin_of else ""
    log(f"==> 3/6 training {len(scale.models) + bool(twin)} models: {len(scale.models)} sizes{twin}; "
        f"{scale.steps} steps, {scale.steps * scale.batch_size * scale.seq_len:,} tokens each"
        + (f" ({threads} torch thread{'s' if threads != 1 else ''})" if threads else ""))
    suite_dir = train_demo_suite(out, scale, threads, log)
    log("==> 4/6 sweep: RTN and GPTQ at " + "/".join(map(str, scale.bits)) + f" bits on {len(texts['eval'])} eval sets")
    store, sweep = sweep_demo_study(out, suite_dir, texts, scale, threads)
    log(f"    {sweep.measured} measured now, {sweep.skipped} already in {store.name}")
    log("==> 5/6 fitting ouyang2024 (QiD = k D^beta / (N^alpha P^gamma)) per method, with bootstrap CIs")
    summary = fit_summary(store, texts["main"], scale)
    if report:
        log("==> 6/6 report")
        options = ShowOptions(eval_set=texts["main"], method="gptq", bootstrap=scale.bootstrap)
        summary["report"] = str(build_report(store, out / "report", options=options).path)
    summary["store"] = str(store)
    summary["sweep"] = {"measured_now": sweep.measured, "already_stored": sweep.skipped}
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    for line in summary_lines(summary):
        log(line)
    return summary


def build_demo_corpus(out: Path) -> Path:
    return build_corpus("stdlib", out / "corpus").path


def stdlib_tests_docs() -> list[str]:
    """The CPython test suite's ``test_*.py`` files (UTF-8 ones): code of the training corpus's
    language that the ``stdlib`` recipe leaves out of training. Empty when this Python has no tests."""
    root = Path(sysconfig.get_paths()["stdlib"]) / "test"
    docs = []
    for f in sorted(root.rglob("test_*.py")) if root.is_dir() else ():
        try:
            docs.append(f.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return docs


def write_texts(out: Path, corpus: Path, scale: DemoScale) -> dict:
    """Eval sets (name -> JSONL path) and a calibration sample of the training documents.

    ``stdlib-heldout`` is the corpus's own eval split; ``stdlib-tests`` (out of domain: tests,
    not library code) is added when this Python ships its test suite."""
    texts_dir = out / "texts"
    texts_dir.mkdir(exist_ok=True)
    evals = {"stdlib-heldout": corpus / "eval.jsonl"}
    tests = texts_dir / "stdlib-tests.jsonl"
    if not tests.is_file():
        docs = stdlib_tests_docs()
        if docs:
            write_jsonl(tests, docs)
    if tests.is_file():
        evals["stdlib-tests"] = tests
    calib = texts_dir / "calibration.jsonl"
    if not calib.is_file():
        write_jsonl(calib, load_eval_set(corpus / "train.jsonl", n_docs=scale.calibration_docs, seed=0).docs)
    return {"eval": evals, "main": "stdlib-heldout", "calibration": calib}


def suite_toml(scale: DemoScale) -> str:
    lines = ["[suite]", 'name = "demo"', 'corpus = "../corpus"', "seed = 0", f"tokenizer = {scale.vocab}",
             f"seq_len = {scale.seq_len}", f"batch_size = {scale.batch_size}", f"steps = {scale.steps}",
             'schedule = "cosine"', f"warmup = {max(1, scale.steps // 48)}",
             f"checkpoints = {{ log_spaced_until = {scale.checkpoint_every}, every = {scale.checkpoint_every} }}"]
    for name, hidden, layers, heads, lr in scale.models:
        lines += ["", "[[models]]", f'name = "{name}"', f"hidden = {hidden}", f"layers = {layers}",
                  f"heads = {heads}", f"lr = {lr!r}"]
        if name == scale.bitnet_twin_of:  # BitNet's recipe: 4x the twin's learning rate (the default)
            lines += ["", "[[models]]", f'name = "{name}-bitnet"', f"hidden = {hidden}", f"layers = {layers}",
                      f"heads = {heads}", 'precision = "bitnet-b1.58"', f'twin = "{name}"']
    return "\n".join(lines) + "\n"


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (atomically) unless the file holds that text already."""
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)


def train_demo_suite(out: Path, scale: DemoScale, threads, log) -> Path:
    work = out / "work"
    work.mkdir(exist_ok=True)
    path = work / "suite.toml"
    _write_if_changed(path, suite_toml(scale))
    every = max(1, scale.steps // 4)

    def on_step(event):
        if (event["step"] + 1) % every == 0:
            log(f"    {event['model']}: step {event['step'] + 1}/{scale.steps}, loss {event['loss']:.3f}")

    train_suite(path, out / "suites", threads=threads, on_step=on_step, log=lambda line: log("    " + line))
    return out / "suites" / "demo"


def sweep_steps(scale: DemoScale) -> list[int]:
    """The saved checkpoints from ``sweep_from`` on."""
    saved = checkpoint_steps(scale.steps, log_spaced_until=scale.checkpoint_every, every=scale.checkpoint_every)
    return [s for s in saved if s >= scale.sweep_from]


def study_toml(suite_dir: Path, texts: dict, scale: DemoScale, out: Path) -> str:
    rel = lambda p: Path(p).resolve().relative_to(out.resolve()).as_posix()  # noqa: E731
    lines = ["[study]", 'name = "demo"', 'store = "../demo.db"', 'device = "cpu"', "",
             "[checkpoints]", f'root = "../{rel(suite_dir)}"', f"steps = {sweep_steps(scale)}",
             "models = [" + ", ".join(f'"{m[0]}"' for m in scale.models) + "]  # 16-bit models only"]
    for name, path in texts["eval"].items():
        lines += ["", "[[eval_sets]]", f'name = "{name}"', f'source = "../{rel(path)}"',
                  f"n_docs = {scale.eval_docs}", f"max_chars = {scale.eval_chars}"]
    bits = list(scale.bits)
    lines += ["", "[calibration]", f'source = "../{rel(texts["calibration"])}"', "n_samples = 16",
              f"seq_len = {scale.seq_len}",
              "", "[[methods]]", 'method = "rtn"', f"bits = {bits}", f'group_size = "{PER_CHANNEL}"',
              "", "[[methods]]", 'method = "gptq"', f"bits = {bits}", f'group_size = "{PER_CHANNEL}"',
              "shared_hessian = true",
              "", "[scoring]", f"bootstrap = {scale.bootstrap}"]
    return "\n".join(lines) + "\n"


def sweep_demo_study(out: Path, suite_dir: Path, texts: dict, scale: DemoScale, threads):
    """Write ``work/study.toml`` and run it; return the store's path and the sweep's counts."""
    path = out / "work" / "study.toml"
    _write_if_changed(path, study_toml(suite_dir, texts, scale, out))
    study = load_study(path)
    with torch_threads(threads):
        summary = run_study(study)
    if summary.failed:
        raise QidlabError(f"the demo sweep had {len(summary.failed)} failed measurement{'s' if len(summary.failed) != 1 else ''}: {summary.failed[0]}")
    return study.store.resolve(), summary


def fit_summary(store: Path, main_eval: str, scale: DemoScale) -> dict:
    """ouyang2024 fitted per method on the main eval set, with bootstrap CIs and held-out errors."""
    every = read_canonical(store)
    table = every[every.eval_set == main_eval]
    if table.empty:
        raise QidlabError(f"{store}: no measurements on the eval set {main_eval!r}")
    fits = fit_law(table, "ouyang2024", by="method", bootstrap=scale.bootstrap, seed=0)
    return {"measurements": len(every), "eval_set": main_eval,
            "paper": PAPER_EXPONENTS, "fits": [f.to_dict() for f in fits]}


def _reading(name: str, ci) -> str:
    what, paper_sign = EXPONENT_MEANING[name]
    if ci is None:
        return f"{what}: no CI"
    lo, hi = ci
    if lo > 0:
        return f"QiD {paper_sign} with {what}, as in the paper"
    if hi < 0:
        return f"QiD goes the other way with {what} than in the paper"
    return f"the data cannot tell how QiD moves with {what}"


def summary_lines(summary: dict) -> list[str]:
    lines = [f"\nqidlab demo: {summary['measurements']} QiD measurements in {summary['store']}",
             f"ouyang2024 fitted on {summary['eval_set']} (95% bootstrap CIs), next to the paper's unified fit:"]
    for fit in summary["fits"]:
        ci = fit.get("ci95") or {}
        params = fit["params"]
        cells = []
        for name, paper in PAPER_EXPONENTS.items():
            value, c = params.get(name), ci.get(name)
            shown = "folded" if value is None else f"{value:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else "")
            cells.append(f"{name} {shown} (paper {paper})")
        lines.append(f"  {fit['group'].get('method', '?'):>5} ({fit['n']} point{'s' if fit['n'] != 1 else ''}, {fit['n_nonpositive']} with QiD <= 0 "
                     f"dropped): " + "; ".join(cells))
        readings = [_reading(n, ci.get(n)) for n in PAPER_EXPONENTS if params.get(n) is not None]
        lines.append("        " + "; ".join(readings) + ".")
        lines += [f"        {line}" for line in fit_cautions(fit["n"], params, ci)]
    if "report" in summary:
        lines.append(f"report: {summary['report']}")
    return lines
