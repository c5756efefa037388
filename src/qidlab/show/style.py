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
UNIT = "nats/token"  # the default unit of losses and QiD (a study's own: ``Study.unit_text``)
#: The loss columns, whose axis label carries the study's unit.
LOSSES = {"qid": "QiD", "loss": "loss", "loss16": "16-bit loss"}  # QiD = loss(quantized) - loss(16-bit)
LABELS = {"tokens": TOKENS, "n_params": PARAMS, "bits": BITS}  # the loss columns': axis_label
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


#: Least contrast ratio (WCAG 2) of a line or marker colour against the white background.
MIN_CONTRAST = 3.0


def luminance(colour) -> float:
    """Relative luminance (WCAG 2) of a matplotlib colour: 0 black, 1 white."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(colour))
    linear = np.where(rgb <= 0.03928, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def contrast(colour, background="white") -> float:
    """Contrast ratio (WCAG 2) of ``colour`` against ``background``: 1 (none) to 21."""
    a, b = sorted((luminance(colour), luminance(background)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def readable(colour, least: float = MIN_CONTRAST) -> tuple:
    """``colour`` darkened (same hue) until its contrast against white is at least ``least``."""
    from matplotlib.colors import to_rgba

    rgba = np.asarray(to_rgba(colour))
    for _ in range(40):
        if contrast(rgba[:3]) >= least + 0.05:
            break
        rgba[:3] *= 0.93
    return tuple(float(c) for c in rgba)


def readable_cmap(cmap: str = "viridis", top: float = 0.9):
    """Colour map ``cmap`` from 0 to ``top``, each colour darkened to be readable on white."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    scale = colormaps[cmap]
    return ListedColormap([readable(scale(x)) for x in np.linspace(0, top, 64)], name=f"{cmap}-readable")


def colours(values: Sequence[float], cmap: str = "viridis") -> dict[float, tuple]:
    """An ordered colour per value (dark = smallest), each readable on white (contrast >= 3:1:
    the light end of the colour map, yellow, is darkened to olive/ochre)."""
    from matplotlib import colormaps

    ordered = sorted(values)
    scale = colormaps[cmap]
    span = max(len(ordered) - 1, 1)
    return {v: readable(scale(0.9 * i / span)) for i, v in enumerate(ordered)}


def positive(frame: "pd.DataFrame", column: str) -> tuple["pd.DataFrame", int]:
    """Rows with ``column`` > 0 (what a log axis can show) and how many were left out."""
    keep = frame[column] > 0
    return frame[keep], int((~keep).sum())


def note_hidden(ax, count: int, what: str = "QiD <= 0") -> None:
    """Say in the panel's title how many points a log axis cannot show."""
    if count:
        title = ax.get_title()
        ax.set_title(f"{title}{chr(10) if title else ''}({counted(count, 'point')} with {what} not shown)", fontsize=9)


def axis_label(column: str, unit: str = UNIT) -> str:
    """The axis label of a canonical column, with its unit: a loss column's in ``unit``."""
    if column in LOSSES:
        return f"{LOSSES[column]} [{unit}]"
    return LABELS.get(column, column)


def label(ax, x: str, y: str, *, logx: bool = True, logy: bool = True, title: str | None = None,
          unit: str = UNIT) -> None:
    """Axis labels from canonical column names (with units: losses and QiD in ``unit``), log
    scales, grid, title."""
    ax.set_xlabel(axis_label(x, unit))
    ax.set_ylabel(axis_label(y, unit))
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


OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}  # right of the axes


def legend(ax, colour: dict, column: str, styles: dict | None = None, *, outside: bool = False, **kwargs) -> None:
    """A legend of the colour per value of ``column`` plus line styles (name -> Line2D kwargs);
    ``outside``: to the right of ``ax``, where it covers no data."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ms=4, label=value_text(column, v)) for v, c in colour.items()]
    handles += [Line2D([], [], label=name, **{"color": "0.3", **kw}) for name, kw in (styles or {}).items()]
    ax.legend(handles=handles, fontsize=7, **({**OUTSIDE, **kwargs} if outside else kwargs))


def suptitle(fig, text: str) -> None:
    """The figure's title, wrapped to its width."""
    import textwrap

    width = max(40, int(fig.get_figwidth() * 11))  # about 11 characters per inch at 11 pt
    fig.suptitle("\n".join(textwrap.wrap(text, width)), fontsize=11)


