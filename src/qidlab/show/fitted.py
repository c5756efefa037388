"""Figures of fitted laws: Fig. 1 (100T projection), Fig. 3-6 (single-factor and unified QiD
laws), Fig. 7 (predicted quantized loss), Fig. 9 (methods), Fig. 10 (measured vs predicted).
QiD and losses in the study's unit (``Study.unit``), N non-embedding parameters, D training tokens,
P bits. The uniform-guess loss ln(V) of Fig. 1 is in nats per token: with losses in another unit
(bits per byte, ...) Fig. 1 draws the projected QiD without it (no conversion is known: it needs the
eval set's bytes per token)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import QidlabError
from ..laws import get_law
from ..laws.analysis import projection as project
from ..laws.analysis import random_level_note
from ..laws.fit import fit_law
from ..laws.solve import evaluate
from ..laws.uncertainty import projection_intervals, sources_for
from .fits import loss16_fit
from .settings import hold_settings
from .style import (
    CLIPPED,
    FigureUnavailable,
    bit_ticks,
    colours,
    label,
    legend,
    levels,
    new_figure,
    note_hidden,
    points,
    positive,
    qid_limits,
    size_text,
    suptitle,
    value_text,
)


def fitted(study, law: str, figure: str):
    """``study.fit(law)``, or ``FigureUnavailable`` saying why the figure cannot be drawn."""
    try:
        return study.fit(law)
    except QidlabError as exc:
        raise FigureUnavailable(f"{figure} needs a fit of {law}: {exc}") from None


def _curve(fit, values: dict, x: str, grid: np.ndarray) -> np.ndarray | None:
    """The fitted law along ``grid`` of ``x`` at ``values`` (None when no fitted group matches)."""
    try:
        params = fit.params(values)
    except QidlabError:
        return None
    inputs = {k: v for k, v in {**values, x: grid}.items() if k in fit.law.variable_names}
    return evaluate(fit.law, params, inputs)


def _grid(values, x: str) -> np.ndarray:
    lo, hi = float(np.min(values)), float(np.max(values))
    return np.linspace(lo, hi, 60) if x == "bits" else np.geomspace(lo, hi, 60)


def _exponent_summary(fit, name: str) -> str:
    values = [r.params[name] for r in fit.results if r.params.get(name) is not None]
    if len(values) == 1:
        return f"{name} = {values[0]:.4g}"
    return f"{name} per group: median {np.median(values):.3g}, range {min(values):.3g} to {max(values):.3g}"


def _qid_panels(study, law: str, x: str, panel: str, hue: str, figure: str, *, max_panels=4, max_hues=6):
    """QiD vs ``x``: one panel per value of ``panel``, one colour per value of ``hue``; points
    measured (95% CI bars), lines the law fitted (per group when the fit is grouped)."""
    fit = fitted(study, law, figure)
    frame = fit.data
    panels, hues = levels(frame[panel], max_panels), levels(frame[hue], max_hues)
    colour = colours(hues)
    limits = qid_limits(frame.qid)
    fig, axes = new_figure(len(panels), sharey=True, dpi=study.options.dpi)
    for ax, value in zip(axes, panels):
        sub = frame[frame[panel] == value]
        shown, hidden = positive(sub, "qid")
        for h in hues:
            points(ax, shown[shown[hue] == h], x, colour[h], limits=limits)
            grid = _grid(sub[x], x)
            curve = _curve(fit, {panel: value, hue: h}, x, grid)
            if curve is not None:
                ax.plot(grid, curve, color=colour[h], lw=1.2)
        label(ax, x, "qid", title=value_text(panel, value), unit=study.unit_text)
        note_hidden(ax, hidden)
        if x == "bits":
            bit_ticks(ax, levels(frame.bits))
    axes[0].set_ylim(*limits)
    legend(axes[-1], colour, hue, {"measured (95% CI)": {"marker": "o", "ls": ""}, f"fitted {law}": {"ls": "-"},
                                   CLIPPED: {"marker": "v", "ls": ""}}, outside=True)
    return fig, fit


def qid_vs_tokens(study):
    """Fig. 3: QiD vs D per bit width, one colour per N, QiD = b D^beta fitted per (N, P)."""
    fig, fit = _qid_panels(study, "ouyang2024-tokens", "tokens", "bits", "n_params", "Fig. 3")
    suptitle(fig, f"Fig. 3 — QiD vs training tokens: {fit.law.formula}; {_exponent_summary(fit, 'beta')}")
    return fig


def qid_vs_size(study):
    """Fig. 4: QiD vs N per bit width, one colour per D, QiD = a / N^alpha fitted per (D, P)."""
    fig, fit = _qid_panels(study, "ouyang2024-size", "n_params", "bits", "tokens", "Fig. 4")
    suptitle(fig, f"Fig. 4 — QiD vs model size: {fit.law.formula}; {_exponent_summary(fit, 'alpha')}")
    return fig


def qid_vs_bits(study):
    """Fig. 5: QiD vs P per model size, one colour per D, QiD = c / P^gamma fitted per (N, D)."""
    fig, fit = _qid_panels(study, "ouyang2024-bits", "bits", "n_params", "tokens", "Fig. 5")
    suptitle(fig, f"Fig. 5 — QiD vs bit width: {fit.law.formula}; {_exponent_summary(fit, 'gamma')}")
    return fig


def unified(study):
    """Fig. 6: the unified law fitted to every point of the primary slice."""
    fig, fit = _qid_panels(study, "ouyang2024", "tokens", "bits", "n_params", "Fig. 6")
    p = fit.results[0].all_params()
    suptitle(fig, f"Fig. 6 — unified law: QiD = {p['k']:.3g} D^{p['beta']:.4f} / (N^{p['alpha']:.4f} "
                  f"P^{p['gamma']:.4f})  ({study.method}, {study.eval_set}, n = {fit.results[0].n})")
    return fig


# ---------------------------------------------------------------------------


def kaplan_params(study) -> tuple[dict[str, float], str]:
    """16-bit loss constants of Kaplan's form: fitted to the study's loss16, else Ouyang's Fig. 7."""
    try:
        return study.fit("kaplan").params({}), "kaplan fitted to this study's loss16"
    except QidlabError:
        return get_law("kaplan").default_constants(), "kaplan, Ouyang 2024 Fig. 7 constants"


