"""Prediction intervals and extrapolation warnings for what a law predicts.

A prediction made from a fit file (``qidlab fit --bootstrap B --out F.json``) comes with a 95%
interval: the 2.5th and 97.5th percentiles of the same prediction made with the parameters of
each bootstrap replicate (the fit's ``bootstrap.params``, natural units). Published constants
have no replicates, hence no interval ("no interval (published constants)").

A prediction extrapolates when N (``n_params``) or D (``tokens``) lies more than 2x outside the
range of the points fitted, or another variable (``bits``, a group size, ...) outside the values
fitted (the fit's ``ranges``); each such variable is listed with its fitted range
(``extrapolation``). A fit file written before qidlab recorded ranges gives a warning that the
range is unknown. Units: N non-embedding parameters, D tokens, QiD and loss in nats per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ..errors import QidlabError
from .registry import get_law
from .solve import LINEAR_VARIABLES, SEARCH_RANGE, chosen_fit, inputs, law_params
from .spec import Law

if TYPE_CHECKING:
    import pandas as pd

#: The interval's coverage, percent.
LEVEL = 95.0
#: Variables whose values may lie up to this factor outside the fitted range before a warning.
SCALE_VARIABLES = ("n_params", "n_params_total", "tokens")
SCALE_FACTOR = 2.0
NO_INTERVAL_PUBLISHED = "no interval (published constants)"
NO_INTERVAL_UNFITTED = "no interval (the fit has no bootstrap replicates: refit with --bootstrap B)"


@dataclass(frozen=True)
class Source:
    """Parameters to predict with (natural units), where they come from, and what bounds the
    prediction: ``thetas`` the bootstrap replicates' parameters in fit space (B, k) or None,
    ``ranges`` the fitted range of each variable ([min, max]) or None when unknown."""

    law: Law
    params: dict[str, float]
    source: str
    thetas: np.ndarray | None
    ranges: dict[str, list[float]] | None
    published: bool
    #: how far each interval end moves out from the replicates' median (the fit's small-sample
    #: widening of a cluster bootstrap, ``fit._expansion``; 1 for a points bootstrap)
    expansion: float = 1.0

    @property
    def no_interval(self) -> str | None:
        """Why there is no interval (None: there is one)."""
        if self.thetas is not None and len(self.thetas) >= 2:
            return None
        return NO_INTERVAL_PUBLISHED if self.published else NO_INTERVAL_UNFITTED


def source_for(law: Law | str, *, constants: str | None = None, fit=None,
               values: Mapping[str, Any] | None = None) -> Source:
    """``law_params`` with the chosen fit's bootstrap replicates and fitted ranges."""
    law = get_law(law)
    params, source = law_params(law, constants=constants, fit=fit, values=values)
    if fit is None:
        return Source(law, params, source, None, None, published=True)
    chosen, _ = chosen_fit(law, fit, values or {})
    expansion = float((chosen.bootstrap or {}).get("expansion", 1.0))
    return Source(law, params, source, _thetas(law, chosen), chosen.ranges, published=False, expansion=expansion)


def sources_for(law: Law | str, *, constants: str | None = None, fit=None,
                values: Mapping[str, Any] | None = None) -> Callable[[Mapping[str, Any]], Source]:
    """A ``Source`` per row of a grid (Table 1, the projection): the fitted group matching the
    row's inputs serves it (e.g. its bit width); each distinct row is looked up once."""
    cache: dict = {}

    def pick(known: Mapping[str, Any]) -> Source:
        key = tuple(sorted(known.items()))
        if key not in cache:
            cache[key] = source_for(law, constants=constants, fit=fit, values={**(values or {}), **known})
        return cache[key]

    return pick


def _thetas(law: Law, result) -> np.ndarray | None:
    """The replicates' parameters of a ``FitResult`` in fit space (B, k); folded ones fixed."""
    saved = (result.bootstrap or {}).get("params")
    if not saved:
        return None
    lengths = {len(v) for v in saved.values()}
    if len(lengths) != 1:
        raise QidlabError("the fit's bootstrap replicates have different lengths per parameter (a damaged fit file)")
    (B,) = lengths
    columns = []
    for p in law.params:
        if p.name in saved:
            columns.append([p.to_fit(_num(v)) for v in saved[p.name]])
        elif p.name in result.fixed:
            columns.append([p.to_fit(_num(result.fixed[p.name]))] * B)
        else:
            raise QidlabError(f"the fit's bootstrap replicates lack parameter {p.name!r} (a damaged fit file)")
    return np.array(columns, dtype=float).T.reshape(B, len(law.params))


