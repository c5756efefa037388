"""What the paper does not show: residuals of the unified QiD laws, bootstrap intervals of the
fitted exponents next to the published ones, and each law's leave-largest-N / leave-latest-D
extrapolation error."""

from __future__ import annotations

import numpy as np

from ..errors import QidlabError
from .fits import fit_all
from .style import OUTSIDE, FigureUnavailable, bit_ticks, label, levels, new_figure, readable, suptitle

#: The QiD laws with all three of N, D and P (their residuals are comparable).
UNIFIED_QID_LAWS = ("ouyang2024", "kumar2024-ptq")
HELD_OUT = {"n_params": "largest N left out", "tokens": "latest D left out"}


def study_fits(study) -> dict:
    """Every law the study could fit: name -> LawFit."""
    return fit_all(study)[0]


def residuals(study):
    """ln(measured / predicted QiD) of each unified QiD law against D, N and P (QiD > 0 only)."""
    fits = {}
    for name in UNIFIED_QID_LAWS:
        try:
            fits[name] = study.fit(name)
        except QidlabError:
            continue
    if not fits:
        raise FigureUnavailable("residuals need a fit of ouyang2024 or kumar2024-ptq; neither could be fitted")
    fig, axes = new_figure(3, sharey=True, dpi=study.options.dpi)
    markers = dict(zip(UNIFIED_QID_LAWS, "os"))
    colour = {name: readable(f"C{i}") for i, name in enumerate(UNIFIED_QID_LAWS)}
    for name, fit in fits.items():
        data = fit.data[fit.data.qid > 0]
        r = np.log(data.qid.to_numpy() / fit.predict(data))
        for ax, x in zip(axes, ("tokens", "n_params", "bits")):
            jitter = np.exp(0.02 * (list(fits).index(name) - 0.5)) if x == "bits" else 1.0
            ax.plot(data[x] * jitter, r, markers[name], ms=3.5, alpha=0.7, color=colour[name],
                    label=f"{name} (rms {np.sqrt(np.mean(r**2)):.3f})")
    for ax, x in zip(axes, ("tokens", "n_params", "bits")):
        ax.axhline(0, color="0.3", lw=1)
        label(ax, x, "residual", logy=False)
        ax.set_ylabel("ln(measured / predicted QiD)")
    bit_ticks(axes[2], levels(study.primary.bits))
    axes[-1].legend(fontsize=7, **OUTSIDE)
    suptitle(fig, f"Residuals of the unified QiD laws in log space ({study.method}, {study.eval_set}); a trend "
                  "means the form misses something")
    return fig


def _exponents(fit) -> list[tuple[str, float, float, float, bool]]:
    """(parameter, estimate, low, high, is_ci) for each exponent (parameters not fitted in log space).
    One fit: the estimate and its 95% bootstrap interval. Grouped fits: the median over groups
    and the groups' range (not a CI)."""
    rows = []
    for p in fit.law.params:
        if p.space == "log":
            continue
        values = [r.params[p.name] for r in fit.results if r.params.get(p.name) is not None]
        if not values:
            continue
        if len(fit.results) == 1:
            ci = (fit.results[0].ci95 or {}).get(p.name)
            if ci:
                rows.append((p.name, values[0], ci[0], ci[1], True))
        else:
            rows.append((p.name, float(np.median(values)), min(values), max(values), False))
    return rows


def exponent_ci(study):
    """Each law's exponents with 95% bootstrap intervals (one panel per law) and the published values."""
    if study.options.bootstrap < 1:
        raise FigureUnavailable("exponent-ci needs bootstrap replicates (--bootstrap B with B > 0)")
    fits = {n: f for n, f in study_fits(study).items() if _exponents(f)}
    if not fits:
        raise FigureUnavailable("exponent-ci: no law could be fitted")
    fig, axes = new_figure(len(fits), rows=2 if len(fits) > 3 else 1, width=3.6, height=2.6, dpi=study.options.dpi)
    for ax, (name, fit) in zip(axes, fits.items()):
        rows = _exponents(fit)
        published = fit.law.default_constants() if fit.law.published else {}
        for y, (param, value, lo, hi, is_ci) in enumerate(rows):
            ax.errorbar([value], [y], xerr=[[value - lo], [hi - value]], fmt="o", color="C0" if is_ci else "0.5",
                        capsize=3)
            if param in published:
                ax.plot([published[param]], [y], "x", color="C3", ms=8)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlim(*_padded([v for r in rows for v in r[1:4]] + [published[r[0]] for r in rows if r[0] in published]))
        grouped = "" if len(fit.results) == 1 else f" ({len(fit.results)} groups)"
        ax.set_title(f"{name}{grouped}", fontsize=9)
        ax.set_xlabel("fitted value")
        ax.grid(True, axis="x", alpha=0.3)
    suptitle(fig, f"Fitted exponents: 95% bootstrap interval ({study.options.bootstrap} replicates, blue), "
                  "median and range over groups (grey), published value (red x)")
    return fig


#: How a grouped law's errors are summed up, here and in the report's tables (one statistic in both).
OVER_GROUPS = "median over the law's per-group fits"


def _padded(values, share: float = 0.08) -> tuple[float, float]:
    """An axis range around ``values`` with ``share`` of their span (at least 0.05) on each side,
    so that no marker at the extremes is cut by the axes."""
    lo, hi = float(min(values)), float(max(values))
    pad = max(share * (hi - lo), 0.05 * max(abs(lo), abs(hi), 1e-3))
    return lo - pad, hi + pad


def holdout_errors(fit) -> dict[str, float]:
    """Mean |relative error| (%) over the held-out points, per held-out column, plus the in-sample
    one under "fit"; a grouped law's: the median over its groups (``OVER_GROUPS``)."""
    out = {"fit": float(np.median([r.metrics["mape"] for r in fit.results]))}
    for column in HELD_OUT:
        errors = [h["mape"] for r in fit.results for h in r.holdout if h["held_out"] == column]
        if errors:
            out[column] = float(np.median(errors))
    return out


def holdout(study):
    """Bars: in-sample error and the error of each law refitted without the largest N / latest D."""
    errors = {n: holdout_errors(f) for n, f in study_fits(study).items()}
    errors = {n: e for n, e in errors.items() if len(e) > 1}
    if not errors:
        raise FigureUnavailable("holdout: no law had three or more values of N or D to hold the largest out")
    fig, (ax,) = new_figure(1, width=max(6.0, 1.3 * len(errors)), height=4.0, dpi=study.options.dpi)
    kinds = [("fit", "in-sample fit")] + list(HELD_OUT.items())
    width = 0.8 / len(kinds)
    for i, (key, name) in enumerate(kinds):
        xs = [j + (i - 1) * width for j, e in enumerate(errors.values()) if key in e]
        ys = [e[key] for e in errors.values() if key in e]
        bars = ax.bar(xs, ys, width=width, label=name)
        ax.bar_label(bars, fmt="%.2g", fontsize=6)
    fits = study_fits(study)
    names = [n if len(fits[n].results) == 1 else f"{n}\n(median of {len(fits[n].results)} fits)" for n in errors]
    ax.set_xticks(range(len(errors)), names, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("mean |relative error| of the prediction [%]")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    suptitle(fig, "Extrapolation: each law refitted without the largest N or the latest D, mean |relative error| "
                  f"on those points (grouped laws: {OVER_GROUPS}, as in the report's table)")
    return fig
