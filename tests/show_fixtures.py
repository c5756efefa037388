"""Synthetic studies for the show stage's tests: a store whose QiD follows Ouyang's law and whose
16-bit loss follows Kaplan's form (qidlab.laws.simulate, known parameters, no torch), a suite
folder with its manifest, and the trainer's ``train-log.csv`` / ``weight-dynamics.json`` files.

Units: N non-embedding parameters, D tokens, losses in nats per token."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from qidlab.laws.simulate import design, simulate
from qidlab.store import Measurement, Store

#: The QiD law the synthetic measurements follow (deliberately not the published constants).
TRUTH = {"k": 0.003, "alpha": 0.25, "beta": 0.5, "gamma": 4.0}
#: The 16-bit loss (Kaplan form, Ouyang Fig. 7 constants).
LOSS16 = {"N_c": 4.74e19, "alpha_N": 0.045, "D_c": 7.63e10, "alpha_D": 0.399}
SIZES = tuple(float(n) for n in np.geomspace(1e7, 1e9, 4))
TOKENS_PER_STEP = 2**20
STEPS = (1000, 3000, 10000, 30000, 95000)
BITS = (2.0, 3.0, 4.0)
VOCAB = 4096
METHOD_FACTOR = {"gptq": 1.0, "rtn": 1.6}
EVAL_FACTOR = {"web": 1.0, "wiki": 1.08}


def model_name(i: int) -> str:
    return f"m{i}"


def write_suite(root: Path, *, twins: bool = True, weights: bool = True) -> Path:
    """A suite folder: manifest, step<N>/config.json per checkpoint, training logs, weight
    dynamics; with ``twins`` a BitNet b1.58 model trained beside the smallest bf16 one."""
    suite = root / "synth"
    lines = ['suite = "synth"', f"tokens_per_step = {TOKENS_PER_STEP}", ""]
    for i, n in enumerate(SIZES):
        lines += [f'[models."{model_name(i)}"]', f"hidden = {64 * (i + 1)}", "layers = 2", "lr = 0.003",
                  f"n_params = {int(n)}", ""]
        for step in (0, *STEPS):
            folder = suite / model_name(i) / f"step{step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(json.dumps({"vocab_size": VOCAB}))
        write_train_log(suite / model_name(i), low_bit=False)
        if weights:
            write_weight_dynamics(suite / model_name(i))
    if twins:
        lines += ['[models."m0-bitnet"]', "hidden = 64", "layers = 2", "lr = 0.006", f"n_params = {int(SIZES[0])}",
                  'precision = "bitnet-b1.58"', 'twin = "m0"', ""]
        write_train_log(suite / "m0-bitnet", low_bit=True)
    (suite / "qidlab-suite.toml").write_text("\n".join(lines))
    return suite


def write_train_log(model_dir: Path, *, low_bit: bool, steps: int = 400) -> Path:
    """``train-log.csv`` (step,tokens,loss,lr): a loss curve; the low-bit one starts ahead and
    falls behind later, as in the paper's Fig. 14."""
    model_dir.mkdir(parents=True, exist_ok=True)
    step = np.arange(1, steps + 1)
    tokens = step * TOKENS_PER_STEP
    loss = 2.0 + 6.0 * (step / 10.0) ** -0.35
    if low_bit:
        loss = loss - 0.3 * np.exp(-step / 20.0) + 0.15 * (step / steps)
    rows = ["step,tokens,loss,lr"] + [f"{s},{t},{v:.6f},{3e-3:.6g}" for s, t, v in zip(step, tokens, loss)]
    path = model_dir / "train-log.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def write_weight_dynamics(model_dir: Path, steps=STEPS, edges=(-8.0, 0.0, 33), width: float = 0.6) -> Path:
    """``weight-dynamics.json``: histograms of log10|w_step - w_prev| (bins ``edges``: first,
    last, count) of spread ``width`` whose centre moves down as training goes on (the paper's Fig. 12)."""
    edges = np.linspace(*edges)
    centres = (edges[:-1] + edges[1:]) / 2
    entries, prev = [], 0
    for step in steps:
        centre = -2.0 - 1.5 * np.log10(step / steps[0])
        counts = np.round(1e4 * np.exp(-0.5 * ((centres - centre) / width) ** 2)).astype(int)
        rms = 10.0 ** (centre + 0.3)
        entries.append({"step": step, "tokens": step * TOKENS_PER_STEP, "prev_step": prev,
                        "log10_edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
                        "quantiles": {"0.5": 10.0 ** centre, "0.9": 10.0 ** (centre + 0.8),
                                      "0.99": 10.0 ** (centre + 1.4)},
                        "rms": rms, "mean_abs": 0.8 * rms})
        prev = step
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "weight-dynamics.json"
    path.write_text(json.dumps({"model": model_dir.name, "checkpoints": entries}))
    return path


