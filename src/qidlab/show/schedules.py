"""Figures of where a checkpoint sits in its training (issue 17; Catalan-Tatjer et al. 2025): QiD
before and after a cooldown, at several peak learning rates, and of weight averages (LAWA).

They read the per-checkpoint columns of ``qidlab.train.trajectories`` (``kind``: run, branch = a
cooldown's end, average = LAWA at a branch point; ``trajectory``, ``arm``, ``schedule``,
``peak_lr``, ``branch_from``: the run step a branch left or an average ends at; ``lr_factor``: 1 for
a size's reference-lr arm, ``qidlab.laws.trajectories.is_reference_arm``), on the study's
primary slice (eval set, method) at one bit width (3 when measured, else the middle one), from every
row of the study (``Study.all_rows``: the rows a data set's ``primary.where`` leaves out of the laws
included). A data set with both batch orders (``batch_order``: contiguous, the main runs' rule, and
shuffled; they differ 2-4x in QiD at equal D) is drawn with its contiguous-batch runs, each seed's
run its own line. N is non-embedding parameters, D training tokens, QiD in the study's unit
(``Study.unit``).
"""

from __future__ import annotations

import numpy as np

from ..laws.trajectories import is_reference_arm
from .settings import hold_settings
from .style import (
    TOKENS,
    FigureUnavailable,
    colours,
    legend,
    levels,
    new_figure,
    note_hidden,
    qid_limits,
    size_text,
    suptitle,
)

#: What these figures need of ``qidlab.train.trajectories.COLUMNS`` (cooldown also ``lr_factor``).
NEEDED = ("kind", "trajectory", "arm", "schedule", "peak_lr", "branch_from")
BITS = 3.0  # the bit width drawn when measured (GPTQ 3-bit QiD is well above the noise at every size)


def trajectory_rows(study, figure: str, needed=NEEDED, every_order: bool = False):
    """(the primary slice's rows at one bit width, with the other suites' rows of that slice, the
    bit width); ``FigureUnavailable`` when the measurements lack a trajectory column of ``needed``.
    With both batch orders, only the contiguous rows unless ``every_order``."""
    import pandas as pd

    rows = study.all_rows
    missing = [c for c in needed if c not in rows.columns or rows[c].isna().all()]
    if missing:
        raise FigureUnavailable(f"{figure} needs the trajectory columns {', '.join(missing)} "
                                "(qidlab.train.trajectories: runs, cooldown branches, averages), which the "
                                "measurements lack")
    frame = pd.concat([rows, study.other_suites], ignore_index=True) if study.other_suites is not None else rows
    frame = frame[(frame.eval_set == study.eval_set) & (frame.method == study.method)]
    if not every_order and "batch_order" in frame.columns and frame.batch_order.nunique() > 1:
        frame = frame[frame.batch_order == "contiguous"]
    frame, _ = hold_settings(frame)
    bits = levels(frame.bits)
    p = BITS if BITS in bits else bits[len(bits) // 2]
    return frame[frame.bits == p], p


def qid_label(study) -> str:
    """'QiD [bits/byte]': QiD in the study's unit (``Study.unit_text``)."""
    return f"QiD [{study.unit_text}]"


def _axes(ax, study, x: str = TOKENS, title: str | None = None) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(qid_label(study))
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)


def _ci(ax, rows, x: str, colour, y: str = "qid") -> None:
    """95% CI bars of ``rows`` (nothing drawn where the rows carry none); the lower end kept above 0."""
    if "qid_ci_low" not in rows.columns or rows.qid_ci_low.isna().all() or rows.empty:
        return
    q = rows[y].to_numpy(float)
    low = np.minimum(np.clip(q - rows.qid_ci_low.to_numpy(float), 0, None), 0.999 * q)
    high = np.clip(rows.qid_ci_high.to_numpy(float) - q, 0, None)
    ax.errorbar(rows[x], q, yerr=np.nan_to_num(np.vstack([low, high])), fmt="none", ecolor=colour, elinewidth=0.8)


def _main_arm(rows):
    """``{N: arm}``: the arm of each size drawn as its main run, its reference-lr arm (lr_factor 1,
    ``is_reference_arm``; should a size have several, the one with the most constant-lr rows, then
    by name). A size with peak-lr variants only has none."""
    runs = rows[(rows.schedule == "constant") & is_reference_arm(rows)]
    counts = runs.groupby(["n_params", "arm"]).size().reset_index(name="rows")
    counts = counts.sort_values(["n_params", "rows", "arm"], ascending=[True, False, True]).drop_duplicates("n_params")
    return dict(zip(counts.n_params, counts.arm))


