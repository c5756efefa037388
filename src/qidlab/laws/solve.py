"""Prediction and inversion of a law: ``evaluate`` (y for given inputs), ``solve`` (one
input for a target y), and ``law_params`` (published constants or a fitted group)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import QidlabError
from .fit import FitResult
from .registry import get_law
from .spec import Law

#: Where ``solve`` searches each variable (natural units) unless told otherwise.
SEARCH_RANGE = {
    "n_params": (1e3, 1e16),
    "n_params_total": (1e3, 1e16),
    "tokens": (1e3, 1e20),
    "bits": (1.0, 64.0),
    "a_bits": (1.0, 64.0),
    "kv_bits": (1.0, 64.0),
    "group_size": (2.0, 1e7),
    "block_size": (2.0, 1e7),
    "exp_bits": (0.0, 16.0),
    "man_bits": (0.0, 32.0),
    "eff": (1e-6, 1.0),
}
LINEAR_VARIABLES = {"exp_bits", "man_bits", "bits", "a_bits", "kv_bits"}


def inputs(law: Law, values: Mapping[str, Any], n: int | None = None) -> dict[str, np.ndarray]:
    """Arrays for every variable of ``law`` from ``values`` (scalars or arrays), defaults filled."""
    unknown = [k for k in values if k not in law.variable_names and k != "loss16"]
    if unknown:
        raise QidlabError(
            f"law {law.name!r} has no variable {', '.join(map(repr, unknown))} "
            f"(its variables: {', '.join(law.variable_names)})"
        )
    arrays = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in values.items() if k in law.variable_names}
    size = n or max((a.size for a in arrays.values()), default=1)
    out = {}
    for v in law.variables:
        if v.name in arrays:
            a = arrays[v.name]
        elif v.default is not None:
            a = np.array([v.default])
        else:
            raise QidlabError(f"law {law.name!r} needs a value for {v.name} (`values` {v.name}=...)", params=("values",))
        bad = (a <= 0) if v.positive else (a < 0)
        if np.any(bad):
            raise QidlabError(f"{v.name} must be {'> 0' if v.positive else '>= 0'} (got {a[bad][0]:g})")
        if np.any(~np.isfinite(a)):
            raise QidlabError(f"{v.name} must be a finite number")
        out[v.name] = np.broadcast_to(a, (size,)).astype(float)
    return out


def evaluate(law: Law | str, params: Mapping[str, float], values: Mapping[str, Any]) -> np.ndarray:
    """The law's quantity (qid or loss, nats) at ``values``."""
    law = get_law(law)
    arrays = inputs(law, values)
    with np.errstate(all="ignore"):  # an overflow is inf, which callers check (predict_point) or compare
        return law.predict(params, arrays)


def predict_point(law: Law | str, params: Mapping[str, float], values: Mapping[str, Any]) -> float:
    """The law's quantity at one point; a ``QidlabError`` when it is not a finite number (an input
    far outside the range the law was fitted on overflows it)."""
    law = get_law(law)
    y = float(evaluate(law, params, values)[0])
    if not np.isfinite(y):
        given = ", ".join(f"{k}={float(v):g}" for k, v in values.items())
        raise QidlabError(f"law {law.name!r} gives {law.quantity} = {y} at {given}: an input is far outside "
                          f"the range the law describes")
    return y


def solve(
    law: Law | str,
    params: Mapping[str, float],
    known: Mapping[str, float],
    target: float,
    var: str,
    search: tuple[float, float] | None = None,
) -> float:
    """The value of ``var`` at which the law's quantity equals ``target`` (nats).

    Scans ``search`` (default ``SEARCH_RANGE[var]``, log-spaced for scale variables) for
    the first sign change, then refines it with Brent's method. Raises ``QidlabError``
    when the target is out of reach over the range, saying what range is reachable."""
    from scipy.optimize import brentq

    law = get_law(law)
    if var not in law.variable_names:
        raise QidlabError(f"law {law.name!r} has no variable {var!r} (its variables: {', '.join(law.variable_names)})")
    if var in known:
        raise QidlabError(f"{var} is both given (`known`) and solved for (`var`)", params=("known", "var"))
    if not (np.isfinite(target) and target > 0):
        raise QidlabError(f"target {law.quantity} must be a positive number (got {target})")
    lo, hi = search or SEARCH_RANGE.get(var, (1e-6, 1e6))
    linear = var in LINEAR_VARIABLES
    grid = np.linspace(lo, hi, 801) if linear else np.geomspace(lo, hi, 801)
    X = inputs(law, {**known, var: grid})
    with np.errstate(all="ignore"):
        gap = np.log(law.predict(params, X)) - math.log(target)
    finite = np.isfinite(gap)
    sign_change = np.flatnonzero(finite[:-1] & finite[1:] & (np.sign(gap[:-1]) != np.sign(gap[1:])))
    exact = np.flatnonzero(finite & (gap == 0))
    if exact.size:
        return float(grid[exact[0]])
    if sign_change.size == 0:
        reach = np.exp(gap[finite] + math.log(target)) if finite.any() else np.array([np.nan])
        raise QidlabError(
            f"law {law.name!r} cannot reach {law.quantity} = {target:g} by varying {var} over "
            f"[{lo:g}, {hi:g}] with {_fmt(known)}: it spans {np.nanmin(reach):.4g} to {np.nanmax(reach):.4g}"
        )
    i = sign_change[0]

    def f(v: float) -> float:
        return float(np.log(law.predict(params, inputs(law, {**known, var: v}))[0]) - math.log(target))

    if linear:
        return float(brentq(f, grid[i], grid[i + 1], xtol=1e-12, rtol=1e-14))
    root = brentq(lambda u: f(math.exp(u)), math.log(grid[i]), math.log(grid[i + 1]), xtol=1e-14, rtol=1e-15)
    return float(math.exp(root))


