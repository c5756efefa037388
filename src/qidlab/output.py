"""Output written for people and programs, at ground level: the JSON that the command line prints
and that the report writes beside its page (one writer, so both read the same)."""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """JSON-safe: inf as the string "inf", NaN as null, numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


def dump_json(doc: Any) -> str:
    """``doc`` as indented JSON (``json_safe``: no NaN or inf literals), without a final newline."""
    return json.dumps(json_safe(doc), indent=2, allow_nan=False)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes: "1 point", "3 points" (``plural``: an irregular one)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def fit_cautions(n: int, params: dict, ci95: dict | None) -> list[str]:
    """What a reader of a fit must be told (issue 18, the smoke demo's fits): fewer points than free
    parameters + 2 (the fit is exact or nearly so; its CIs mean little), and an estimate outside its
    own percentile bootstrap CI (a skewed bootstrap distribution: few points or a flat fit).
    ``params``: name -> value (None: folded); ``ci95``: name -> [low, high]."""
    free = [k for k, v in params.items() if v is not None]
    out = []
    if n < len(free) + 2:
        out.append(f"warning: {count(n, 'point')} for {count(len(free), 'free parameter')} (fewer than parameters + 2): "
                   "the fit is (nearly) exact, its CIs mean little")
    outside = [k for k, (lo, hi) in (ci95 or {}).items() if params.get(k) is not None
               and not lo - _slack(lo, hi) <= params[k] <= hi + _slack(lo, hi)]
    if outside:
        what = (f"the estimate of {outside[0]} lies outside its" if len(outside) == 1
                else f"the estimates of {', '.join(outside)} lie outside their")
        out.append(f"note: {what} bootstrap CI (a skewed bootstrap distribution: too few points, or a flat fit)")
    return out


def _slack(lo: float, hi: float) -> float:
    """Rounding room at a CI's ends (a CI of one value: the estimate and its replicates equal)."""
    return 1e-9 * max(abs(lo), abs(hi), 1e-300)


#: Size suffixes, as ``tables.parse_number`` reads them (7B = 7e9).
SIZE_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def size(x: float, digits: int = 4) -> str:
    """A count (parameters N, tokens D) as a user writes it and ``qidlab`` reads it back: 7B, 1.5T,
    405B, 20M; below a thousand as it is. Not for losses or other quantities with units."""
    if not math.isfinite(x):
        return f"{x}"
    for scale, suffix in SIZE_SUFFIXES:
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"