def projection_data(study):
    """Fig. 1 as data: ``analysis.projection``'s curves and crossings of the fitted ouyang2024 law
    with the 95% intervals and extrapolation marks of ``uncertainty.projection_intervals``, the
    warnings, ln(V), V and where loss16 comes from. The report's Fig. 1 table reads the same.
    With losses not in nats per token, ``random`` is None and ``random_missing`` says why: ln(V)
    and the crossings are left out rather than compared with losses of another unit."""
    fit = fitted(study, "ouyang2024", "Fig. 1")
    o = study.options
    loss16, source = kaplan_params(study)
    vocab, _ = study.vocab_size()
    bits = tuple(o.bits or levels(fit.data.bits))
    start = min(1e9, float(study.frame.tokens.min()))  # from the study's smallest D when below 1B
    curves, crossings = project("ouyang2024", fit.params, o.sizes, bits, min_tokens=start, max_tokens=o.max_tokens,
                                loss16_params=loss16, vocab_size=vocab)
    curves, crossings, warnings = projection_intervals(sources_for("ouyang2024", fit=fit.document), curves,
                                                       crossings, loss16_params=loss16, max_tokens=o.max_tokens)
    missing = None if study.nats_per_token else random_missing(study)
    return {"curves": curves, "crossings": crossings, "warnings": warnings, "bits": bits, "vocab": vocab,
            "random": None if missing else math.log(vocab), "random_missing": missing, "loss16_source": source,
            "vocab_note": None if missing else random_level_note(vocab),
            "ranges": fit.results[0].ranges if len(fit.results) == 1 else None}


def random_missing(study) -> str:
    """Why Fig. 1 has no worse-than-random level for a study whose losses are not in nats per token."""
    return (f"the losses are in {study.unit_words}, and the uniform-guess loss ln(V) is in nats per token; "
            "converting it needs the eval set's bytes per token, which the measurements do not carry, so the "
            "worse-than-random area and its crossings are left out")


def projection(study):
    """Fig. 1: QiD of the fitted ouyang2024 law up to ``max_tokens`` for ``sizes`` and ``bits``;
    grey where loss16 + QiD exceeds ln(V), the loss of a uniform guess; a band per curve, its 95%
    interval over the fit's bootstrap replicates; dashed where D lies more than 2x beyond the
    fitted range (or N or P outside it), with the fitted N range named in a panel that lies outside."""
    o = study.options
    data = projection_data(study)
    curves, crossings, bits, random = data["curves"], data["crossings"], data["bits"], data["random"]
    qid = curves.qid[curves.qid > 0]
    ylim = (max(float(qid.min()) / 2, 1e-6), max(float(qid.max()), random or 0.0) * 2)
    fig, axes = new_figure(len(o.sizes), sharey=True, dpi=o.dpi)
    for ax, n in zip(axes, o.sizes):
        _projection_panel(ax, curves[curves.n_params == n], crossings[crossings.n_params == n], bits, random, ylim)
        ax.axvline(study.frame.tokens.max(), ls=":", color="0.3", label="largest D measured")
        label(ax, "tokens", "qid", title=value_text("n_params", n) + _outside_n(data["ranges"], n),
              unit=study.unit_text)
        ax.set_ylim(*ylim)
    axes[0].legend(fontsize=7, loc="upper left")
    band = ("band: 95% bootstrap interval; dashed: extrapolated (N or D more than 2x outside the fitted range)"
            if curves.qid_lo.notna().any() else "no interval (fit without bootstrap replicates)")
    vocab = (f" Note: ln V of this study's {data['vocab']}-token vocabulary, not the paper's Llama-3 tokens."
             if data["vocab_note"] else "")
    if random is None:
        suptitle(fig, f"Fig. 1 — fitted ouyang2024 projected to {size_text(o.max_tokens)} tokens; {band}. "
                      f"No worse-than-random area: {data['random_missing']}.")
        return fig
    suptitle(fig, f"Fig. 1 — fitted ouyang2024 projected to {size_text(o.max_tokens)} tokens. Grey: worse than "
                  f"random, loss16 + QiD > ln({data['vocab']}) = {random:.2f} nats (loss16: {data['loss16_source']}); "
                  f"x: where a curve enters it; {band}.{vocab}")
    return fig