def branch_pairs(rows, kind: str):
    """Each ``kind`` row (branch or average) beside the run checkpoint it left: columns of the
    row plus ``tokens_before``, ``qid_before``, ``qid_ci_low_before``, ``qid_ci_high_before``."""
    after = rows[(rows.kind == kind) & rows.branch_from.notna()]
    run = rows[rows.kind == "run"][["suite", "trajectory", "step", "tokens", "qid", "qid_ci_low", "qid_ci_high"]]
    run = run.rename(columns={"step": "branch_from", **{c: f"{c}_before" for c in
                                                        ("tokens", "qid", "qid_ci_low", "qid_ci_high")}})
    after = after.assign(branch_from=after.branch_from.astype(float))
    return after.merge(run.assign(branch_from=run.branch_from.astype(float)), on=["suite", "trajectory",
                                                                                   "branch_from"])


# ---------------------------------------------------------------------------
# cooldown


def cooldown(study):
    """Per size, QiD vs D of the constant-lr run (line, CI bars), each cooldown branch's end
    (square) joined to its branch point (circle on the run), and cosine runs (dotted, their end a
    cross) when measured."""
    rows, bits = trajectory_rows(study, "cooldown", (*NEEDED, "lr_factor"))
    main = _main_arm(rows)
    sizes = [n for n in sorted(main) if ((rows.n_params == n) & (rows.kind == "branch")).any()]
    if not sizes:
        raise FigureUnavailable("cooldown needs cooldown branches (kind = branch) of a constant-lr run")
    fig, axes = new_figure(len(sizes), rows=int(np.ceil(len(sizes) / 3)), width=3.6, height=2.9,
                           dpi=study.options.dpi)
    hidden = 0
    for ax, n in zip(axes, sizes):
        hidden += _cooldown_panel(ax, study, rows[(rows.n_params == n) & (rows.arm == main[n])], n)
    styles = {"constant-lr run": {"ls": "-", "marker": "o", "ms": 3}, "branch point (before)": {"ls": "",
              "marker": "o", "mfc": "none", "ms": 6}, "cooldown end (after)": {"ls": "", "marker": "s", "ms": 5},
              "cosine run (end: x)": {"ls": ":", "marker": "X", "ms": 6}}
    legend(axes[min(2, len(axes) - 1)], {}, "n_params", styles, outside=True)
    note = f"; {hidden} points with QiD <= 0 not shown" if hidden else ""
    suptitle(fig, f"cooldown — QiD before and after decaying the lr to 0, vs training tokens ({bits:g}-bit "
                  f"{study.method}, eval set {study.eval_set}{note})")
    return fig


def _cooldown_panel(ax, study, rows, n) -> int:
    """One size's panel; returns how many points QiD <= 0 left out."""
    shown = rows[rows.qid > 0]
    run = shown[(shown.kind == "run") & (shown.schedule == "constant")].sort_values("tokens")
    for _, one in run.groupby("trajectory"):  # each seed's run its own line
        ax.plot(one.tokens, one.qid, "o-", ms=3, lw=1.2, color="C0", gid="run")
    _ci(ax, run, "tokens", "C0")
    pairs = branch_pairs(shown, "branch")
    pairs = pairs[pairs.qid_before > 0]
    for _, p in pairs.iterrows():
        ax.plot([p.tokens_before, p.tokens], [p.qid_before, p.qid], "-", color="C3", lw=1, alpha=0.8)
    ax.plot(pairs.tokens_before, pairs.qid_before, "o", mfc="none", ms=6, color="C3", gid="branch-point")
    ax.plot(pairs.tokens, pairs.qid, "s", ms=5, color="C3", gid="branch-end")
    _ci(ax, pairs, "tokens", "C3")
    _cosine(ax, shown)
    _axes(ax, study, title=f"N = {size_text(n)} ({rows.arm.iloc[0]})")
    if len(shown):
        ax.set_ylim(*qid_limits(shown.qid))  # from the points, not a CI reaching down to 0
    return int(len(rows) - len(shown))


def _cosine(ax, rows) -> None:
    """Cosine runs (dotted), each run's last checkpoint a cross."""
    cos = rows[(rows.kind == "run") & (rows.schedule == "cosine")]
    for _, run in cos.groupby(["suite", "trajectory"]):
        run = run.sort_values("tokens")
        ax.plot(run.tokens, run.qid, ":", color="C2", lw=1)
        ax.plot(run.tokens.iloc[-1:], run.qid.iloc[-1:], "X", ms=6, color="C2", gid="cosine-end")


