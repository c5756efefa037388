"""The numbers of docs/findings.md's Campaign 2 section (issue 17): does QiD grow with training tokens
or with learning-rate decay?

    PYTHONPATH=src .venv/bin/python campaign/findings2.py [DATASET] > campaign/results/2026-12-04-c2-s4/findings2.txt

DATASET: a data set name or folder, or a Parquet/CSV file of the same frame (default
``qidlab-gpu-2027``); it needs the trajectory columns of ``qidlab.train.trajectories`` (kind,
trajectory, arm, seed, schedule, peak_lr, lr, decay, decay_tokens, branch_from, lr_factor: 1 for a
size's reference-lr arm). Step-0 checkpoints (D = 0) are left out. Prints markdown tables from ``qidlab.laws.trajectories``: GPTQ first (both eval
sets), RTN/AWQ/NF4 compactly. Bootstrap resamples clusters = (size arm, seed), with a fixed seed, so
the output is reproducible. Units: D training tokens, N non-embedding parameters, QiD and losses in
bits per byte (ratios and exponents are unit-free).

With a ``batch_order`` column, items a-f use the contiguous-batch rows (every main run as trained
and the replicate seed runs of session 4; the shuffled-batch seed runs of session 3 are another
treatment, not replicates), g gives the replicate spread of the contiguous seeds, compares the
shuffled runs with the contiguous ones (and their seeds with each other), and a, b, d are repeated on
the shuffled runs alone.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from qidlab import data
from qidlab.errors import QidlabError
from qidlab.laws import trajectories as T

DEFAULT = "qidlab-gpu-2027"
MIN_TOKENS = 4e6  # past the early transient (step >= 245 of 16,384 tokens)
N_BOOT, N_BOOT_FORMS, SEED = 2000, 1000, 0
HEADLINE = (("gptq", 2.0), ("gptq", 3.0))
EVAL_SETS = ("debian-en-heldout", "brown")


def load(name: str) -> pd.DataFrame:
    """The frame with D > 0 (a data set's checks apply to the rest)."""
    return data.load(name, where=["tokens>0"])


def ci(d, key: str = "gm", fmt: str = "{:.3f}") -> str:
    lo, hi = d["lo"], d["hi"]
    if not np.isfinite(d[key]):
        return "-"
    return fmt.format(d[key]) + (f" [{fmt.format(lo)}, {fmt.format(hi)}]" if np.isfinite(lo) else " [no CI]")


def method_order(frame: pd.DataFrame) -> pd.DataFrame:
    order = {"gptq": 0, "rtn": 1, "awq": 2, "nf4": 3}
    return frame.assign(_o=frame.method.map(order)).sort_values(["_o", "eval_set", "bits"], ascending=[True, False, True])


def label(r) -> str:
    return f"| {r['method']} | {int(r['bits'])} | {r['eval_set']} |"


def header(frame: pd.DataFrame, name: str) -> None:
    print(f"# Campaign 2 findings numbers from {name}: {len(frame)} QiD measurements (D > 0)\n")
    sizes = frame[T.is_reference_arm(frame)].groupby("arm").n_params.first().sort_values()
    print("sizes (N):", ", ".join(f"{a} {n / 1e6:.2f}M" for a, n in sizes.items()))
    print("kinds:", frame.kind.value_counts().to_dict(), "| suites:", frame.suite.value_counts().to_dict(),
          "| seeds:", sorted(frame.seed.unique().tolist()))
    print("QiD <= 0 per bits:", frame[frame.qid <= 0].groupby("bits").size().to_dict(), "of",
          frame.groupby("bits").size().to_dict())


def beta_table(frame: pd.DataFrame) -> None:
    print(f"\n## a. QiD vs D at constant lr: beta_const (log QiD on log D, D >= {MIN_TOKENS:.3g}, fixed effect per run)\n")
    print("| method | bits | eval set | beta_const [95% cluster CI] | n | clusters | dropped (QiD <= 0) |")
    print("|---|---:|---|---|---:|---:|---:|")
    out = method_order(T.constant_beta(frame, MIN_TOKENS, N_BOOT, SEED))
    for _, r in out.iterrows():
        print(f"{label(r)} {ci({'gm': r.beta, 'lo': r.lo, 'hi': r.hi})} | {r.n} | {r.clusters} | {r.dropped} |")


def ratio_table(table: pd.DataFrame, ratios: dict[str, str], title: str) -> None:
    base = table[T.is_reference_arm(table)]
    if base.empty:
        print(f"\n{title}\n\n(no rows)")
        return
    sums = {k: T.summarize_ratio(base, col, n_boot=N_BOOT, seed=SEED).set_index(list(T.SLICE)) for k, col in ratios.items()}
    first = next(iter(sums.values()))
    print(f"\n{title}\n")
    print("| method | bits | eval set | " + " | ".join(f"{k} [95% cluster CI]" for k in ratios) + " | n | clusters | dropped |")
    print("|---|---:|---|" + "---|" * len(ratios) + "---:|---:|---:|")
    for _, r in method_order(first.reset_index()).iterrows():
        key = tuple(r[c] for c in T.SLICE)
        cells = " | ".join(ci(s.loc[key]) for s in sums.values())
        print(f"{label(r)} {cells} | {r.n} | {r.clusters} | {r.dropped} |")


def per_point(table: pd.DataFrame, col: str, title: str) -> None:
    base = table[T.is_reference_arm(table)]
    rows = base[base.method.isin(["gptq"]) & base.bits.isin([2.0, 3.0])]
    s = T.summarize_ratio(rows, col, by=(*T.SLICE, "branch_from"), n_boot=N_BOOT, seed=SEED)
    print(f"\n{title}\n")
    points = sorted(s.branch_from.unique())
    print("| method | bits | eval set | " + " | ".join(f"b = {int(b)}" for b in points) + " |")
    print("|---|---:|---|" + "---|" * len(points))
    for key, g in T.slices(s):
        g = g.set_index("branch_from")
        print(f"{label(key)} " + " | ".join(ci(g.loc[b]) for b in points) + " |")


def runs_text(table: pd.DataFrame) -> str:
    """'9 sizes' (one run each) or '4 sizes x 2 seeds' ..., of a ratio table's reference-lr rows."""
    base = table[T.is_reference_arm(table)]
    sizes, runs = base.arm.nunique(), base.cluster.nunique()
    return f"{sizes} sizes" if runs == sizes else f"{runs} runs ({sizes} sizes)"


def cooldown(frame: pd.DataFrame) -> pd.DataFrame:
    cr = T.cooldown_ratios(frame)
    runs = runs_text(cr)
    ratio_table(cr, {"after / const-lr at equal D": "ratio_equal_d", "after / branch point": "ratio_before"},
                "## b. Cooldown branches: QiD at the branch end over the constant-lr run (interpolated log-log at "
                f"the same D) and over the branch point (geometric means over {runs} x 5 branch points)")
    late = cr[cr.branch_from * 16384 >= MIN_TOKENS]
    ratio_table(late, {"after / const-lr at equal D": "ratio_equal_d", "after / branch point": "ratio_before"},
                f"### b. The same, branch points past the early transient only (D at b >= {MIN_TOKENS:.3g}: b = 466, 889, 1695)")
    per_point(cr, "ratio_equal_d", f"### b. after / const-lr at equal D, per branch point b (geometric mean over {runs})")
    per_point(cr, "ratio_before", "### b. after / branch point, per branch point b")
    base = cr[T.is_reference_arm(cr) & (cr.method == "gptq") & (cr.bits == 2)]
    print("\n16-bit loss at the branch end minus the constant-lr run's at equal D (bits/byte), per b "
          "(median over sizes; GPTQ rows, loss16 is shared by methods):\n")
    print("| eval set | " + " | ".join(f"b = {b}" for b in sorted(base.branch_from.unique())) + " |")
    print("|---|" + "---:|" * base.branch_from.nunique())
    for ev in EVAL_SETS:
        d = base[base.eval_set == ev].assign(diff=lambda x: x.loss16_after - x.loss16_equal_d)
        print(f"| {ev} | " + " | ".join(f"{v:+.3f}" for v in d.groupby("branch_from")["diff"].median()) + " |")
    return cr


def lr_arms(frame: pd.DataFrame) -> None:
    lr = T.lr_arm_ratios(frame)
    print("\n## c. Peak lr: QiD of h384-l4 at 0.5x and 2x its swept peak lr over the 1x run at the same checkpoint "
          f"(one size, one seed: no cluster CI; geometric mean, min-max over checkpoints; runs D >= {MIN_TOKENS:.3g})\n")
    print("| method | bits | eval set | kind | 0.5x: gm (min-max) | 2x: gm (min-max) | n per arm |")
    print("|---|---:|---|---|---|---|---:|")
    lr = lr[(lr.kind != "run") | (lr.tokens >= MIN_TOKENS)]
    for _, r in method_order(lr.drop_duplicates(list(T.SLICE))).iterrows():
        s = lr[(lr.method == r.method) & (lr.bits == r.bits) & (lr.eval_set == r.eval_set)]
        for kind in ("run", "branch", "average"):
            cells = []
            for m in (0.5, 2.0):
                v = s[(s.kind == kind) & np.isclose(s.multiplier, m) & (s.ratio > 0)].ratio
                cells.append(f"{np.exp(np.log(v).mean()):.2f} ({v.min():.2f}-{v.max():.2f})" if len(v) else "-")
            print(f"{label(r)} {kind} | {cells[0]} | {cells[1]} | {len(s[(s.kind == kind) & np.isclose(s.multiplier, 2.0)])} |")
    print("\nPer checkpoint, GPTQ 2 bits, debian-en-heldout (ratio to 1x; branch ends listed by their branch point):\n")
    s = lr[(lr.method == "gptq") & (lr.bits == 2) & (lr.eval_set == "debian-en-heldout")]
    print("| kind | step | D (M) | 0.5x | 2x |")
    print("|---|---:|---:|---:|---:|")
    for (kind, step), g in s.groupby(["kind", "step"]):
        r = {m: g[np.isclose(g.multiplier, m)].ratio for m in (0.5, 2.0)}
        print(f"| {kind} | {step} | {g.tokens.iloc[0] / 1e6:.1f} | " + " | ".join(f"{v.iloc[0]:.2f}" if len(v) else "-" for v in r.values()) + " |")
    lr_loss16(frame)


def lr_loss16(frame: pd.DataFrame) -> None:
    f = frame[(frame.n_params == frame[~T.is_reference_arm(frame)].n_params.max()) & (frame.method == "gptq")
              & (frame.bits == 2) & (frame.schedule == "constant")]
    print("\n16-bit loss (bits/byte) of the three h384-l4 arms at the run's end (step 1950) and the last branch end:\n")
    print("| eval set | kind | step | " + " | ".join(sorted(f.arm.unique())) + " |")
    print("|---|---|---:|" + "---:|" * f.arm.nunique())
    for ev in EVAL_SETS:
        for kind, step in (("run", 1950), ("branch", 1949)):
            g = f[(f.eval_set == ev) & (f.kind == kind) & (f.step == step)].set_index("arm").loss16
            print(f"| {ev} | {kind} | {step} | " + " | ".join(f"{g.get(a, np.nan):.3f}" for a in sorted(f.arm.unique())) + " |")


def averaging(frame: pd.DataFrame) -> None:
    av = T.averaging_ratios(frame)
    ratio_table(av, {"LAWA / run at b": "ratio"},
                "## d. Weight averaging: QiD of the LAWA average (k = 5 over the last 10% of steps before b) over the "
                f"run's checkpoint at b (geometric mean over {runs_text(av)} x 5 branch points)")
    per_point(av, "ratio", "### d. LAWA / run at b, per branch point b")
    base = av[T.is_reference_arm(av) & (av.method == "gptq") & (av.bits == 2)]
    print("\n16-bit loss of the average minus the run's at b (bits/byte; median over sizes):\n")
    for ev in EVAL_SETS:
        d = base[base.eval_set == ev].assign(diff=lambda x: x.loss16_avg - x.loss16_run)
        print(f"- {ev}: " + ", ".join(f"b={b}: {v:+.3f}" for b, v in d.groupby("branch_from")["diff"].median().items()))


def cosine(frame: pd.DataFrame) -> None:
    cos = T.cosine_ratios(frame)
    ratio_table(cos, {"cosine end / const-lr at equal D": "ratio_const", "cosine end / nearest branch end": "ratio_branch"},
                f"## e. Cosine runs (to 10% of peak; ends at 488, 975, 1950 updates; {cos.arm.nunique()} sizes): QiD at the end")
    print("\nPer run, GPTQ 2 bits (QiD and 16-bit loss in bits/byte; nearest branch end: b = 466 -> 536, 889 -> 1022, "
          "1695 -> 1949):\n")
    print("| eval set | arm | end step | QiD cos | QiD const | QiD branch | loss16 cos | loss16 const | loss16 branch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    s = cos[(cos.method == "gptq") & (cos.bits == 2)].sort_values(["eval_set", "arm", "step"], ascending=[False, True, True])
    for _, r in s.iterrows():
        print(f"| {r.eval_set} | {r.arm} | {r.step} | {r.qid_cos:.4f} | {r.qid_const:.4f} | {r.qid_branch:.4f} | "
              f"{r.loss16_cos:.3f} | {r.loss16_const:.3f} | {r.loss16_branch:.3f} |")
    n = frame.groupby("arm").n_params.first()  # N per size arm
    held = s[(s.eval_set == "debian-en-heldout") & (s.step < s.step.max())]
    print("\nQiD cos / const-lr at equal D and cos / nearest branch end by size, the shorter runs (GPTQ 2 bits, "
          "debian-en-heldout; |loss16 cos - const| in bits/byte): " + "; ".join(
              f"{r.arm} {r.step}: {r.qid_cos / r.qid_const:.3f} / {r.qid_cos / r.qid_branch:.3f} "
              f"(|dloss16| {abs(r.loss16_cos - r.loss16_const):.3f})"
              for _, r in held.assign(_n=held.arm.map(n)).sort_values(["step", "_n"]).iterrows()))
    short = cos[(cos.step < cos.step.max()) & (cos.qid_cos > 0) & (cos.qid_const > 0)]  # the 488/975 ends
    cosine_size_trend(short, n)
    cosine_n_or_tokens_per_param(short, n)
    d = s.assign(diff=s.loss16_cos - s.loss16_const)
    ends = d[d.step == d.step.max()].assign(_n=lambda e: e.arm.map(n)).sort_values(["eval_set", "_n"], ascending=[False, True])
    print("\nAt the 1950-update ends, loss16(cosine) - loss16(const-lr) (bits/byte) by size, with D/N (tokens per "
          "non-embedding parameter):", "; ".join(
              f"{r.eval_set} {r.arm} (D/N {r.tokens / r._n:.2g}): {r['diff']:+.3f}" for _, r in ends.iterrows()))
    print(f"\nloss16(cosine end) - loss16(const-lr at equal D), median over the {d.arm.nunique()} sizes (bits/byte):",
          ", ".join(f"{ev} {st}: {v:+.3f}" for (ev, st), v in d.groupby(["eval_set", "step"])["diff"].median().items()))


def cosine_size_trend(short: pd.DataFrame, n: pd.Series) -> None:
    """Slope of ln(QiD cos / const-lr at equal D) on ln N over sizes, the shorter runs (488 and 975
    updates, where the 16-bit losses agree) averaged per size first: one point per size, CI from
    resampling sizes. Out of sample: the same line fitted without the largest size, its ratio there
    predicted and measured (the trend was first seen on 8 sizes, before the largest was trained).
    ``short``: ``cosine_ratios`` rows of the shorter ends with both QiD > 0; ``n``: N per size arm."""
    print("\nTrend with size of the shorter cosine runs' QiD over constant lr: slope of ln(cos / const) on ln N, "
          "ln ratio averaged over the 488- and 975-update ends per size (95% CI over sizes):\n")
    print("| method | bits | eval set | slope [95% CI] | ratio at the smallest / largest size (fit) | sizes "
          "| largest size held out: predicted / measured |")
    print("|---|---:|---|---|---|---:|---|")
    rows = []
    for key, g in T.slices(short):
        per = np.log(g.qid_cos / g.qid_const).groupby(g.arm).mean()
        if len(per) < 4:  # a slope over fewer sizes says little (and its bootstrap less)
            continue
        x = np.log(n[per.index].to_numpy(float))
        fit = T.fe_slope(x, per.to_numpy(float), np.zeros(len(per)), per.index.to_numpy(), N_BOOT, SEED)
        a = per.mean() - fit["slope"] * x.mean()
        rest = x < x.max()
        b_out, a_out = np.polyfit(x[rest], per.to_numpy(float)[rest], 1)
        rows.append({**key, **fit, "small": np.exp(a + fit["slope"] * x.min()), "large": np.exp(a + fit["slope"] * x.max()),
                     "held_pred": np.exp(a_out + b_out * x.max()), "held_meas": np.exp(per.to_numpy(float)[~rest][0])})
    for _, r in method_order(pd.DataFrame(rows)).iterrows():
        print(f"{label(r)} {ci({'gm': r.slope, 'lo': r.lo, 'hi': r.hi}, fmt='{:+.3f}')} | "
              f"{r.small:.2f} / {r.large:.2f} | {r.clusters} | {r.held_pred:.2f} / {r.held_meas:.2f} |")


def cosine_n_or_tokens_per_param(short: pd.DataFrame, n: pd.Series) -> None:
    """N or D/N? ln(QiD cos / const-lr) of each shorter end (488 and 975 updates: D doubles within a
    size) on ln N and ln D together. A ratio set by D/N alone gives b_N = -c_D (b_N + c_D = 0); one
    set by N alone gives c_D = 0. CIs from resampling sizes (each size's two ends together; a draw
    of one size or one D fits nothing and is skipped). Arguments as ``cosine_size_trend``'s."""
    print("\nN or D/N: ln(cos / const) of the 488- and 975-update ends on ln N and ln D (tokens) together; "
          "D/N alone predicts b_N + c_D = 0, N alone c_D = 0 (95% CI over sizes):\n")
    print("| method | bits | eval set | b_N [95% CI] | c_D [95% CI] | b_N + c_D [95% CI] | ends | sizes |")
    print("|---|---:|---|---|---|---|---:|---:|")
    rows = []
    for key, g in T.slices(short):
        if g.arm.nunique() < 4:
            continue
        x = np.column_stack([np.ones(len(g)), np.log(g.arm.map(n).to_numpy(float)), np.log(g.tokens.to_numpy(float))])
        y = np.log((g.qid_cos / g.qid_const).to_numpy(float))
        coef = np.linalg.lstsq(x, y, rcond=None)[0]
        sizes, tokens, clusters = g.arm.to_numpy(), g.tokens.to_numpy(), T._Clusters(g.arm)
        reps = np.array([np.linalg.lstsq(x[i], y[i], rcond=None)[0] for i in clusters.rows(N_BOOT, SEED)
                         if np.unique(tokens[i]).size > 1 and np.unique(sizes[i]).size > 1])
        ci = [np.percentile(v, [2.5, 97.5]) for v in (reps[:, 1], reps[:, 2], reps[:, 1] + reps[:, 2])]
        rows.append({**key, "b": coef[1], "c": coef[2], "ci": ci, "ends": len(g), "sizes": clusters.n})
    for _, r in method_order(pd.DataFrame(rows)).iterrows():
        cells = [f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" for v, (lo, hi) in zip((r.b, r.c, r.b + r.c), r.ci)]
        print(f"{label(r)} {' | '.join(cells)} | {r.ends} | {r.sizes} |")


def forms_table(frame: pd.DataFrame, by, title: str) -> None:
    out = T.compare_forms(frame, MIN_TOKENS, by=by, n_boot=N_BOOT_FORMS, seed=SEED)
    names = [f.name for f in T.FORMS]
    print(f"\n{title}\n")
    print("| method | bits | eval set | protocol | n | " + " | ".join(f"med abs log err {n}" for n in names)
          + " | bias (mean log err) " + " / ".join(names) + " | " + " | ".join(f"ouyang - {n} [95% CI]" for n in names[1:])
          + " | winner |")
    print("|---|---:|---|---|---:|" + "---:|" * len(names) + "---|" * len(names) + "---|")
    out = out.assign(bits=out.get("bits", "2+3"))
    order = {"gptq": 0, "rtn": 1, "awq": 2, "nf4": 3}
    out = out.assign(_o=out.method.map(order)).sort_values(["_o", "eval_set", "bits", "protocol"], ascending=[True, False, True, False])
    for _, r in out.iterrows():
        meds = " | ".join(f"{r[f'med_{n}']:.3f}" for n in names)
        bias = " / ".join(f"{r[f'bias_{n}']:+.3f}" for n in names)
        diffs = " | ".join(ci({"gm": r[f"diff_{n}"], "lo": r[f"lo_{n}"], "hi": r[f"hi_{n}"]}, fmt="{:+.3f}") for n in names[1:])
        bits = r.bits if isinstance(r.bits, str) else int(r.bits)
        print(f"| {r.method} | {bits} | {r.eval_set} | {r.protocol} | {r.n} | {meds} | {bias} | {diffs} | {r.winner} |")


def forms(frame: pd.DataFrame) -> None:
    print("\n## f. Law forms held out: log QiD = c + beta log D - alpha log N - gamma log P [+ delta decay "
          "[+ eta decay_tokens/D]], least squares on logs of QiD > 0, D >= "
          f"{MIN_TOKENS:.3g}; targets: branch ends and cosine ends. loso = fit on the other sizes (all kinds but "
          "averages), predict the held-out size; const = fit on the constant-lr runs of all sizes (decay is 0 "
          "there, so the decay-aware forms reduce to Ouyang's: 'same fit'). Errors in natural log of "
          "predicted/measured; a positive difference means the decay-aware form predicts better.")
    forms_table(frame[frame.bits < 16], T.SLICE, "### f. Per slice (one bit width: the log P term drops)")
    deltas(frame)
    pooled = frame[frame.bits.isin([2.0, 3.0]) & (frame.method != "nf4")]
    forms_table(pooled, ("method", "eval_set"), "### f. 2 and 3 bits pooled (gamma fitted)")
    rows = pooled[T.is_reference_arm(pooled) & (pooled.kind != "average") & (pooled.tokens >= MIN_TOKENS) & (pooled.qid > 0)]
    print("\nFitted on all points of the slice (GPTQ, 2+3 bits):\n")
    for ev in EVAL_SETS:
        r = rows[(rows.method == "gptq") & (rows.eval_set == ev)]
        for f in T.FORMS if len(r) else ():
            p = T.fit_params(f, r)
            print(f"- {ev} {f.name}: " + ", ".join(f"{k} {v:+.3f}" for k, v in p.items()) + f" (n = {len(r)})")


def deltas(frame: pd.DataFrame) -> None:
    out = T.form_coefficients(frame, T.FORMS[1], MIN_TOKENS, n_boot=N_BOOT_FORMS, seed=SEED)
    print("\n### f. The decay-aware form fitted on every point (runs, branch ends, cosine checkpoints; D >= "
          f"{MIN_TOKENS:.3g}): delta (QiD x exp(delta) at a fully decayed lr, equal D and N) and beta, 95% cluster CIs\n")
    print("| method | bits | eval set | delta [95% CI] | exp(delta) | beta [95% CI] | alpha [95% CI] | n |")
    print("|---|---:|---|---|---:|---|---|---:|")
    wide = out.set_index([*T.SLICE, "term"])
    for _, r in method_order(out[out.term == "decay"]).iterrows():
        k = tuple(r[c] for c in T.SLICE)
        cell = lambda t: ci({"gm": wide.loc[(*k, t)].value, "lo": wide.loc[(*k, t)].lo, "hi": wide.loc[(*k, t)].hi}, fmt="{:+.3f}")
        print(f"{label(r)} {cell('decay')} | {np.exp(r.value):.2f} | {cell('logD')} | {cell('logN')} | {r.n} |")


def batch_order(frame: pd.DataFrame) -> None:
    """g. Shuffled vs contiguous batches (the seed runs of session 3 vs their main runs), and the
    replicate spread of the shuffled seeds."""
    g = T.batch_order_ratios(frame, MIN_TOKENS)
    if g.empty:
        return
    arms = sorted(set(g.arm), key=lambda a: frame[frame.arm == a].n_params.iloc[0])
    ratio_table(g, {"shuffled / contiguous": "ratio"},
                "## g. Batch order: QiD of a shuffled-batch run (seed_data = sequences) over its contiguous-batch "
                f"main run at the same step, D >= {MIN_TOKENS:.3g} (sizes {', '.join(arms)}; seeds "
                f"{sorted(set(g.seed))} vs {sorted(set(g.seed_contiguous))}; clusters = sizes)")
    base = g[(g.method == "gptq") & (g.bits == 2)]
    print("\nloss16(shuffled) - loss16(contiguous) at the same step (bits/byte; median over seeds and steps):\n")
    for ev in EVAL_SETS:
        d = base[base.eval_set == ev]
        print(f"- {ev}: " + ", ".join(f"{a}: {v:+.3f}" for a, v in d.groupby("arm").loss16_diff.median()
                                      .reindex(arms).items()))
    m = T.matched_loss_ratios(frame, MIN_TOKENS)
    ratio_table(m, {"shuffled / contiguous at equal loss16": "ratio", "D shuffled / D contiguous at equal loss16":
                    "tokens_ratio"},
                "### g. The same at equal 16-bit loss instead of equal D: the contiguous run interpolated in "
                "(loss16, log QiD) and (loss16, log D) at each shuffled checkpoint's loss16, where it lies inside "
                f"the contiguous run's range (D >= {MIN_TOKENS:.3g}, QiD > 0; clusters = sizes)")
    seed_spread(frame, "shuffled", "the shuffled runs")


def seed_spread(frame: pd.DataFrame, order: str, what: str) -> None:
    """g. Replicate spread within one batch order: each later seed's QiD over the first seed's."""
    s = T.seed_ratios(frame, order, MIN_TOKENS)
    if s.empty:
        return
    ratio_table(s, {"seed / first seed": "ratio"},
                f"### g. Replicate spread within {what}: QiD of each later seed ({sorted(set(s.seed))}) over the first "
                f"seed's ({sorted(set(s.seed_first))}) at the same step, D >= {MIN_TOKENS:.3g} (clusters = sizes)")
    spread = s.assign(a=np.abs(np.log(s.ratio.where(s.ratio > 0))))
    heldout = spread[(spread.method == "gptq") & (spread.eval_set == "debian-en-heldout")]
    print("\nmedian |log ratio| over sizes, seeds and steps, per bits (GPTQ, debian-en-heldout): "
          + ", ".join(f"{b:g} bits {np.exp(v):.3f}x" for b, v in heldout.groupby("bits").a.median().items()))
    print("per seed, geometric mean over sizes and steps (GPTQ, debian-en-heldout): " + "; ".join(
        f"seed {int(sd)}: " + ", ".join(f"{b:g} bits {np.exp(np.log(g.ratio[g.ratio > 0]).mean()):.3f}x"
                                        for b, g in h.groupby("bits"))
        for sd, h in heldout.groupby("seed")))
    print("90th percentile of |log ratio|, same rows: "
          + ", ".join(f"{b:g} bits {np.exp(v):.3f}x" for b, v in heldout.groupby("bits").a.quantile(0.9).items()))
    base = s[(s.method == "gptq") & (s.bits == 2)]
    print("loss16(seed) - loss16(first seed) at the same step (bits/byte; median and max |diff| over seeds and steps): "
          + "; ".join(f"{ev} {d.loss16_diff.median():+.4f} (max |{d.loss16_diff.abs().max():.4f}|)"
                      for ev in EVAL_SETS for d in [base[base.eval_set == ev]] if len(d)))


def main(argv) -> None:
    name = argv[1] if len(argv) > 1 else DEFAULT
    every = T.check_frame(load(name))
    if "batch_order" not in every:  # a frame without the column is taken as one batch order
        every = every.assign(batch_order="contiguous")
    header(every, name)
    frame = every[every.batch_order == "contiguous"]
    print(f"batch orders: {every.batch_order.value_counts().to_dict()}; items a-f use the contiguous-batch rows "
          f"(every main run, as trained, and the replicate seeds {sorted(set(frame.seed) - {0})}; bootstrap clusters = "
          "(size arm, seed)), g compares the shuffled-batch seed runs with them and the seeds of each order "
          "with each other")
    beta_table(frame)
    cooldown(frame)
    lr_arms(frame)
    averaging(frame)
    cosine(frame)
    forms(frame)
    seed_spread(frame, "contiguous", "the contiguous runs (the replicates)")
    shuffled = every[every.batch_order == "shuffled"]
    if len(shuffled):
        batch_order(every)
        print(f"\n# The shuffled-batch runs alone: items a, b, d on them ({shuffled.arm.nunique()} sizes x "
              f"{shuffled.seed.nunique()} seeds)")
        beta_table(shuffled)
        cooldown(shuffled)
        averaging(shuffled)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except QidlabError as e:  # one line, as the CLI prints it
        print(f"findings2: {e}", file=sys.stderr)
        sys.exit(2)