def _fmt(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items()) or "no other inputs"


# ---------------------------------------------------------------------------
# where parameters come from


def law_params(
    law: Law | str,
    *,
    constants: str | None = None,
    fit: str | Path | Mapping | None = None,
    values: Mapping[str, Any] | None = None,
) -> tuple[dict[str, float], str]:
    """Parameters to predict with, and where they came from.

    ``fit``: a ``qidlab fit --json`` document (path or dict); with several groups the one
    whose group values match ``values`` is chosen (e.g. the ``bits = 3`` fit). Otherwise
    the published set ``constants`` (default: the law's first)."""
    law = get_law(law)
    if fit is not None:
        return _from_fit(law, fit, values or {})
    if constants is None:
        if not law.published:
            raise QidlabError(f"law {law.name!r} has no published constants; give a fit file (`fit`)", params=("fit",))
        constants = next(iter(law.published))
    if constants not in law.published:
        raise QidlabError(
            f"law {law.name!r} has no published constants {constants!r} (has: {', '.join(law.published)})"
        )
    pub = law.published[constants]
    missing = [p for p in law.param_names if p not in pub.values]
    if missing:
        raise QidlabError(
            f"{law.name!r}: the paper does not print {', '.join(missing)} ({pub.note or 'incomplete constants'}); "
            "fit the law to data and pass the fit file (`fit`)", params=("fit",)
        )
    return dict(pub.values), f"published: {pub.source}"


def params_for(
    law: Law | str,
    *,
    constants: str | None = None,
    fit: str | Path | Mapping | None = None,
    values: Mapping[str, Any] | None = None,
) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """Parameters per row of a grid (Table 1, the projection): a function of a row's inputs
    returning ``law_params`` with them added to ``values``, so that the fitted group matching
    the row (e.g. its bit width) serves it; each distinct row is looked up once."""
    cache: dict = {}

    def pick(known: Mapping[str, Any]) -> dict[str, float]:
        key = tuple(sorted(known.items()))
        if key not in cache:
            cache[key] = law_params(law, constants=constants, fit=fit, values={**(values or {}), **known})[0]
        return cache[key]

    return pick


def _from_fit(law: Law, fit, values) -> tuple[dict[str, float], str]:
    chosen, source = chosen_fit(law, fit, values)
    params = {k: _num(v) for k, v in chosen.all_params().items()}
    return params, f"fit: {source} group {chosen.group}"


def chosen_fit(law: Law | str, fit, values: Mapping[str, Any]) -> tuple[FitResult, str]:
    """The fitted group of ``fit`` (a ``qidlab fit --json`` document or its path) whose group
    values match ``values``, and a name for the document."""
    law = get_law(law)
    source = str(fit) if not isinstance(fit, Mapping) else "fit document"
    if not isinstance(fit, Mapping):
        try:
            fit = json.loads(Path(fit).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise QidlabError(f"{source}: not a readable fit file ({exc})") from None
    if not isinstance(fit, Mapping) or not isinstance(fit.get("fits"), list):
        raise QidlabError(f"{source}: not a qidlab fit document (no 'fits' list)")
    if fit.get("law") != law.name:
        raise QidlabError(f"{source}: holds a fit of law {fit.get('law')!r}, not {law.name!r}")
    fits = [FitResult.from_dict(f) for f in fit["fits"]]
    match = [f for f in fits if all(_same(values.get(k), v) for k, v in f.group.items())]
    if len(match) != 1:
        groups = "; ".join(str(f.group) for f in fits)
        keys = sorted({k for f in fits for k in f.group})
        raise QidlabError(
            f"{source}: {len(match)} fitted groups match the inputs; choose one with `values` "
            f"{' '.join(k + '=...' for k in keys)} (groups: {groups})", params=("values",)
        )
    return match[0], source


def _same(given, group_value) -> bool:
    if given is None:
        return False
    try:
        return float(given) == float(group_value)
    except (TypeError, ValueError):
        return str(given) == str(group_value)


def _num(v) -> float:
    return float(v) if not isinstance(v, str) else float(v.replace("Infinity", "inf"))