# ---------------------------------------------------------------------------
# peak learning rate


def peak_lr(study):
    """QiD vs D of one size's runs at several peak learning rates (lines; cooldown ends: squares),
    and QiD at each run's last D and its last cooldown's end vs the peak lr."""
    rows, bits = trajectory_rows(study, "peak-lr")
    n, arms = _lr_arms(rows)
    rows = rows[(rows.n_params == n) & rows.arm.isin(arms) & (rows.qid > 0)]
    colour = colours(sorted(arms.values()), "plasma")
    fig, (left, right) = new_figure(2, dpi=study.options.dpi)
    for arm, lr in arms.items():
        _lr_curve(left, rows[rows.arm == arm], colour[lr])
    _axes(left, study, title=f"N = {size_text(n)}: QiD vs training tokens")
    _lr_panel(right, study, rows, arms, colour)
    legend(right, colour, "peak lr", {"run": {"ls": "-", "marker": "o", "ms": 3},
                                      "cooldown end": {"ls": "", "marker": "s", "ms": 5}}, outside=True)
    suptitle(fig, f"peak-lr — QiD of {size_text(n)}-parameter runs at {len(arms)} peak learning rates "
                  f"({bits:g}-bit {study.method}, eval set {study.eval_set})")
    return fig


def _lr_arms(rows):
    """(N, {arm: peak lr}) of the size whose constant-lr runs have the most distinct peak lrs."""
    runs = rows[(rows.kind == "run") & (rows.schedule == "constant")]
    per_size = runs.groupby("n_params").peak_lr.nunique()
    if per_size.empty or per_size.max() < 2:
        raise FigureUnavailable("peak-lr needs constant-lr runs of one size at two or more peak learning rates")
    n = float(per_size[per_size == per_size.max()].index.max())
    arms = runs[runs.n_params == n].groupby("arm").peak_lr.first().sort_values()
    return n, {str(a): float(lr) for a, lr in arms.items()}


def _lr_curve(ax, rows, colour) -> None:
    run = rows[(rows.kind == "run") & (rows.schedule == "constant")].sort_values("tokens")
    ax.plot(run.tokens, run.qid, "o-", ms=3, lw=1.2, color=colour, gid="run")
    _ci(ax, run, "tokens", colour)
    ends = rows[rows.kind == "branch"]
    ax.plot(ends.tokens, ends.qid, "s", ms=5, color=colour, gid="branch-end")
    _ci(ax, ends, "tokens", colour)


def _lr_panel(ax, study, rows, arms, colour) -> None:
    """QiD at each arm's last run D (circle) and its latest cooldown end (square) vs peak lr."""
    for arm, lr in arms.items():
        mine = rows[rows.arm == arm]
        for kind, marker, gid in (("run", "o", "last-run"), ("branch", "s", "last-branch")):
            sub = mine[(mine.kind == kind) & (mine.schedule == "constant")]
            last = sub[sub.tokens == sub.tokens.max()].assign(peak_lr=lr)
            ax.plot(last.peak_lr, last.qid, marker, ms=6, color=colour[lr], gid=gid)
            _ci(ax, last, "peak_lr", colour[lr])
    _axes(ax, study, x="peak learning rate", title="at the last D (run) and latest cooldown end")
    ax.set_xticks(list(arms.values()), [f"{v:.2g}" for v in arms.values()])
    ax.minorticks_off()


# ---------------------------------------------------------------------------
# weight averaging


def averaging(study):
    """QiD of each weight average (LAWA, kind = average) against the run checkpoint where it ends
    (left, with y = x), and their ratio vs D (right, a line per run: a size's peak-lr variants
    share its colour); colour: N."""
    rows, bits = trajectory_rows(study, "averaging")
    pairs = branch_pairs(rows, "average")
    if pairs.empty:
        raise FigureUnavailable("averaging needs weight averages (kind = average) at run checkpoints")
    shown = pairs[(pairs.qid > 0) & (pairs.qid_before > 0)]
    if shown.empty:
        raise FigureUnavailable("averaging: no average and its run checkpoint both have QiD > 0")
    colour = colours(levels(shown.n_params))
    fig, (left, right) = new_figure(2, dpi=study.options.dpi)
    _average_scatter(left, study, shown, colour)
    note_hidden(left, len(pairs) - len(shown))
    _average_ratio(right, shown, colour)
    k = _k(shown)
    legend(right, colour, "n_params", {"y = x / ratio 1": {"ls": "--"}}, outside=True)
    suptitle(fig, f"averaging — QiD of the weight average{k} vs the run at the same checkpoint "
                  f"({bits:g}-bit {study.method}, eval set {study.eval_set})")
    return fig


