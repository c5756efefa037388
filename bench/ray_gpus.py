"""Benchmark: a Pythia-shaped sweep spread over the GPUs of one machine by `qidlab sweep --executor ray`
(issue 20). Prints figures, writes JSON, asserts nothing about time.

Checkpoints: ``--per-gpu`` x g step folders of one Pythia-shaped GPT-NeoX (``pythia_shapes.build_model``,
random bf16 weights: compute and memory depend on shapes, not values) in the Pythia layout
``<work>/suite/pythia-<size>/step<N>/``; the first folder is written with ``save_pretrained``, the
others hard-link its files (each is a checkpoint of its own to the sweep and the store: (suite,
model, step) differ; their loads after the first come from the page cache, about 4% of a 1B
checkpoint's time). Text and settings are ``bench/pythia_shapes.py``'s: ``--docs`` eval documents of
about ``--doc-tokens`` tokens (context 2,048, scoring batch 32), calibration ``--calib-samples`` x
``--calib-len``, shared-Hessian GPTQ of ``--bits`` (group 128), the 16-bit reference.

For each g in ``--gpus`` (e.g. ``1,8``): ``python -m qidlab sweep STUDY --executor ray --json`` in a
child process that sees the first g GPUs (``CUDA_VISIBLE_DEVICES``; Ray starts locally and gives
each checkpoint task one of them), on the first ``per-gpu x g`` checkpoints, into a store of its
own. Per run:

* checkpoints per hour: checkpoints / the child's wall time (Ray's start and the eval set's
  tokenization included) x 3600; scaling efficiency = rate(g) / (g x rate(1)) when 1 is in ``--gpus``;
* one GPU per process: ``nvidia-smi --query-compute-apps`` sampled every ``--poll`` s during the
  run; every process that held a GPU context (this one, which built the model, left out) held
  exactly one, no GPU held two processes at once, and g GPUs were used. The executor's Ray actors
  are one process per GPU, measuring its checkpoints in turn (before 2026-12-04 each checkpoint
  was a Ray task in a fresh process: runs a and b of docs/performance.md).
  Without nvidia-smi (CPU), or where it lists no process, these are ``null``;
* every measurement once: the store's rows per (checkpoint, eval set, config) are all 1 and number
  checkpoints x (1 + len(bits)), with no failures.

    PYTHONPATH=src python bench/ray_gpus.py --size 1b --per-gpu 4 --gpus 1,8 --out ray-gpus.json
    PYTHONPATH=src python bench/ray_gpus.py --size 1b --per-gpu 4 --gpus 1 --executor local   # Ray's overhead
    PYTHONPATH=src python bench/ray_gpus.py --tiny --gpus 1 --out tiny.json    # CPU, the test's mode
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pythia_shapes as ps  # noqa: E402  (shapes, model builder, text; it puts tests/ on the path)

from qidlab import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKENS_PER_STEP = 2_097_152  # Pythia: 1,024 sequences of 2,048 tokens per step


def say(*a) -> None:
    print(*a, flush=True)


# ---- inputs ------------------------------------------------------------------------------


def write_inputs(args, work: Path, n_checkpoints: int) -> Path:
    """The suite (``n_checkpoints`` step folders), eval set, calibration text and study; the study's path."""
    import torch

    tok, es, _ = ps.text_inputs(args, work)  # the tokenizer, eval documents and work/calib.txt of pythia_shapes
    with open(work / "eval.jsonl", "w") as fh:
        for d in es.docs:
            fh.write(json.dumps({"text": d}) + "\n")
    model_dir = work / "suite" / f"pythia-{args.size}"
    first = model_dir / f"step{args.first_step}"
    model = ps.build_model(args.size, args.device, seed=0)
    ps.save_checkpoint(model, tok, first)
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    for i in range(n_checkpoints):
        step = args.first_step * (i + 1)
        folder = model_dir / f"step{step}"
        if i:
            folder.mkdir(parents=True)
            for f in first.iterdir():
                os.link(f, folder / f.name)
            (folder / "qidlab.json").unlink()
        (folder / "qidlab.json").write_text(json.dumps({"tokens": step * TOKENS_PER_STEP, "step": step}))
    study = work / "study.toml"
    study.write_text(study_text(args, work))
    return study


def study_text(args, work: Path) -> str:
    bits = ", ".join(str(b) for b in args.bits)
    return f"""[study]
name = "ray-gpus"
store = "unused.db"
device = "{args.device}"

[checkpoints]
root = "{work / 'suite'}"

[[eval_sets]]
name = "bench"
source = "{work / 'eval.jsonl'}"
n_docs = {args.docs}

[calibration]
source = "{work / 'calib.txt'}"
n_samples = {args.calib_samples}
seq_len = {args.calib_len}

[[methods]]
method = "gptq"
bits = [{bits}]
group_size = {args.group_size}
shared_hessian = true

[scoring]
max_length = {args.max_length}
batch_size = {args.eval_batch}
"""