def _outside_n(ranges, n: float) -> str:
    """' (extrapolated: fitted N 12.8K-224K)' when N lies more than 2x outside the fitted range."""
    if not ranges or "n_params" not in ranges:
        return ""
    lo, hi = ranges["n_params"]
    if lo / 2 <= n <= 2 * hi:
        return ""
    return f" (extrapolated: fitted N {size_text(lo)}–{size_text(hi)})"


BIT_COLOURS = ("#d62728", "#c85a00", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b")


def _projection_panel(ax, curves, crossings, bits, random: float, ylim) -> None:
    """One size of Fig. 1: the band above ln(V) - loss16(D), a QiD curve per bit width, and an x
    where each curve enters the band (no band and no x when ``random`` is None)."""
    colour = dict(zip(bits, BIT_COLOURS))
    first = curves[curves.bits == bits[0]]
    if random is not None:
        threshold = np.clip(random - first.loss16.to_numpy(), *ylim)
        ax.fill_between(first.tokens, threshold, ylim[1], color="0.8", label="worse than random")
    for b in bits:
        rows = curves[curves.bits == b]
        inside, outside = rows[~rows.extrapolated.astype(bool)], rows[rows.extrapolated.astype(bool)]
        if len(inside):
            ax.plot(inside.tokens, inside.qid, color=colour.get(b), label=f"{b:g}-bit")
        if len(outside):  # dashed from the last point inside, so the curve stays joined
            joined = rows[rows.tokens >= (inside.tokens.max() if len(inside) else 0)]
            ax.plot(joined.tokens, joined.qid, color=colour.get(b), ls="--",
                    label=None if len(inside) else f"{b:g}-bit (extrapolated)")
        if rows.qid_lo.notna().any():
            ax.fill_between(rows.tokens, rows.qid_lo, rows.qid_hi, color=colour.get(b), alpha=0.18, lw=0)
        cross = crossings[crossings.bits == b].tokens_worse_than_random.iloc[0]
        if random is not None and cross is not None and cross == cross:
            y = np.interp(math.log(cross), np.log(first.tokens), threshold)
            ax.plot([cross], [y], "x", color=colour.get(b), ms=8)


def predicted_loss(study):
    """Fig. 7: measured quantized loss (points) and loss16 (fitted law) + QiD (fitted ouyang2024) (lines)."""
    qfit = fitted(study, "ouyang2024", "Fig. 7")
    lfit = loss16_fit(study)
    if lfit is None:
        raise FigureUnavailable("Fig. 7 needs a 16-bit loss law fitted to loss16 (kaplan or chinchilla); "
                                "neither could be fitted")
    frame = qfit.data
    bits, sizes = levels(frame.bits), levels(frame.n_params)
    colour = colours(sizes)
    fig, axes = new_figure(len(bits), sharey=True, dpi=study.options.dpi)
    for ax, p in zip(axes, bits):
        sub = frame[frame.bits == p]
        for n in sizes:
            rows = sub[sub.n_params == n]
            points(ax, rows, "tokens", colour[n], y="loss")
            grid = _grid(rows.tokens, "tokens")
            l16 = evaluate(lfit.law, lfit.params({}), {"n_params": n, "tokens": grid})
            ax.plot(grid, l16 + _curve(qfit, {"n_params": n, "bits": p}, "tokens", grid), color=colour[n])
        label(ax, "tokens", "loss", logy=False, title=f"{p:g}-bit ({study.method})", unit=study.unit_text)
    legend(axes[-1], colour, "n_params", {"measured": {"marker": "o", "ls": ""}, "predicted": {"ls": "-"}},
           outside=True)
    suptitle(fig, f"Fig. 7 — quantized loss = loss16 ({lfit.law.name} fit) + QiD (ouyang2024 fit)")
    return fig


def methods(study):
    """Fig. 9: QiD vs D per method at one bit width (4 when every method has it), one colour per
    N, ouyang2024 fitted to each method separately."""
    per, p = _methods_at_one_bit_width(study)
    sizes = levels(study.frame.n_params)
    colour = colours(sizes)
    limits = qid_limits(np.concatenate([d.qid.to_numpy(dtype=float) for d in per.values()]))
    fig, axes = new_figure(len(per), sharey=True, height=4.4, dpi=study.options.dpi)
    for ax, (m, data) in zip(axes, per.items()):
        _method_panel(ax, data, p, colour, limits, study.unit_text)
        ax.set_title(f"{m}: {ax.get_title()}", fontsize=9)
    axes[0].set_ylim(*limits)
    legend(axes[-1], colour, "n_params", {CLIPPED: {"marker": "v", "ls": ""}}, outside=True)
    suptitle(fig, f"Fig. 9 — QiD by quantization method at {p:g} bits only (ouyang2024 fitted per method to its "
                  f"{p:g}-bit points; k' = k / P^gamma). {methods_note(study, p)}")
    return fig


def methods_note(study, bits: float) -> str:
    """Why Fig. 9's exponents differ from the fitted-laws table's: the data they are fitted to."""
    try:
        params = study.fit("ouyang2024").results[0].all_params()
        unified = (f"the table's ouyang2024 ({study.method}, every bit width): alpha {params['alpha']:.3f}, "
                   f"beta {params['beta']:.3f}")
    except QidlabError:
        unified = "the table's ouyang2024 is fitted to every bit width"
    return (f"These alpha and beta come from the {bits:g}-bit points alone, where QiD is smallest and noisiest, "
            f"so they need not match {unified}.")


def _methods_at_one_bit_width(study):
    """{method: its rows on the primary eval set at bit width P}, P (4 if all have it)."""
    frame = study.frame[study.frame.eval_set == study.eval_set]
    names = sorted(frame.method.unique())
    if len(names) < 2:
        raise FigureUnavailable(f"Fig. 9 needs two quantization methods; eval set {study.eval_set} has one "
                                f"({names[0]})")
    per = {m: hold_settings(frame[frame.method == m])[0] for m in names}
    common = sorted(set.intersection(*(set(f.bits) for f in per.values())))
    if not common:
        raise FigureUnavailable("Fig. 9: the methods share no bit width")
    p = 4.0 if 4.0 in common else common[-1]
    return {m: f[f.bits == p] for m, f in per.items()}, p


def _method_panel(ax, data, bits: float, colour, limits, unit: str) -> None:
    shown, hidden = positive(data, "qid")
    try:
        (fit,) = fit_law(data, "ouyang2024", holdout=())
        params = fit.all_params()
        what = f"k' {params['k']:.3g}, alpha {params['alpha']:.3f}, beta {params['beta']:.3f}"
    except QidlabError as exc:
        params, what = None, f"not fitted: {exc}"
    grid = _grid(data.tokens, "tokens")
    for n, c in colour.items():
        points(ax, shown[shown.n_params == n], "tokens", c, limits=limits)
        if params is not None:
            ax.plot(grid, evaluate("ouyang2024", params, {"n_params": n, "tokens": grid, "bits": bits}), color=c)
    label(ax, "tokens", "qid", title=what, unit=unit)
    note_hidden(ax, hidden)


def actual_vs_predicted(study):
    """Fig. 10 (right): measured QiD against the fitted ouyang2024 prediction, one colour per P."""
    fit = fitted(study, "ouyang2024", "Fig. 10")
    frame = fit.data.assign(predicted=fit.predict(fit.data))
    shown, hidden = positive(frame, "qid")
    colour = colours(levels(shown.bits), "plasma")
    fig, (ax,) = new_figure(1, width=5.2, height=4.4, dpi=study.options.dpi)
    for p, c in colour.items():
        rows = shown[shown.bits == p]
        ax.plot(rows.predicted, rows.qid, "o", ms=4, color=c, alpha=0.85)
    lo, hi = shown[["qid", "predicted"]].min().min(), shown[["qid", "predicted"]].max().max()
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, label="measured = predicted")
    label(ax, "qid", "qid", unit=study.unit_text)
    ax.set_xlabel(f"predicted QiD, fitted ouyang2024 [{study.unit_text}]")
    ax.set_ylabel(f"measured QiD [{study.unit_text}]")
    note_hidden(ax, hidden)
    legend(ax, colour, "bits", {"measured = predicted": {"color": "0.4"}})
    m = fit.results[0].metrics
    suptitle(fig, f"Fig. 10 — measured vs predicted QiD: R²(log) {m['r2_log']:.3f}, "
                  f"mean |rel. err| {m['mape']:.1f}%")
    return fig