def _k(pairs) -> str:
    """' (LAWA k = 5)' from the averages' model names (``...-lawa5``), else ' (LAWA)'."""
    ks = set(pairs.model.astype(str).str.extract(r"lawa(\d+)$")[0].dropna())
    return f" (LAWA k = {ks.pop()})" if len(ks) == 1 else " (LAWA)"


def _average_scatter(ax, study, pairs, colour) -> None:
    for n, sub in pairs.groupby("n_params"):
        xerr = np.vstack([np.clip(sub.qid_before - sub.qid_ci_low_before, 0, None),
                          np.clip(sub.qid_ci_high_before - sub.qid_before, 0, None)])
        yerr = np.vstack([np.clip(sub.qid - sub.qid_ci_low, 0, None), np.clip(sub.qid_ci_high - sub.qid, 0, None)])
        ax.errorbar(sub.qid_before, sub.qid, xerr=np.minimum(np.nan_to_num(xerr), 0.999 * sub.qid_before.to_numpy()),
                    yerr=np.minimum(np.nan_to_num(yerr), 0.999 * sub.qid.to_numpy()), fmt="none",
                    ecolor=colour[n], elinewidth=0.7, alpha=0.7)
        ax.plot(sub.qid_before, sub.qid, "o", ms=4, color=colour[n], gid="average")
    lo = min(pairs.qid.min(), pairs.qid_before.min()) / 1.5
    hi = max(pairs.qid.max(), pairs.qid_before.max()) * 1.5
    ax.plot([lo, hi], [lo, hi], "--", color="0.4", lw=1, gid="y=x")
    _axes(ax, study, x="run", title="average vs run at the same D")
    unit = qid_label(study)
    ax.set_xlabel(f"{unit} of the run checkpoint")
    ax.set_ylabel(f"{unit} of the weight average")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def _average_ratio(ax, pairs, colour) -> None:
    for (n, _, _), sub in pairs.sort_values("tokens").groupby(["n_params", "suite", "trajectory"]):
        ax.plot(sub.tokens, sub.qid / sub.qid_before, "o-", ms=4, lw=1, color=colour[n], gid="ratio")
    ax.axhline(1.0, ls="--", color="0.4", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(TOKENS)
    ax.set_ylabel("QiD ratio: average / run")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title("ratio vs training tokens D", fontsize=10)


# ---------------------------------------------------------------------------
# batch order


def batch_order(study):
    """Runs of the same size, lr and D whose batches were drawn differently (``batch_order``:
    contiguous, solid; shuffled, dashed): QiD vs D (left) and QiD vs the 16-bit loss (right, where
    equal loss is read across); colour: N. Constant-lr reference-lr runs of the sizes that have both."""
    rows, bits = trajectory_rows(study, "batch-order", (*NEEDED, "lr_factor", "batch_order"), every_order=True)
    runs = rows[(rows.kind == "run") & (rows.schedule == "constant") & is_reference_arm(rows) & (rows.qid > 0)]
    both = runs.groupby("arm").batch_order.nunique()
    runs = runs[runs.arm.isin(both[both > 1].index)]
    if runs.empty:
        raise FigureUnavailable("batch-order needs runs of one size with both batch orders (batch_order: "
                                "contiguous and shuffled)")
    colour = colours(levels(runs.n_params))
    fig, (left, right) = new_figure(2, dpi=study.options.dpi)
    for (n, order, _), run in runs.sort_values("tokens").groupby(["n_params", "batch_order", "trajectory"]):
        style = "o-" if order == "contiguous" else "s--"
        left.plot(run.tokens, run.qid, style, ms=3, lw=1, color=colour[n], gid=order)
        right.plot(run.loss16, run.qid, style, ms=3, lw=1, color=colour[n], gid=order)
    _axes(left, study, title="vs training tokens D")
    _axes(right, study, x=f"16-bit loss [{study.unit_text}]", title="vs the 16-bit loss")
    right.set_xscale("linear")
    right.invert_xaxis()  # training lowers the loss: left to right as in time
    legend(right, colour, "n_params", {"contiguous batches": {"ls": "-", "marker": "o", "ms": 3},
                                       "shuffled batches": {"ls": "--", "marker": "s", "ms": 3}}, outside=True)
    suptitle(fig, f"batch-order — QiD of runs whose batches were consecutive sequences vs drawn from across the "
                  f"corpus ({bits:g}-bit {study.method}, eval set {study.eval_set})")
    return fig