# ---- one run -----------------------------------------------------------------------------


class GpuWatch:
    """Which GPU each process holds a context on, sampled from ``nvidia-smi`` every ``every`` s:
    ``held[pid] = {gpu uuids}`` and ``together[uuid]`` = the most processes seen on it at once."""

    def __init__(self, every: float):
        self.every, self.held, self.together = every, {}, {}
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout
        now: dict[str, set] = {}
        for line in out.splitlines():
            if "," in line:
                pid, uuid = (x.strip() for x in line.split(",", 1))
                if pid == str(os.getpid()):  # this process: it built the model on the GPU and keeps its context
                    continue
                self.held.setdefault(pid, set()).add(uuid)
                now.setdefault(uuid, set()).add(pid)
        for uuid, pids in now.items():
            self.together[uuid] = max(self.together.get(uuid, 0), len(pids))

    def summary(self, gpus: int) -> dict:
        if not self.available or not self.held:  # no nvidia-smi, or it listed no process (a container's
            # PID namespace can hide them): nothing seen, nothing claimed
            return {"processes": 0 if self.available else None, "one_gpu_per_process": None, "gpus_used": None,
                    "gpus_expected": gpus, "most_processes_on_a_gpu": None}
        used = set().union(*self.held.values()) if self.held else set()
        return {"processes": len(self.held), "one_gpu_per_process": all(len(u) == 1 for u in self.held.values()),
                "gpus_used": len(used), "gpus_expected": gpus,
                "most_processes_on_a_gpu": max(self.together.values(), default=0)}


def store_check(store: Path, n_checkpoints: int, n_configs: int) -> dict:
    """Every measurement once: rows per (checkpoint, eval set, config hash) and their total."""
    with sqlite3.connect(store) as conn:
        per_key = [r[0] for r in conn.execute("SELECT COUNT(*) FROM measurements GROUP BY checkpoint_id, "
                                              "eval_set_id, config_hash")]
        checkpoints = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    expected = n_checkpoints * n_configs
    return {"measurements": sum(per_key), "expected": expected, "checkpoints": checkpoints,
            "each_once": bool(per_key) and max(per_key) == 1 and sum(per_key) == expected}


def run_sweep(args, study: Path, work: Path, gpus: int) -> dict:
    n = args.per_gpu * gpus
    store = work / f"store-{gpus}gpu.db"
    steps = [args.first_step * (i + 1) for i in range(n)]
    text = study.read_text().replace('store = "unused.db"', f'store = "{store}"')
    text = text.replace(f'root = "{work / "suite"}"', f'root = "{work / "suite"}"\nsteps = {steps}')
    run_study = work / f"study-{gpus}gpu.toml"
    run_study.write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p))
    if args.device == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
    cmd = [sys.executable, "-m", "qidlab", "sweep", str(run_study), "--executor", args.executor, "--json", "--quiet"]
    say(f"\n== {gpus} GPU(s), {n} checkpoints: {' '.join(cmd)}")
    start = time.perf_counter()
    with GpuWatch(args.poll) as watch:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    summary = _json_tail(proc.stdout)
    row = {"executor": args.executor, "gpus": gpus, "checkpoints": n, "wall_s": round(wall, 1), "returncode": proc.returncode,
           "checkpoints_per_hour": round(n / wall * 3600, 2), "sweep": summary,
           "gpu_use": watch.summary(gpus), "store": store_check(store, n, 1 + len(args.bits)) if store.exists() else None}
    if proc.returncode:
        row["stderr_tail"] = proc.stderr[-2000:]
    say(json.dumps(row, default=str))
    return row


