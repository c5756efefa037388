"""Figures of training itself, from the trainer's files (``qidlab.show.suitefiles``): Fig. 12
(weight changes between checkpoints) and Fig. 14 (low-bit vs bf16 training loss)."""

from __future__ import annotations

import numpy as np

from .style import OUTSIDE, FigureUnavailable, label, new_figure, readable, readable_cmap, suptitle
from .suitefiles import read_train_log, read_weight_dynamics, twins, weight_dynamics_files

MAX_HISTOGRAM_PANELS = 3


def _where(study) -> str:
    return ", ".join(str(s) for s in study.suite_dirs) or "no suite folder (give --suite DIR)"


def weight_changes(study):
    """Fig. 12: histograms of log10|w_step - w_prev| per checkpoint (a panel per model, up to
    three; colour: D of the later checkpoint, on a colour bar), and the rms and mean |change|
    against D for every model (legend to the right, off the data)."""
    files = weight_dynamics_files(study.suite_dirs)
    if not files:
        raise FigureUnavailable(f"Fig. 12 needs weight-dynamics.json in the model folders of the suites "
                                f"({_where(study)})")
    docs = [read_weight_dynamics(f) for f in files]
    shown = [docs[i] for i in np.unique(np.linspace(0, len(docs) - 1, min(len(docs), MAX_HISTOGRAM_PANELS))
                                        .round().astype(int))]
    fig, axes = new_figure(len(shown) + 1, dpi=study.options.dpi)
    mapped = _token_colours(shown)
    for ax, doc in zip(axes, shown):
        _histograms(ax, doc, mapped)
    fig.colorbar(mapped, ax=axes[:-1], label="D of the later checkpoint [tokens]", location="bottom", shrink=0.5,
                 aspect=40)
    _summary(axes[-1], docs)
    suptitle(fig, "Fig. 12 — weight changes between consecutive checkpoints (linear weights of the blocks)")
    return fig


#: Share of the weights below which a histogram bin counts as empty (the x-range is cut to the rest).
VISIBLE_SHARE = 1e-3


def _token_colours(docs):
    """A colour scale over log D of every checkpoint of ``docs`` (readable on white)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    tokens = [e["tokens"] for d in docs for e in d["checkpoints"] if e["tokens"] > 0]
    lo, hi = (min(tokens), max(tokens)) if tokens else (1.0, 10.0)
    return ScalarMappable(LogNorm(lo, hi if hi > lo else lo * 10), readable_cmap("viridis"))


def _histograms(ax, doc, mapped) -> None:
    entries = sorted(doc["checkpoints"], key=lambda e: e["step"])
    used = []
    for e in entries:
        edges, counts = np.asarray(e["log10_edges"]), np.asarray(e["counts"], dtype=float)
        share = counts / max(counts.sum(), 1.0)
        centres = (edges[:-1] + edges[1:]) / 2
        ax.plot(centres, share, color=mapped.to_rgba(max(e["tokens"], mapped.norm.vmin)), lw=1.1)
        used += [edges[:-1][share >= VISIBLE_SHARE].min(), edges[1:][share >= VISIBLE_SHARE].max()] \
            if (share >= VISIBLE_SHARE).any() else []
    if used:
        ax.set_xlim(min(used), max(used))
    ax.set_xlabel("log10 |w(step) − w(previous step)|")
    ax.set_ylabel("share of weights")
    ax.set_title(f"{doc['model']} ({len(entries)} checkpoint pairs)", fontsize=10)
    ax.grid(True, alpha=0.3)


def _summary(ax, docs) -> None:
    colour = {i: readable(f"C{i % 10}") for i in range(len(docs))}
    for i, doc in enumerate(docs):
        entries = sorted(doc["checkpoints"], key=lambda e: e["tokens"])
        tokens = [e["tokens"] for e in entries if e["tokens"] > 0]
        rms = [e["rms"] for e in entries if e["tokens"] > 0]
        mean_abs = [e["mean_abs"] for e in entries if e["tokens"] > 0]
        ax.plot(tokens, rms, "o-", ms=3, color=colour[i])
        ax.plot(tokens, mean_abs, "s--", ms=3, color=colour[i], alpha=0.7)
    label(ax, "tokens", "change", title="size of the change vs training tokens")
    ax.set_ylabel("|w(step) − w(previous step)|")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[i], label=doc["model"]) for i, doc in enumerate(docs)]
    handles += [Line2D([], [], color="0.3", marker="o", ms=3, label="rms"),
                Line2D([], [], color="0.3", marker="s", ms=3, ls="--", label="mean |Δw|")]
    ax.legend(handles=handles, fontsize=6, ncols=1 + len(handles) // 12, **OUTSIDE)


def low_bit_training(study):
    """Fig. 14: training loss vs D of each low-bit model and its bf16 twin (top), and the gap
    low-bit minus bf16 at the same steps (bottom). Curves are running means over 2% of the steps."""
    pairs = twins(study.suite_dirs)
    if not pairs:
        raise FigureUnavailable("Fig. 14 needs a low-bit model with a bf16 twin in a suite manifest "
                                f"(precision = ..., twin = ...; suites: {_where(study)})")
    fig, axes = new_figure(2 * len(pairs), rows=2, height=3.0, dpi=study.options.dpi)
    for i, pair in enumerate(pairs):
        low = _smooth(read_train_log(pair.suite_dir / pair.low_bit / "train-log.csv"))
        high = _smooth(read_train_log(pair.suite_dir / pair.twin / "train-log.csv"))
        top, bottom = axes[i], axes[len(pairs) + i]
        top.plot(high.tokens, high.loss, color="C0", label=f"{pair.twin} (bf16)")
        top.plot(low.tokens, low.loss, color="C3", label=f"{pair.low_bit} ({pair.precision})")
        label(top, "tokens", "loss", logy=False, title=f"{pair.low_bit} vs {pair.twin}")
        top.set_ylabel("training loss [nats/token]")
        top.legend(fontsize=7)
        both = low.merge(high, on="step", suffixes=("_low", "_bf16"))
        bottom.plot(both.tokens_low, both.loss_low - both.loss_bf16, color="C3")
        bottom.axhline(0, color="0.3", lw=1)
        label(bottom, "tokens", "gap", logy=False)
        bottom.set_ylabel("low-bit − bf16 loss [nats/token]")
    suptitle(fig, "Fig. 14 — training loss of low-bit models and their bf16 twins")
    return fig


def _smooth(log):
    window = max(1, len(log) // 50)
    return log.assign(loss=log.loss.rolling(window, center=True, min_periods=1).mean())