def _num(v) -> float:
    return float(v) if v is not None else float("nan")


# ---------------------------------------------------------------------------
# intervals


def percentile_interval(values: np.ndarray, expansion: float = 1.0) -> list[float] | None:
    """[2.5th, 97.5th] percentile of the replicates' predictions; NaN (no answer, e.g. a target
    out of reach) is left out; +-inf (e.g. never worse than random) stays as an end. None with
    fewer than two answers. ``expansion`` > 1 (a cluster bootstrap with few clusters) moves each
    end that far out from the replicates' median, in log space when every answer is positive."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return None
    tail = (100.0 - LEVEL) / 2
    method = "linear" if np.all(np.isfinite(values)) else "inverted_cdf"
    lo, hi = np.percentile(values, [tail, 100.0 - tail], method=method)
    if expansion != 1.0 and np.all(np.isfinite(values)):
        lo, hi = _widen(np.array([lo, hi]), float(np.median(values)), expansion, log=bool(np.all(values > 0)))
    return [float(lo), float(hi)]


def _widen(ends: np.ndarray, center, expansion: float, log: bool) -> np.ndarray:
    """``ends`` moved ``expansion`` times as far from ``center`` (elementwise; in log space if ``log``)."""
    if log:
        return np.exp(np.log(center) + expansion * (np.log(ends) - np.log(center)))
    return center + expansion * (ends - center)


def predict_many(src: Source, values: Mapping[str, Any]) -> np.ndarray:
    """The law's quantity (nats/token) at ``values`` for every replicate: (B, n)."""
    X = inputs(src.law, values)
    with np.errstate(all="ignore"):
        return np.exp(src.law.log_predict(src.thetas, X))


def solve_many(src: Source, known: Mapping[str, float], target: float, var: str,
               search: tuple[float, float] | None = None) -> np.ndarray:
    """``solve`` for every replicate at once: the first crossing of ``target`` over the same grid,
    interpolated in log (or linear) space between grid points; NaN where out of reach."""
    lo, hi = search or SEARCH_RANGE.get(var, (1e-6, 1e6))
    linear = var in LINEAR_VARIABLES
    grid = np.linspace(lo, hi, 801) if linear else np.geomspace(lo, hi, 801)
    with np.errstate(all="ignore"):
        gap = np.log(predict_many(src, {**known, var: grid})) - math.log(target)
    return _first_crossing(grid if linear else np.log(grid), gap, upward=None, log_axis=not linear)


def _first_crossing(axis: np.ndarray, gap: np.ndarray, *, upward: bool | None, log_axis: bool) -> np.ndarray:
    """Per row of ``gap`` (B, n) on ``axis`` (n,): where it first changes sign (``upward``: only
    from <= 0 to > 0), linearly interpolated; NaN where it never does."""
    ok = np.isfinite(gap[:, :-1]) & np.isfinite(gap[:, 1:])
    a, b = gap[:, :-1], gap[:, 1:]
    change = ok & ((a <= 0) & (b > 0) if upward else (np.sign(a) != np.sign(b)) | (a == 0))
    out = np.full(len(gap), np.nan)
    rows = np.flatnonzero(change.any(axis=1))
    first = change[rows].argmax(axis=1)
    ga, gb = a[rows, first], b[rows, first]
    frac = np.where(ga == gb, 0.0, ga / np.where(ga == gb, 1.0, ga - gb))
    u = axis[first] + frac * (axis[first + 1] - axis[first])
    out[rows] = np.exp(u) if log_axis else u
    return out


def min_bits_many(src: Source, known: Mapping[str, float], budget: float, max_bits: int = 16) -> np.ndarray:
    """``analysis.min_bits``'s integer bit width for every replicate (NaN: none up to ``max_bits``)."""
    bits = np.arange(1, max_bits + 1, dtype=float)
    qid = predict_many(src, {**known, "bits": bits})
    within = qid <= budget
    return np.where(within.any(axis=1), bits[within.argmax(axis=1)], np.nan)


def crossing_many(src: Source, loss16: Callable[[np.ndarray], np.ndarray], known: Mapping[str, float],
                  level: float, max_tokens: float) -> np.ndarray:
    """Per replicate, the tokens at which loss16 + QiD first exceeds ``level`` (nats/token):
    ``analysis.projection``'s crossing; inf where it does not within ``max_tokens``."""
    tokens = np.geomspace(1e3, max_tokens, 400)
    gap = loss16(tokens)[None, :] + predict_many(src, {**known, "tokens": tokens}) - level
    out = _first_crossing(np.log(tokens), gap, upward=True, log_axis=True)
    return np.where(np.isnan(out), np.inf, out)