def measurements(noise: float = 0.03, seed: int = 0):
    """The synthetic canonical rows: N x D x P, QiD from TRUTH with multiplicative noise."""
    levels = {"n_params": SIZES, "tokens": tuple(float(s * TOKENS_PER_STEP) for s in STEPS), "bits": BITS}
    frame = simulate("ouyang2024", TRUTH, design("ouyang2024", levels), noise=noise, seed=seed)
    frame = simulate("kaplan", LOSS16, frame, noise=0.002, seed=seed + 1)  # adds loss16
    frame["model"] = [model_name(SIZES.index(n)) for n in frame.n_params]
    frame["step"] = (frame.tokens / TOKENS_PER_STEP).round().astype(int)
    return frame


def write_store(db: Path, suite: Path | None, *, eval_sets=("web", "wiki"), methods=("gptq", "rtn"),
                seed: int = 0, unit: str | None = None) -> Path:
    """A store of the synthetic study: every row of ``measurements()`` per eval set and method;
    ``unit``: the ``[scoring] unit`` its configs name (None: none, nats per token)."""
    frame = measurements(seed=seed)
    with Store(db) as store:
        eids = {name: store.eval_set_id(name=name, content_hash=f"hash-{name}", n_docs=4,
                                        source={"path": f"{name}.txt"}) for name in eval_sets}
        for row in frame.itertuples():
            folder = (suite / row.model / f"step{row.step}") if suite else Path("/nonexistent") / row.model
            cid = store.checkpoint_id(suite="synth", model=row.model, step=int(row.step), path=str(folder),
                                      n_params=int(row.n_params), n_params_total=int(row.n_params * 1.2),
                                      tokens=int(row.tokens), content_hash=f"{row.model}-{row.step}")
            for name, eid in eids.items():
                for method in methods:
                    qid = row.qid * METHOD_FACTOR[method] * EVAL_FACTOR[name]
                    store.add_measurement(_measurement(cid, eid, method, row.bits, row.loss16, qid, unit))
    return db


def _measurement(cid, eid, method, bits, loss16, qid, unit=None):
    loss = loss16 + qid
    config = {"method": method, "bits": bits, "group_size": 128, **({"scoring": {"unit": unit}} if unit else {})}
    return Measurement(checkpoint_id=cid, eval_set_id=eid, method=method, bits=float(bits),
                       config=config, loss16=loss16, loss=loss,
                       qid=qid, qid_ci=(qid * 0.9, qid * 1.1), n_tokens=400, versions={"qidlab": "0.1.0",
                       "torch": "2.13.0"}, code_revision="abc1234", doc_nll=[loss * 100] * 4,
                       doc_tokens=[100] * 4, doc_bytes=[400] * 4, group_size=128)


# ---------------------------------------------------------------------------
# a frame with the trajectory columns of qidlab.train.trajectories (issue 17): two sizes with
# constant-lr runs, cooldown branches and LAWA averages, one size also at half and twice its peak lr, and a
# cosine suite; QiD in bits per byte (a ``unit`` column)

