"""The numbers of docs/findings.md, from the shipped GPU campaign data set (issue 6).

    .venv/bin/python campaign/findings.py [DATASET] > campaign/results/2026-11-23-gpu/findings.txt

DATASET: a data set name or folder (default ``qidlab-gpu-2026``). Prints markdown tables: the
Ouyang law per suite x eval set x method (all checkpoints, and checkpoints past the early
transient), the Kumar PTQ law and the single-factor laws on the primary slice, QiD across eval sets
(Fig. 8), across methods (Fig. 9), cosine vs constant learning rate, and BitNet b1.58 vs bf16 from
the training logs, and the code suite's two largest models measured twice (trained twice on the same
data order, seed and learning rate). Units: N non-embedding parameters, D tokens, losses and QiD in
nats/token.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from qidlab import data
from qidlab.laws.fit import fit_law

HERE = Path(__file__).resolve().parent
RESULTS = {"en": HERE / "results" / "2026-11-23-en" / "en", "code": HERE / "results" / "2026-11-23-gpu" / "code"}
HELDOUT = {"en": "debian-en-heldout", "code": "debian-python-heldout"}
OTHER = {"en": "brown", "code": "cpython-tests"}
MIN_TOKENS = 4e6  # past the early transient (step >= 256 of 16,384 tokens), where QiD falls with D
BOOT = 200
FIRST_RUN = HERE / "results" / "2026-11-23-gpu" / "code-first-run-h512-h768.csv"  # replaced by the finishing call


def ci(fit, name: str) -> str:
    v = fit.params.get(name)
    if v is None:
        return "folded"
    lo, hi = fit.ci95[name] if fit.ci95 else (float("nan"), float("nan"))
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def holdout(fit, column: str) -> str:
    h = [x for x in fit.holdout if x["held_out"] == column]
    return f"{h[0]['mape']:.0f}%" if h else "-"


def ouyang_table(frame: pd.DataFrame, min_tokens: float, resample: str = "points") -> None:
    print(f"\n### Ouyang law, D >= {min_tokens:.3g} tokens, bootstrap {BOOT} ({resample})\n")
    print("| suite | eval set | method | n | alpha | beta | gamma | R2(log) | hold out largest N | hold out latest D |")
    print("|---|---|---|---:|---|---|---|---:|---:|---:|")
    rows = frame[(frame.tokens >= min_tokens) & frame.suite.isin(["en", "code"]) & (frame.method != "nf4")]
    for fit in fit_law(rows, "ouyang2024", by=["suite", "eval_set", "method"], bootstrap=BOOT, resample=resample):
        g = fit.group
        print(f"| {g['suite']} | {g['eval_set']} | {g['method']} | {fit.n} | {ci(fit, 'alpha')} | {ci(fit, 'beta')} | "
              f"{ci(fit, 'gamma')} | {fit.metrics['r2_log']:.2f} | {holdout(fit, 'n_params')} | {holdout(fit, 'tokens')} |")


def other_laws(frame: pd.DataFrame) -> None:
    print(f"\n### Other QiD laws, GPTQ on each held-out split, D >= {MIN_TOKENS:.3g}\n")
    for suite in ("en", "code"):
        rows = frame[(frame.suite == suite) & (frame.eval_set == HELDOUT[suite]) & (frame.method == "gptq")
                     & (frame.tokens >= MIN_TOKENS)]
        for law in ("kumar2024-ptq", "ouyang2024-tokens", "ouyang2024-size", "ouyang2024-bits"):
            by = {"ouyang2024-tokens": ["n_params", "bits"], "ouyang2024-size": ["tokens", "bits"],
                  "ouyang2024-bits": ["n_params", "tokens"]}.get(law)
            fits = fit_law(rows, law, by=by, bootstrap=0 if by else BOOT)
            if by is None:
                f = fits[0]
                print(f"- {suite} {law}: " + ", ".join(f"{k} {ci(f, k)}" for k in f.params)
                      + f"; R2(log) {f.metrics['r2_log']:.2f}")
                continue
            expo = {"ouyang2024-tokens": "beta", "ouyang2024-size": "alpha", "ouyang2024-bits": "gamma"}[law]
            values = np.array([f.params[expo] for f in fits if f.params.get(expo) is not None])
            r2 = np.array([f.metrics["r2_log"] for f in fits])
            print(f"- {suite} {law}: {expo} per group ({len(values)} groups of {', '.join(by)}): median "
                  f"{np.median(values):.3f}, range {values.min():.3f} to {values.max():.3f}; median R2(log) {np.median(r2):.2f}")


def paired_ratio(frame, key_a, key_b, column):
    """Geometric-mean ratio b/a of QiD over rows paired on checkpoint, method, bits; both QiD > 0."""
    keys = ["suite", "model", "step", "method", "bits"]
    keys = [k for k in keys if k != column]
    a = frame[frame[column] == key_a].set_index(keys).qid
    b = frame[frame[column] == key_b].set_index(keys).qid
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    pos = both[(both.a > 0) & (both.b > 0)]
    return float(np.exp(np.log(pos.b / pos.a).mean())), float((both.b > both.a).mean()), len(both)


def eval_sets(frame: pd.DataFrame) -> None:
    print(f"\n### QiD on the second eval set vs the held-out split (Fig. 8), D >= {MIN_TOKENS:.3g}\n")
    print("| suite | method | bits | pairs | geo-mean ratio other/held-out | share where other > held-out |")
    print("|---|---|---:|---:|---:|---:|")
    for suite in ("en", "code"):
        for method in ("gptq", "rtn", "awq", "nf4"):
            for bits in sorted(frame[frame.method == method].bits.unique()):
                rows = frame[(frame.suite == suite) & (frame.method == method) & (frame.bits == bits)
                             & (frame.tokens >= MIN_TOKENS)]
                r, share, n = paired_ratio(rows, HELDOUT[suite], OTHER[suite], "eval_set")
                print(f"| {suite} | {method} | {bits:g} | {n} | {r:.2f} | {share:.0%} |")


def methods(frame: pd.DataFrame) -> None:
    print(f"\n### Methods vs GPTQ on the held-out split (Fig. 9), D >= {MIN_TOKENS:.3g}\n")
    print("| suite | bits | method | pairs | geo-mean ratio QiD/QiD(GPTQ) | share above GPTQ |")
    print("|---|---:|---|---:|---:|---:|")
    for suite in ("en", "code"):
        rows = frame[(frame.suite == suite) & (frame.eval_set == HELDOUT[suite]) & (frame.tokens >= MIN_TOKENS)]
        for bits in (2.0, 3.0, 4.0):
            at = rows[rows.bits == bits]
            for method in ("rtn", "awq", "nf4"):
                if (at.method == method).any():
                    r, share, n = paired_ratio(at[at.method.isin(["gptq", method])], "gptq", method, "method")
                    print(f"| {suite} | {bits:g} | {method} | {n} | {r:.2f} | {share:.0%} |")


def schedules(frame: pd.DataFrame) -> None:
    print("\n### Cosine vs constant learning rate (held-out split)\n")
    print("| corpus | model | D (M tokens) | loss16 cosine | loss16 constant | GPTQ 3-bit QiD cos / const | "
          "RTN 3-bit QiD cos / const | GPTQ 2-bit QiD cos / const |")
    print("|---|---|---:|---:|---:|---|---|---|")
    for suite in ("en", "code"):
        rows = frame[frame.eval_set == HELDOUT[suite]]
        for model in ("h128-l3", "h384-l4"):
            cos = rows[(rows.suite == suite) & (rows.model == model)]
            con = rows[(rows.suite == f"{suite}-const") & (rows.model == model)]
            steps = sorted(set(cos.step) & set(con.step))
            for step in (steps[len(steps) // 2], steps[-3], steps[-1]):
                def q(f, method, bits):
                    r = f[(f.step == step) & (f.method == method) & (f.bits == bits)]
                    return f"{r.qid.iloc[0]:.4f}" if len(r) else "-"
                c, k = cos[cos.step == step], con[con.step == step]
                print(f"| {suite} | {model} | {c.tokens.iloc[0] / 1e6:.1f} | {c.loss16.iloc[0]:.3f} | {k.loss16.iloc[0]:.3f} | "
                      f"{q(cos, 'gptq', 3)} / {q(con, 'gptq', 3)} | {q(cos, 'rtn', 3)} / {q(con, 'rtn', 3)} | "
                      f"{q(cos, 'gptq', 2)} / {q(con, 'gptq', 2)} |")
    print("\nOuyang law fitted to the two sizes of each schedule together (held-out split, GPTQ, "
          f"D >= {MIN_TOKENS:.3g}; alpha rests on two sizes only):\n")
    for suite in ("en", "code"):
        for s in (suite, f"{suite}-const"):
            rows = frame[(frame.suite == s) & (frame.eval_set == HELDOUT[suite]) & (frame.method == "gptq")
                         & frame.model.isin(["h128-l3", "h384-l4"]) & (frame.tokens >= MIN_TOKENS)]
            f = fit_law(rows, "ouyang2024", bootstrap=BOOT)[0]
            print(f"- {s}: beta {ci(f, 'beta')}, alpha {ci(f, 'alpha')}, gamma {ci(f, 'gamma')}, n {f.n}")


def bitnet() -> None:
    print("\n### BitNet b1.58 vs its bf16 twin (training logs; one pass, so the training loss is held out)\n")
    print("| corpus | size | twin lr / BitNet lr | loss bf16 | loss BitNet | gap (nats, last 20 logged updates) | BitNet last ahead at |")
    print("|---|---|---|---:|---:|---:|---:|")
    for corpus, folder in RESULTS.items():
        for size in ("h256-l3", "h512-l6"):
            a = pd.read_csv(folder / size / "train-log.csv").drop_duplicates("step")
            b = pd.read_csv(folder / f"{size}-bitnet" / "train-log.csv").drop_duplicates("step")
            m = a.merge(b, on=["step", "tokens"], suffixes=("", "_b"))
            m["gap"] = (m.loss_b - m.loss).rolling(10, min_periods=1).mean()
            behind = m[m.gap > 0]
            ahead_last = m[m.gap <= 0].tokens.max() if (m.gap <= 0).any() else float("nan")
            last = m.tail(20)
            print(f"| {corpus} | {size} | {a.lr.max():g} / {b.lr.max():g} | {last.loss.mean():.3f} | {last.loss_b.mean():.3f} | "
                  f"{(last.loss_b - last.loss).mean():+.3f} | {ahead_last / 1e6:.1f}M tokens |"
                  if len(behind) else f"| {corpus} | {size} | - | - | - | - | never |")


def rerun(frame: pd.DataFrame) -> None:
    """The first run's measurements of code h512-l6/h768-l6 against the data set's (the same models trained
    again on the same data order, seed and lr): how far QiD moves between two training runs, next to its CI
    over documents (the same documents both times)."""
    keys = ["suite", "model", "step", "eval_set", "method", "bits"]
    pairs = pd.read_csv(FIRST_RUN).merge(frame, on=keys, suffixes=("_1", "_2"))
    print(f"\n### The same models trained twice (code h512-l6, h768-l6; {pairs.groupby(['model', 'step']).ngroups} "
          f"checkpoints in common)\n")
    dl = pairs.loss16_2 - pairs.loss16_1
    print(f"16-bit loss, second minus first run: mean {dl.mean():+.4f}, largest |difference| {dl.abs().max():.4f} nats\n")
    print("| bits | pairs | median factor between the runs' QiD | median abs difference / CI half-width | "
          "second inside the first's CI |")
    print("|---:|---:|---:|---:|---:|")
    for bits, g in pairs.groupby("bits"):
        both = g[(g.qid_1 > 0) & (g.qid_2 > 0)]
        factor = np.exp(np.abs(np.log(both.qid_2 / both.qid_1)).median())
        half = (g.qid_ci_high_1 - g.qid_ci_low_1) / 2
        inside = ((g.qid_2 >= g.qid_ci_low_1) & (g.qid_2 <= g.qid_ci_high_1)).mean()
        print(f"| {bits:g} | {len(g)} | {factor:.2f} | {((g.qid_2 - g.qid_1).abs() / half).median():.2f} | {inside:.0%} |")


def main(argv):
    name = argv[1] if len(argv) > 1 else "qidlab-gpu-2026"
    frame = data.load(name)
    print(f"# findings numbers from {name}: {len(frame)} QiD measurements")
    for min_tokens in (0, MIN_TOKENS):
        ouyang_table(frame, min_tokens)
    primary = frame[frame.eval_set.isin(HELDOUT.values()) & frame.method.isin(["gptq"])]
    ouyang_table(primary, MIN_TOKENS, resample="n_params")
    other_laws(frame)
    eval_sets(frame)
    methods(frame)
    schedules(frame)
    bitnet()
    rerun(frame)


if __name__ == "__main__":
    main(sys.argv)
