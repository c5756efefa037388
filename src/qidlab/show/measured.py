"""Figures of the measurements themselves: Fig. 2 (loss vs tokens), Fig. 8 (two eval sets),
Fig. 11 (QiD over N x D). Losses and QiD in the study's unit (``Study.unit``), N non-embedding
parameters, D tokens."""

from __future__ import annotations

import numpy as np

from ..errors import QidlabError
from ..laws.solve import evaluate
from .settings import hold_settings
from .style import (
    CLIPPED,
    FigureUnavailable,
    colours,
    label,
    legend,
    levels,
    need_columns,
    new_figure,
    note_hidden,
    points,
    positive,
    qid_limits,
    suptitle,
    value_text,
)


def loss_vs_tokens(study):
    """Fig. 2: per bit width, the 16-bit loss (solid) and the quantized loss (dashed) vs D, one colour per N."""
    frame, _ = hold_settings(study.primary)
    need_columns(frame, ["loss16", "loss"], "Fig. 2")
    bits, sizes = levels(frame.bits), levels(frame.n_params)
    colour = colours(sizes)
    fig, axes = new_figure(len(bits), sharey=True, dpi=study.options.dpi)
    for ax, p in zip(axes, bits):
        sub = frame[frame.bits == p]
        for n in sizes:
            rows = sub[sub.n_params == n].sort_values("tokens")
            ax.plot(rows.tokens, rows.loss16, "-", color=colour[n])
            ax.plot(rows.tokens, rows.loss, "--o", ms=3, color=colour[n])
        label(ax, "tokens", "loss", logy=False, title=f"{p:g}-bit ({study.method}) vs 16-bit", unit=study.unit_text)
    legend(axes[-1], colour, "n_params", {"16-bit": {"ls": "-"}, "quantized": {"ls": "--", "marker": "o", "ms": 3}},
           outside=True)
    suptitle(fig, f"Fig. 2 — loss vs training tokens, 16-bit and quantized (eval set {study.eval_set})")
    return fig


def eval_sets(study):
    """Fig. 8: QiD of the largest model vs D on each eval set (left), and each other eval set's
    QiD against the primary one's for the same checkpoint and bit width (right)."""
    frame = study.frame[study.frame.method == study.method]
    names = sorted(frame.eval_set.unique())
    if len(names) < 2:
        raise FigureUnavailable(f"Fig. 8 needs QiD on two eval sets; method {study.method} was measured on "
                                f"one ({names[0]})")
    frame, _ = hold_settings(frame)
    fig, (left, right) = new_figure(2, dpi=study.options.dpi)
    _largest_model(left, frame, names, study.eval_set, study.unit_text)
    _paired(right, frame, names, study.eval_set, study.unit_text)
    suptitle(fig, f"Fig. 8 — QiD on {len(names)} eval sets ({study.method})")
    return fig


def _largest_model(ax, frame, names, primary, unit: str) -> None:
    largest = frame.n_params.max()
    sub, hidden = positive(frame[frame.n_params == largest], "qid")
    colour = colours(levels(sub.bits), "plasma")
    markers = dict(zip(names, "osD^<>p"))
    limits = qid_limits(sub.qid)
    for name in names:
        for p, c in colour.items():
            rows = sub[(sub.eval_set == name) & (sub.bits == p)].sort_values("tokens")
            points(ax, rows, "tokens", c, fmt=f"{markers[name]}-" if name == primary else f"{markers[name]}--",
                   limits=limits)
    label(ax, "tokens", "qid", title=f"largest model, {value_text('n_params', largest)}", unit=unit)
    ax.set_ylim(*limits)
    note_hidden(ax, hidden)
    styles = {n: {"marker": markers[n], "ls": "-" if n == primary else "--"} for n in names}
    legend(ax, colour, "bits", {**styles, CLIPPED: {"marker": "v", "ls": ""}}, outside=True)


def _paired(ax, frame, names, primary, unit: str) -> None:
    keys = [c for c in ("suite", "model", "step", "n_params", "tokens", "bits") if c in frame.columns]
    base = frame[frame.eval_set == primary][keys + ["qid"]]
    lo, hi = np.inf, -np.inf
    for name in names:
        if name == primary:
            continue
        pairs = base.merge(frame[frame.eval_set == name][keys + ["qid"]], on=keys, suffixes=("", "_other"))
        if pairs.empty:
            continue
        diff = float(np.mean(np.abs(pairs.qid_other - pairs.qid)))
        ax.plot(pairs.qid, pairs.qid_other, "o", ms=3.5, alpha=0.8,
                label=f"{name} (n = {len(pairs)}, mean |diff| {diff:.3g})")
        lo, hi = min(lo, pairs.qid.min(), pairs.qid_other.min()), max(hi, pairs.qid.max(), pairs.qid_other.max())
    if not np.isfinite(lo):
        raise FigureUnavailable("Fig. 8: no checkpoint and bit width was measured on two eval sets")
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, label="same QiD")
    label(ax, "qid", "qid", logx=False, logy=False, title="same checkpoint and bit width", unit=unit)
    ax.set_xlabel(f"QiD on {primary} [{unit}]")
    ax.set_ylabel(f"QiD on the other eval set [{unit}]")
    ax.legend(fontsize=7)