TRAJECTORY_SIZES = {"a": 1e6, "b": 4e6}
RUN_STEPS = (100, 200, 400, 800, 1600)
BRANCH_FROM = (200, 400, 800)
TOKENS_PER_STEP_RUNS = 1000


def trajectory_qid(n, tokens, bits, shift=1.0):
    return shift * 0.05 * (tokens / 1e6) ** 0.5 / (n / 1e6) ** 0.2 / bits**3


def _rows(arm, n, lr, *, suite="s", schedule="constant", kind="run", model=None, steps=RUN_STEPS, branch_from=None,
          shift=1.0):
    out = []
    for step in steps:
        tokens = step * TOKENS_PER_STEP_RUNS
        for bits in (2.0, 3.0, 4.0):
            q = trajectory_qid(n, tokens, bits, shift * (1 + lr * 100))
            out.append({"suite": suite, "model": model or arm, "step": step, "n_params": n, "tokens": tokens,
                        "bits": bits, "method": "gptq", "eval_set": "web", "qid": q, "qid_ci_low": 0.9 * q,
                        "qid_ci_high": 1.1 * q, "loss16": 3.0, "loss": 3.0 + q, "unit": "bits_per_byte",
                        "kind": kind, "trajectory": arm, "arm": arm, "seed": 0, "schedule": schedule,
                        "peak_lr": lr, "lr": 0.0 if kind == "branch" else lr, "lr_factor": lr / 1e-3,
                        "branch_from": float(branch_from) if branch_from is not None else np.nan})
    return out


def _arm(arm, n, lr):
    """A constant-lr run, a cooldown branch from each of BRANCH_FROM (15% more steps, lower QiD) and a
    LAWA k=5 average at each branch point (a little lower still)."""
    rows = _rows(arm, n, lr)
    for b in BRANCH_FROM:
        rows += _rows(arm, n, lr, kind="branch", model=f"{arm}-cool{b}", steps=(int(b * 1.15),), branch_from=b,
                      shift=0.6)
        rows += _rows(arm, n, lr, kind="average", model=f"{arm}-lawa5", steps=(b,), branch_from=b, shift=0.8)
    return rows


def trajectory_frame(*, lr_variants: bool = True, cosine: bool = True) -> pd.DataFrame:
    rows = _arm("a", TRAJECTORY_SIZES["a"], 1e-3) + _arm("b", TRAJECTORY_SIZES["b"], 1e-3)
    if lr_variants:
        rows += _arm("b-lr2x", TRAJECTORY_SIZES["b"], 2e-3)
        rows += _arm("b-lr0.5x", TRAJECTORY_SIZES["b"], 5e-4)
    if cosine:
        rows += _rows("a", TRAJECTORY_SIZES["a"], 1e-3, suite="s-cos", schedule="cosine", steps=(100, 400, 1200))
    return pd.DataFrame(rows)


def seeded_trajectory_frame() -> pd.DataFrame:
    """``trajectory_frame`` without peak-lr variants or cosine suite, with ``seed`` and ``batch_order``:
    size a's main run (seed 0, contiguous), a replicate (seed 3, contiguous, QiD x1.05) and a
    shuffled-batch run (seed 1, QiD x3), each with its branches and averages; size b's main run only."""
    base = trajectory_frame(lr_variants=False, cosine=False).assign(seed=0, batch_order="contiguous")
    a = base[base.arm == "a"]

    def seed_run(seed, order, factor):
        names = {m: f"{m}-seed{seed}" for m in set(a.model) | set(a.trajectory)}
        return a.replace({"model": names, "trajectory": names}).assign(seed=seed, batch_order=order,
                                                                       qid=a.qid * factor)
    return pd.concat([base, seed_run(3, "contiguous", 1.05), seed_run(1, "shuffled", 3.0)], ignore_index=True)