def _json_tail(stdout: str):
    """The sweep's ``--json`` summary: the last line that parses as JSON, else None."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    try:
        return json.loads(stdout)
    except ValueError:
        return None


# ---- main --------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default=None, help=f"one of {', '.join(ps.SHAPES)} (default 1b; tiny with --tiny)")
    p.add_argument("--gpus", default=None, help="comma list of GPU counts to run on, e.g. 1,8 (default: 1 and "
                   "every visible GPU; tiny: 1)")
    p.add_argument("--per-gpu", type=int, default=None, help="checkpoints per GPU (default 4; tiny 2)")
    p.add_argument("--tiny", action="store_true", help="CPU, the tiny shape, a few documents: a minute in all")
    p.add_argument("--docs", type=int, default=None, help="eval documents (default 1000; tiny 8)")
    p.add_argument("--doc-tokens", type=int, default=None, help="tokens per eval document, about (default 1000; tiny 48)")
    p.add_argument("--eval-batch", type=int, default=None, help="scoring batch (default 32; tiny 4)")
    p.add_argument("--max-length", type=int, default=None, help="scoring context (default 2048; tiny 128)")
    p.add_argument("--calib-samples", type=int, default=None, help="default 128; tiny 4")
    p.add_argument("--calib-len", type=int, default=None, help="default 2048; tiny 64")
    p.add_argument("--bits", type=lambda v: [int(x) for x in v.split(",")], default=[2, 3, 4])
    p.add_argument("--group-size", type=int, default=None, help="default 128; tiny 32")
    p.add_argument("--tok-vocab", type=int, default=None, help="BPE vocabulary (default 4096; tiny 256)")
    p.add_argument("--first-step", type=int, default=1000, help="step of the first checkpoint; the others its multiples")
    p.add_argument("--executor", default="ray", choices=["ray", "local"],
                   help="local: the same study measured in the sweep's own process, one GPU (Ray's overhead)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between nvidia-smi samples")
    p.add_argument("--work", type=Path, default=None, help="folder for the suite and stores (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = p.parse_args(argv)
    import torch

    args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    visible = torch.cuda.device_count() if args.device == "cuda" else 1
    for name, big, small in (("size", "1b", "tiny"), ("per_gpu", 4, 2), ("docs", 1000, 8), ("doc_tokens", 1000, 48),
                             ("eval_batch", 32, 4), ("max_length", 2048, 128), ("calib_samples", 128, 4),
                             ("calib_len", 2048, 64), ("group_size", 128, 32), ("tok_vocab", 4096, 256),
                             ("gpus", ",".join(sorted({"1", str(visible)}, key=int)), "1")):
        if getattr(args, name) is None:
            setattr(args, name, small if args.tiny else big)
    if args.size not in ps.SHAPES:
        p.error(f"--size {args.size!r}: choose from {', '.join(ps.SHAPES)}")
    try:
        args.gpus = [int(g) for g in str(args.gpus).split(",") if g.strip()]
    except ValueError:
        p.error(f"--gpus {args.gpus!r}: a comma list of GPU counts, e.g. 1,8")
    if not args.gpus or min(args.gpus) < 1 or max(args.gpus) > visible:
        p.error(f"--gpus {args.gpus}: each count between 1 and the {visible} GPU(s) visible here")
    if args.executor == "local" and args.gpus != [1]:
        p.error("--executor local measures on one GPU: --gpus 1")
    if args.per_gpu < 1:
        p.error("--per-gpu must be at least 1")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        p.error(f"--work {args.work}: not empty (the suite and stores are written there afresh)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray
    import torch

    result = {"env": {"python": sys.version.split()[0], "torch": torch.__version__, "ray": ray.__version__,
                      "device": provenance.device_name(args.device), "visible_gpus": torch.cuda.device_count(),
                      "cpu_count": os.cpu_count(), "code_revision": provenance.code_revision()},
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": []}
    say(f"env: {result['env']}")
    with tempfile.TemporaryDirectory(prefix="qidlab-ray-gpus-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        study = write_inputs(args, work, args.per_gpu * max(args.gpus))
        result["inputs_s"] = round(time.perf_counter() - t0, 1)
        say(f"inputs: {args.per_gpu * max(args.gpus)} checkpoints of pythia-{args.size}, {args.docs} eval docs, "
            f"{result['inputs_s']} s")
        for g in args.gpus:
            result["runs"].append(run_sweep(args, study, work, g))
    result["scaling"] = scaling(result["runs"])
    print_table(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
        say(f"\nwrote {args.out}")
    return result


def scaling(runs: list[dict]) -> dict | None:
    """rate(g) / (g x rate(1)) for each g > 1, when a 1-GPU run is among ``runs``."""
    one = next((r for r in runs if r["gpus"] == 1 and not r["returncode"]), None)
    if one is None:
        return None
    return {str(r["gpus"]): round(r["checkpoints_per_hour"] / (r["gpus"] * one["checkpoints_per_hour"]), 3)
            for r in runs if r["gpus"] > 1 and not r["returncode"]}


def print_table(result: dict) -> None:
    say("\n| GPUs | checkpoints | wall s | checkpoints/hour | efficiency | one GPU per process | GPUs used | "
        "most processes on a GPU | measurements (each once) |")
    say("|---:|---:|---:|---:|---:|---|---:|---:|---|")
    eff = result["scaling"] or {}
    for r in result["runs"]:
        u, s = r["gpu_use"], r["store"] or {}
        say(f"| {r['gpus']} | {r['checkpoints']} | {r['wall_s']} | {r['checkpoints_per_hour']} | "
            f"{eff.get(str(r['gpus']), '-')} | {u['one_gpu_per_process']} | {u['gpus_used']} | "
            f"{u['most_processes_on_a_gpu']} | {s.get('measurements')} ({s.get('each_once')}) |")


if __name__ == "__main__":
    main()
