"""Shared look of the figures: axis labels with units, size labels, colours, panels.

Figures are plain ``matplotlib.figure.Figure`` objects (no pyplot, no global state); saving
one to PNG renders it with Agg."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import QidlabError
from ..output import count as counted

if TYPE_CHECKING:
    import pandas as pd

TOKENS = "training tokens D"
PARAMS = "non-embedding parameters N"
BITS = "weight bit width P (bits)"
QID = "QiD [nats/token]"  # loss(quantized) - loss(16-bit)
LOSS = "loss [nats/token]"
LABELS = {"tokens": TOKENS, "n_params": PARAMS, "bits": BITS, "qid": QID, "loss": LOSS,
          "loss16": "16-bit loss [nats/token]"}
PANEL = {"tokens": "D", "n_params": "N", "bits": "P"}


class FigureUnavailable(QidlabError):
    """The study lacks what a figure needs (one eval set, no low-bit twin, ...); says what."""


def new_figure(panels: int, *, rows: int = 1, width: float = 4.3, height: float = 3.5, sharey: bool = False,
               sharex: bool = False, dpi: int = 100):
    """A figure with ``panels`` axes laid out in ``rows`` rows; returns (figure, flat list of axes)."""
    from matplotlib.figure import Figure

    cols = int(np.ceil(panels / rows))
    fig = Figure(figsize=(width * cols, height * rows), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, cols, sharey=sharey, sharex=sharex, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def size_text(value: float) -> str:
    """7e9 -> '7B', 1.6e8 -> '160M', 1e14 -> '100T' (counts of parameters or tokens)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def value_text(column: str, value: float) -> str:
    """A panel or legend label: 'N = 70M', 'D = 2B', 'P = 3'."""
    name = PANEL.get(column, column)
    return f"{name} = {value:g}" if column == "bits" else f"{name} = {size_text(value)}"


def levels(values, limit: int | None = None) -> list[float]:
    """The sorted distinct values; at most ``limit`` of them, spread evenly over the range."""
    distinct = sorted({float(v) for v in values})
    if limit is None or len(distinct) <= limit:
        return distinct
    idx = np.unique(np.round(np.linspace(0, len(distinct) - 1, limit)).astype(int))
    return [distinct[i] for i in idx]


def colours(values: Sequence[float], cmap: str = "viridis") -> dict[float, tuple]:
    """An ordered colour per value (dark = smallest)."""
    from matplotlib import colormaps

    ordered = sorted(values)
    scale = colormaps[cmap]
    span = max(len(ordered) - 1, 1)
    return {v: scale(0.9 * i / span) for i, v in enumerate(ordered)}


def positive(frame: "pd.DataFrame", column: str) -> tuple["pd.DataFrame", int]:
    """Rows with ``column`` > 0 (what a log axis can show) and how many were left out."""
    keep = frame[column] > 0
    return frame[keep], int((~keep).sum())


def note_hidden(ax, count: int, what: str = "QiD <= 0") -> None:
    """Say in the panel's title how many points a log axis cannot show."""
    if count:
        title = ax.get_title()
        ax.set_title(f"{title}{chr(10) if title else ''}({counted(count, 'point')} with {what} not shown)", fontsize=9)


def label(ax, x: str, y: str, *, logx: bool = True, logy: bool = True, title: str | None = None) -> None:
    """Axis labels from canonical column names (with units), log scales, grid, title."""
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    from matplotlib.ticker import LogFormatterSciNotation

    for on, axis, scale in ((logx, ax.xaxis, ax.set_xscale), (logy, ax.yaxis, ax.set_yscale)):
        if on:
            scale("log")
            # minor ticks get labels only on axes spanning under 0.7 decades (matplotlib's default,
            # 1 decade, crowds "2x10^5 3x10^5 ..." into each other on a panel 1.1 decades wide)
            axis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(0.7, 0.3)))
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)


def need_columns(frame: "pd.DataFrame", columns: Sequence[str], figure: str) -> None:
    missing = [c for c in columns if c not in frame.columns or frame[c].isna().all()]
    if missing:
        raise FigureUnavailable(f"{figure} needs {', '.join(missing)}, which the measurements lack")


def legend(ax, colour: dict, column: str, styles: dict | None = None, **kwargs) -> None:
    """A legend of the colour per value of ``column`` plus line styles (name -> Line2D kwargs)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ms=4, label=value_text(column, v)) for v, c in colour.items()]
    handles += [Line2D([], [], label=name, **{"color": "0.3", **kw}) for name, kw in (styles or {}).items()]
    ax.legend(handles=handles, fontsize=7, **kwargs)


def suptitle(fig, text: str) -> None:
    """The figure's title, wrapped to its width."""
    import textwrap

    width = max(40, int(fig.get_figwidth() * 11))  # about 11 characters per inch at 11 pt
    fig.suptitle("\n".join(textwrap.wrap(text, width)), fontsize=11)


def points(ax, frame: "pd.DataFrame", x: str, colour, y: str = "qid", **kwargs) -> None:
    """Measured points, with their 95% CI as error bars when the rows carry one (qid_ci_low/high)."""
    yerr = None
    if y == "qid" and {"qid_ci_low", "qid_ci_high"} <= set(frame.columns) and frame.qid_ci_low.notna().any():
        low = np.clip((frame.qid - frame.qid_ci_low).to_numpy(dtype=float), 0, None)
        high = np.clip((frame.qid_ci_high - frame.qid).to_numpy(dtype=float), 0, None)
        yerr = np.nan_to_num(np.vstack([np.minimum(low, 0.999 * frame.qid.to_numpy()), high]))
    ax.errorbar(frame[x], frame[y], yerr=yerr, fmt=kwargs.pop("fmt", "o"), ms=3.5, color=colour, elinewidth=0.8,
                capsize=0, **kwargs)


def bit_ticks(ax, bits) -> None:
    """Ticks at the bit widths on a log bit-width axis (2, 3, 4 rather than 2x10^0)."""
    ax.set_xticks(list(bits), [f"{b:g}" for b in bits])
    ax.minorticks_off()