# ---------------------------------------------------------------------------
# extrapolation


def extrapolation(src: Source, values: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Each variable of ``values`` outside the fitted range: N and D by more than a factor 2,
    the others at all; [{variable, value, fitted_range}]. None when the range is unknown."""
    if src.ranges is None:
        return None
    out = []
    for name, value in values.items():
        if name not in src.ranges or name not in src.law.variable_names:
            continue
        lo, hi = src.ranges[name]
        value = float(value)
        slack = SCALE_FACTOR if name in SCALE_VARIABLES else 1.0
        tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
        if value < lo / slack - tol or value > hi * slack + tol:
            out.append({"variable": name, "value": value, "fitted_range": [lo, hi]})
    return out


def extrapolation_warning(src: Source, found: list[dict[str, Any]] | None) -> str | None:
    """One line for ``extrapolation``'s answer (None: within the fitted range)."""
    if src.published:
        return "no extrapolation check: the range the published constants were fitted on is not recorded"
    if found is None:
        return "warning: fitted range unknown (the fit file predates recorded ranges: refit to check extrapolation)"
    if not found:
        return None
    return "warning: extrapolating: " + "; ".join(_describe(e) for e in found)


def _factor(e: Mapping[str, Any]) -> float:
    lo, hi = e["fitted_range"]
    v = e["value"]
    return (lo / v if v < lo else v / hi) if v > 0 and lo > 0 else abs(v - (lo if v < lo else hi))


def _describe(e: Mapping[str, Any]) -> str:
    lo, hi = e["fitted_range"]
    name, v = e["variable"], e["value"]
    if name in SCALE_VARIABLES:
        where = "below" if v < lo else "above"
        return f"{name} = {v:.3g} is {_factor(e):.3g}x {where} the fitted range [{lo:.3g}, {hi:.3g}]"
    return f"{name} = {v:g} is outside the fitted {name} [{lo:g}, {hi:g}]"


def grid_warnings(items: list[tuple[Source, list[dict[str, Any]] | None]], what: str = "cells") -> list[str]:
    """The warnings of many predictions in one or two lines: range unknown / published constants
    once each, and how many ``what`` extrapolate with the farthest value of each variable."""
    lines = []
    for src, found in items:
        if src.published or found is None:
            line = extrapolation_warning(src, found)
            if line not in lines:
                lines.append(line)
    flagged = [f for _, f in items if f]
    if flagged:
        worst: dict[str, dict[str, Any]] = {}
        for found in flagged:
            for e in found:
                if e["variable"] not in worst or _factor(e) > _factor(worst[e["variable"]]):
                    worst[e["variable"]] = e
        lines.append(f"warning: extrapolating in {len(flagged)} of {len(items)} {what}, farthest: "
                     + "; ".join(_describe(e) for e in worst.values()))
    return lines


def uncertainty(src: Source, replicates: np.ndarray | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON fields of one prediction: ``interval`` ([lo, hi] or None), ``interval_note``,
    ``extrapolation`` (list, None when the range is unknown) and ``warnings`` (lines)."""
    found = extrapolation(src, values)
    note = src.no_interval
    interval = None
    if note is None and replicates is not None:
        interval = percentile_interval(replicates, src.expansion)
        missing = int(np.isnan(np.asarray(replicates, dtype=float)).sum())
        note = (f"{LEVEL:g}% percentile interval over {len(src.thetas)} bootstrap replicates"
                + (f", widened x{src.expansion:.3g} for few clusters" if src.expansion != 1.0 else "")
                + (f" ({missing} without an answer, left out)" if missing else ""))
        if interval is None:
            note = f"no interval ({missing} of {len(src.thetas)} bootstrap replicates give no answer)"
    warnings = [w for w in (extrapolation_warning(src, found),) if w]
    return {"interval": interval, "interval_note": note, "extrapolation": found, "warnings": warnings}


def interval_text(u: Mapping[str, Any], fmt: Callable[[float], str] = lambda v: f"{v:.4g}") -> str:
    """The interval as text: '95% interval [lo, hi]' or why there is none."""
    if u["interval"] is None:
        return u["interval_note"]
    lo, hi = u["interval"]
    return f"{LEVEL:g}% interval [{fmt(lo)}, {fmt(hi)}]"


# ---------------------------------------------------------------------------
# grids: Table 1 and the projection (Fig. 1)


def token_grid_intervals(pick: Callable[[Mapping[str, Any]], Source], grid: "pd.DataFrame",
                         **fixed) -> tuple["pd.DataFrame", list[str]]:
    """``analysis.token_grid``'s rows with ``interval`` ([lo, hi] tokens or None),
    ``interval_note`` and ``extrapolation`` per row (``pick``: a ``Source`` per row's inputs,
    ``sources_for``), and the distinct warning lines."""
    grid = grid.copy()
    intervals, notes, found, items = [], [], [], []
    for row in grid.itertuples():
        known = {"n_params": float(row.n_params), "bits": float(row.bits), **fixed}
        src = pick(known)
        reps = solve_many(src, known, float(row.qid), "tokens") if src.no_interval is None else None
        u = uncertainty(src, reps, {**known, "tokens": float(row.tokens)})
        intervals.append(u["interval"])
        notes.append(u["interval_note"])
        found.append(u["extrapolation"])
        items.append((src, u["extrapolation"]))
    grid["interval"], grid["interval_note"], grid["extrapolation"] = intervals, notes, found
    return grid, grid_warnings(items)


def projection_intervals(pick: Callable[[Mapping[str, Any]], Source], curves: "pd.DataFrame",
                         crossings: "pd.DataFrame", *, loss16_params: Mapping[str, float],
                         max_tokens: float) -> tuple["pd.DataFrame", "pd.DataFrame", list[str]]:
    """``analysis.projection``'s curves with qid_lo, qid_hi, loss_lo, loss_hi (95% over the
    replicates; NaN without replicates) and ``extrapolated`` (N or D more than 2x outside, or
    bits outside, the fitted range); its crossings with ``interval`` (tokens; inf: not worse than
    random within ``max_tokens``), ``interval_note`` and ``extrapolation``; the warning lines."""
    curves, crossings = curves.copy(), crossings.copy()
    for name in ("qid_lo", "qid_hi", "loss_lo", "loss_hi"):
        curves[name] = np.nan
    curves["extrapolated"] = False
    answers, items = [], []
    for _, cross in crossings.iterrows():
        known = {"n_params": float(cross.n_params), "bits": float(cross.bits)}
        src = pick(known)
        rows = ((curves.n_params == cross.n_params) & (curves.bits == cross.bits)).to_numpy()
        tokens = curves.tokens.to_numpy(dtype=float)[rows]
        curves.loc[rows, "extrapolated"] = [bool(extrapolation(src, {**known, "tokens": t})) for t in tokens]
        items.append((src, extrapolation(src, {**known, "tokens": float(tokens.max())})))
        if src.no_interval is None:
            _band(src, known, curves, rows)
        answers.append(_crossing_interval(src, known, cross, loss16_params, max_tokens))
    for key in ("interval", "interval_note", "extrapolation"):
        crossings[key] = [u[key] for u in answers]
    return curves, crossings, grid_warnings(items, "curves (at their largest D)")


def _band(src: Source, known: Mapping[str, float], curves: "pd.DataFrame", rows: np.ndarray) -> None:
    """Fill qid_lo/qid_hi and loss_lo/loss_hi of ``curves[rows]`` (one N and P) in place."""
    reps = predict_many(src, {**known, "tokens": curves.tokens.to_numpy(dtype=float)[rows]})
    tail = (100 - LEVEL) / 2
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(reps, [tail, 100 - tail], axis=0)
        if src.expansion != 1.0:
            mid = np.nanmedian(reps, axis=0)
            positive = bool(np.all(reps[np.isfinite(reps)] > 0))
            lo, hi = _widen(lo, mid, src.expansion, positive), _widen(hi, mid, src.expansion, positive)
    loss16 = curves.loss16.to_numpy(dtype=float)[rows]
    curves.loc[rows, "qid_lo"], curves.loc[rows, "qid_hi"] = lo, hi
    curves.loc[rows, "loss_lo"], curves.loc[rows, "loss_hi"] = loss16 + lo, loss16 + hi


def _crossing_interval(src: Source, known: Mapping[str, float], cross, loss16_params, max_tokens) -> dict[str, Any]:
    """``uncertainty``'s fields for one crossing of the projection (tokens to worse than random)."""
    t = cross.tokens_worse_than_random
    at = {**known, "tokens": float(t)} if t is not None and t == t else dict(known)
    if src.no_interval is not None:
        return uncertainty(src, None, at)
    kaplan = get_law("kaplan")
    theta16 = kaplan.to_fit(loss16_params)

    def loss16(d):
        return np.exp(kaplan.log_predict(theta16, inputs(kaplan, {"n_params": known["n_params"], "tokens": d})))

    return uncertainty(src, crossing_many(src, loss16, known, float(cross.random_loss), max_tokens), at)