CLIPPED = "CI beyond the axis (arrow)"  # legend entry of a whisker cut at the axis limit


def qid_limits(qid) -> tuple[float, float]:
    """A log QiD axis from the positive measured points themselves, not their CIs:
    a factor 3 below the smallest and 2.5 above the largest."""
    qid = np.asarray(qid, dtype=float)
    shown = qid[qid > 0]
    if not len(shown):
        raise FigureUnavailable("no point with QiD > 0 to draw on a log axis")
    return float(shown.min()) / 3, float(shown.max()) * 2.5


def points(ax, frame: "pd.DataFrame", x: str, colour, y: str = "qid", limits: tuple[float, float] | None = None,
           **kwargs) -> None:
    """Measured points, with their 95% CI as error bars when the rows carry one (qid_ci_low/high).
    With ``limits`` (the y-axis range): a whisker reaching beyond it (a CI down to 0 or below
    included) stops at the limit, marked by an arrow there."""
    yerr = None
    ys = frame[y].to_numpy(dtype=float)
    if y == "qid" and {"qid_ci_low", "qid_ci_high"} <= set(frame.columns) and frame.qid_ci_low.notna().any():
        low_end = frame.qid_ci_low.to_numpy(dtype=float)
        high_end = frame.qid_ci_high.to_numpy(dtype=float)
        if limits is not None:
            below, above = ~(low_end > limits[0]), high_end > limits[1]
            low_end = np.where(below, limits[0], low_end)
            high_end = np.where(above, limits[1], high_end)
            xs = frame[x].to_numpy(dtype=float)
            ax.plot(xs[below], np.full(below.sum(), limits[0] * 1.25), "v", ms=5, color=colour)
            ax.plot(xs[above], np.full(above.sum(), limits[1] / 1.25), "^", ms=5, color=colour)
        low = np.clip(ys - low_end, 0, None)
        high = np.clip(high_end - ys, 0, None)
        yerr = np.nan_to_num(np.vstack([np.minimum(low, 0.999 * ys), high]))
    ax.errorbar(frame[x], frame[y], yerr=yerr, fmt=kwargs.pop("fmt", "o"), ms=3.5, color=colour, elinewidth=0.8,
                capsize=0, **kwargs)


def tidy(fig, least: int = 3) -> None:
    """Every log axis of ``fig`` with at least ``least`` labelled ticks (after its limits are
    set): an axis spanning fewer than ``least`` powers of ten is labelled at 1, 2, 5 (or more)
    times them, and its other ticks are left unlabelled. Fixed ticks (bit widths) are kept."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                _label_log_axis(axis, least)


SUBS = ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0), tuple(range(1, 10)))


def _label_log_axis(axis, least: int) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    if isinstance(axis.get_major_locator(), FixedLocator):
        return
    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and np.isfinite(hi)):
        return
    for subs in SUBS:
        ticks = _log_ticks(lo, hi, subs)
        if len(ticks) >= least:
            break
    if subs == (1.0,):
        return
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _tick_text(v, lo, hi)))
    axis.set_minor_locator(LogLocator(subs=tuple(s for s in range(1, 10) if s not in subs)))
    axis.set_minor_formatter(NullFormatter())


def _log_ticks(lo: float, hi: float, subs) -> list[float]:
    """The values m x 10^e (m in ``subs``) within [lo, hi]."""
    first, last = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    return [m * 10.0**e for e in range(first, last + 1) for m in subs if lo <= m * 10.0**e <= hi * (1 + 1e-9)]


def _tick_text(value: float, lo: float, hi: float) -> str:
    """'0.02' on an axis within 1e-3 to 1e4, else '2×10⁶' (mathtext)."""
    if 1e-3 <= lo and hi < 1e4:
        return f"{value:g}"
    exponent = int(np.floor(np.log10(value) + 1e-9))
    mantissa = round(value / 10.0**exponent)
    head = "" if mantissa == 1 else rf"{mantissa:g}\times"
    return rf"${head}10^{{{exponent}}}$"


def bit_ticks(ax, bits) -> None:
    """Ticks at the bit widths on a log bit-width axis (2, 3, 4 rather than 2x10^0)."""
    ax.set_xticks(list(bits), [f"{b:g}" for b in bits])
    ax.minorticks_off()
