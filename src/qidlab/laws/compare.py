"""Out-of-sample choice between QiD law families (``qidlab fit --compare``, the report's
"Model choice" table).

Families (``FAMILIES``):
  unified      Ouyang 2024's law, QiD = k D^beta / (N^alpha P^gamma), one fit to every point
  per-bit      the same law fitted once per bit width (gamma folded into each width's k)
  kumar-exp    Kumar 2024's post-training law, exponential in P: C_T D^gamma_D / N^gamma_N exp(-P/gamma_post)
  interaction  qidlab's own variant (not published): unified with beta + eta ln P as D's exponent

Held-out slices: every model size N in turn (leave-one-size-out: all of that size's points;
needs three sizes or more), and the latest D of every size (leave-latest-D-out: each size's
points at its largest D; needs three D values or more). Each family is refitted without the
slice and predicts it. Error: root mean square of ln(predicted / measured QiD) over the slice's
points with QiD > 0 (``rmse_log``), and their mean |relative error| in percent (``mape``).
The summary ranks families by the mean ``rmse_log`` over slices; a family that cannot be
fitted or cannot predict a slice is ranked after every family that predicted all of them.
``best`` is the first; ``chosen`` the family with the fewest fitted parameters whose mean
``rmse_log`` is within ``PARSIMONY`` (5%) of the best's (a family nesting the true one fits the
noise a little better in sample and ties with it out of sample; the simpler one is chosen).
N non-embedding parameters, D tokens, P bits, QiD nats per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import QidlabError
from ..tables import require_columns
from .fit import fit_law
from .registry import get_law
from .solve import evaluate

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("n_params", "tokens", "bits", "qid")
#: Relative margin of mean rmse_log within which the family with fewer parameters is chosen.
PARSIMONY = 0.05


@dataclass(frozen=True)
class Family:
    """A QiD law family: a law fitted to every point, or once per value of ``by``."""

    name: str
    law: str
    by: tuple[str, ...] = ()
    doc: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("unified", "ouyang2024", (), "Ouyang 2024 unified law, one fit"),
    Family("per-bit", "ouyang2024", ("bits",), "Ouyang 2024 law fitted per bit width"),
    Family("kumar-exp", "kumar2024-ptq", (), "Kumar 2024 post-training law, exponential in P"),
    Family("interaction", "qidlab-interaction", (), "qidlab variant: D exponent beta + eta ln P (not published)"),
)


def held_out_slices(frame: "pd.DataFrame") -> list[tuple[dict[str, Any], np.ndarray]]:
    """(description, row mask) of each held-out slice: every size N (with >= 3 sizes), and the
    latest D of every size (with >= 3 values of D)."""
    out = []
    sizes = np.sort(frame.n_params.unique())
    if len(sizes) >= 3:
        for n in sizes:
            out.append(({"held_out": "n_params", "value": float(n), "label": f"N = {n:.4g}"},
                        (frame.n_params == n).to_numpy()))
    if frame.tokens.nunique() >= 3:
        latest = frame.tokens == frame.groupby("n_params").tokens.transform("max")
        out.append(({"held_out": "tokens", "value": None, "label": "latest D of each size"}, latest.to_numpy()))
    return out


def _fit_predict(family: Family, train: "pd.DataFrame", test: "pd.DataFrame") -> tuple[np.ndarray, int]:
    """QiD predicted for ``test`` by ``family`` fitted to ``train`` (NaN where no fitted group
    matches), and the number of parameters fitted (over all groups)."""
    law = get_law(family.law)
    results = fit_law(train, law, by=list(family.by) or None, holdout=())
    out = np.full(len(test), np.nan)
    for result in results:
        mask = np.ones(len(test), dtype=bool)
        for column, value in result.group.items():
            mask &= test[column].to_numpy() == value
        if mask.any():
            values = {v: test[v].to_numpy(dtype=float)[mask] for v in law.variable_names}
            out[mask] = evaluate(law, result.all_params(), values)
    return out, sum(v is not None for r in results for v in r.params.values())


def _errors(predicted: np.ndarray, measured: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(predicted) & (predicted > 0)
    if not ok.all():
        return {"error": f"{int((~ok).sum())} of {len(ok)} held-out points not predicted (no fitted group)"}
    r = np.log(predicted / measured)
    return {"rmse_log": float(np.sqrt(np.mean(r**2))), "mape": float(np.mean(np.abs(np.expm1(r))) * 100)}


def compare_laws(frame: "pd.DataFrame", families: Sequence[Family] = FAMILIES) -> dict[str, Any]:
    """Every family's out-of-sample error on every held-out slice (module docstring): a
    document with ``families``, ``slices`` (each with ``errors`` per family: rmse_log and mape,
    or ``error`` saying why not), ``summary`` (per family, best first) and ``best``."""
    require_columns(frame, list(COLUMNS), "comparing QiD laws")
    frame = frame[frame.qid.notna()].reset_index(drop=True)
    slices = held_out_slices(frame)
    if not slices:
        raise QidlabError("comparing QiD laws needs three model sizes or three values of D to hold out; "
                          f"the data has {frame.n_params.nunique()} sizes and {frame.tokens.nunique()} values of D")
    rows, sizes = [], {f.name: 0 for f in families}
    for info, mask in slices:
        train, test = frame[~mask], frame[mask & (frame.qid > 0).to_numpy()]
        entry = {**info, "n_train": int(len(train)), "n_test": int(len(test)), "errors": {}}
        for family in families:
            if len(test) == 0:
                entry["errors"][family.name] = {"error": "no held-out point with qid > 0"}
                continue
            try:
                predicted, n_free = _fit_predict(family, train, test)
                sizes[family.name] = max(sizes[family.name], n_free)
            except QidlabError as exc:
                entry["errors"][family.name] = {"error": f"not fitted: {exc}"}
                continue
            entry["errors"][family.name] = _errors(predicted, test.qid.to_numpy(dtype=float))
        rows.append(entry)
    summary = _summary(rows, families, sizes)
    return {"metric": "rmse of ln(predicted / measured qid) on the held-out points with qid > 0",
            "families": [{"name": f.name, "law": f.law, "by": list(f.by), "doc": f.doc,
                          "formula": get_law(f.law).formula} for f in families],
            "slices": rows, "summary": summary, "best": summary[0]["family"] if summary else None,
            "chosen": _chosen(summary), "parsimony": PARSIMONY}


def _chosen(summary) -> str | None:
    """The family with the fewest parameters among those predicting every slice within
    ``PARSIMONY`` of the best mean rmse_log (ties: the lower error)."""
    if not summary or summary[0]["mean_rmse_log"] is None or summary[0]["missed"]:
        return None
    limit = summary[0]["mean_rmse_log"] * (1 + PARSIMONY)
    close = [s for s in summary if not s["missed"] and s["mean_rmse_log"] <= limit]
    return min(close, key=lambda s: (s["n_params"], s["mean_rmse_log"]))["family"]


def _summary(rows, families, sizes) -> list[dict[str, Any]]:
    """Per family: parameters fitted, mean and worst rmse_log over the slices it predicted,
    slices won, slices missed."""
    out = []
    for f in families:
        errs = [r["errors"][f.name]["rmse_log"] for r in rows if "rmse_log" in r["errors"][f.name]]
        wins = sum(1 for r in rows if _winner(r) == f.name)
        out.append({"family": f.name, "law": f.law, "n_params": sizes[f.name], "slices": len(errs),
                    "missed": len(rows) - len(errs),
                    "mean_rmse_log": float(np.mean(errs)) if errs else None,
                    "worst_rmse_log": float(np.max(errs)) if errs else None, "wins": wins})
    out.sort(key=lambda s: (s["missed"], s["mean_rmse_log"] if s["mean_rmse_log"] is not None else np.inf))
    return out


def _winner(row) -> str | None:
    scored = {k: v["rmse_log"] for k, v in row["errors"].items() if "rmse_log" in v}
    return min(scored, key=scored.get) if scored else None