def heatmap(study):
    """Fig. 11: mean measured QiD in each (D, N) cell, one panel per bit width, with contours of
    the fitted ouyang2024 law when it could be fitted."""
    frame, _ = hold_settings(study.primary)
    sizes, tokens = levels(frame.n_params), levels(frame.tokens)
    if len(sizes) < 2 or len(tokens) < 2:
        raise FigureUnavailable("Fig. 11 needs at least two model sizes and two token counts")
    cells = frame.groupby(["bits", "n_params", "tokens"]).qid.mean()
    shown = cells[cells > 0]
    if shown.empty:
        raise FigureUnavailable("Fig. 11: no cell has QiD > 0")
    from matplotlib.colors import LogNorm

    norm = LogNorm(float(shown.min()), float(shown.max()))
    bits = levels(frame.bits)
    fig, axes = new_figure(len(bits), sharey=True, dpi=study.options.dpi)
    for ax, p in zip(axes, bits):
        grid = np.full((len(sizes), len(tokens)), np.nan)
        for (n, d), q in cells.loc[p].items():
            grid[sizes.index(n), tokens.index(d)] = q
        ax.set_facecolor("0.85")  # cells without a positive QiD
        mesh = ax.pcolormesh(_edges(tokens), _edges(sizes), np.ma.masked_where(~(grid > 0), grid), norm=norm,
                             cmap="magma")
        _contours(ax, study, p, tokens, sizes, norm)
        label(ax, "tokens", "n_params", title=f"{p:g}-bit ({study.method})")
    fig.colorbar(mesh, ax=axes, label=f"mean measured QiD [{study.unit_text}]")
    suptitle(fig, "Fig. 11 — QiD over model size and training tokens (grey: QiD <= 0 or not measured)")
    return fig


def _edges(values) -> np.ndarray:
    """Cell edges around log-spaced centres."""
    logs = np.log(values)
    mids = (logs[:-1] + logs[1:]) / 2
    return np.exp(np.concatenate([[2 * logs[0] - mids[0]], mids, [2 * logs[-1] - mids[-1]]]))


def _contours(ax, study, bits, tokens, sizes, norm) -> None:
    """Contours of the fitted ouyang2024 QiD (the study's unit) at 1, 2, 5 x 10^k levels chosen from
    the range the law takes in this panel; white lines and labels with a black outline, legible
    over dark and bright cells alike."""
    try:
        fit = study.fit("ouyang2024")
    except QidlabError:
        return
    from matplotlib import patheffects

    (d0, *_, d1), (n0, *_, n1) = _edges(tokens), _edges(sizes)
    D, N = np.meshgrid(np.geomspace(d0, d1, 60), np.geomspace(n0, n1, 60))
    Q = evaluate(fit.law, fit.params({}), {"n_params": N.ravel(), "tokens": D.ravel(), "bits": bits})
    steps = contour_levels(Q)
    if not steps:
        return
    outline = [patheffects.withStroke(linewidth=2.2, foreground="black")]
    lines = ax.contour(D, N, Q.reshape(D.shape), levels=steps, colors="white", linewidths=0.9)
    lines.set(path_effects=outline)
    for text in ax.clabel(lines, fmt=lambda v: f"{v:.2g}", fontsize=7):
        text.set(color="white", path_effects=outline)
    ax.text(0.02, 0.98, "contours: fitted ouyang2024", transform=ax.transAxes, va="top", fontsize=7, color="white",
            path_effects=outline)


def contour_levels(values, least: int = 3, most: int = 7) -> list[float]:
    """Levels m x 10^k (m in 1, 2, 5, or finer) strictly inside the range of the positive
    ``values``: ``least`` to ``most`` of them when the range allows, spread evenly over it."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return []
    lo, hi = float(values.min()), float(values.max())
    for subs in ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0, 7.0), tuple(np.arange(1.0, 10.0, 0.5))):
        first, last = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
        found = [m * 10.0**e for e in range(first, last + 1) for m in subs if lo < m * 10.0**e < hi]
        if len(found) >= least:
            break
    if len(found) > most:
        found = [found[i] for i in np.unique(np.round(np.linspace(0, len(found) - 1, most)).astype(int))]
    return found

