"""Which laws a study can fit, on which rows, and the fits (``Study.fit`` caches them).

* QiD laws (quantity ``qid``) are fitted to the primary slice (one eval set, one method).
  A scale variable of Ouyang's unified law (n_params N, tokens D, bits P) that a law lacks
  becomes a grouping: ``ouyang2024-tokens`` is fitted once per (N, P), ``ouyang2024-size``
  once per (D, P), ``ouyang2024-bits`` once per (N, D), as in the paper's Fig. 3-5. A
  quantization setting a law lacks (group_size, exp_bits, man_bits, block_size) is held at
  its most common value; a law that models a setting needs that setting to vary.
* 16-bit loss laws (those fitted to ``loss16``: chinchilla, kaplan) get one point per
  checkpoint of the primary eval set.
* Other loss laws (kumar2024-qat, sun2025, frantar2025) describe models *trained* at low
  precision or compressed, which a store of post-training quantization does not hold.

Every fit uses ``qidlab.laws.fit.fit_law`` with the study's bootstrap and seed and the
default hold-out (the largest N, the latest D); its document is ``qidlab fit --json``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import QidlabError
from ..laws import get_law, list_laws
from ..laws.fit import fit_document, fit_law
from ..laws.solve import evaluate, law_params
from ..output import count
from .settings import SETTINGS, hold_settings

if TYPE_CHECKING:
    import pandas as pd

    from ..laws.fit import FitResult
    from ..laws.spec import Law
    from .study import Study

SCALE = ("n_params", "tokens", "bits")
#: Laws of the 16-bit loss that Fig. 1 and Fig. 7 may use, in order of preference
#: (analysis.projection takes kaplan's form).
LOSS16_LAWS = ("kaplan", "chinchilla")


@dataclass
class LawFit:
    """A law fitted to a study: the rows it saw, its groups' ``FitResult``s, its document."""

    law: "Law"
    by: tuple[str, ...]
    data: "pd.DataFrame"
    held: dict[str, float]
    results: list["FitResult"]
    document: dict[str, Any]

    def params(self, values: Mapping[str, Any]) -> dict[str, float]:
        """Parameters for inputs ``values`` (the matching group's when the fit is grouped)."""
        return law_params(self.law, fit=self.document, values=values)[0]

    def predict(self, frame: "pd.DataFrame") -> np.ndarray:
        """The law's quantity (the study's unit) for each row of ``frame``; NaN where no group matches."""
        out = np.full(len(frame), np.nan)
        for result in self.results:
            mask = np.ones(len(frame), dtype=bool)
            for column, value in result.group.items():
                mask &= frame[column].to_numpy() == value
            if mask.any():
                values = {v: frame[v].to_numpy(dtype=float)[mask] for v in self.law.variable_names if v in frame}
                out[mask] = evaluate(self.law, result.all_params(), values)
        return out


def target_of(law: "Law") -> str | None:
    """The column a study fits ``law`` to: qid, loss16, or None (not a law of this data)."""
    if law.quantity == "qid":
        return "qid"
    return "loss16" if "loss16" in law.targets else None


def why_not(law: "Law", frame: "pd.DataFrame") -> str | None:
    """Why ``law`` cannot be fitted to the measurements ``frame`` (None: it can)."""
    target = target_of(law)
    if target is None:
        return f"predicts the {law.quantity} of models trained at low precision or compressed, not QiD or loss16"
    if target not in frame.columns or frame[target].isna().all():
        return f"the measurements have no {target}"
    for v in law.variables:
        if v.default is None and (v.name not in frame.columns or frame[v.name].isna().all()):
            return f"needs {v.name}, which the measurements lack"
        if v.name in SETTINGS and frame[v.name].nunique() < 2:
            return f"models {v.name}, which is constant in the measurements"
    for name in law.must_vary:
        if frame[name].nunique() < 2:
            return f"needs {name} to vary; it is constant in the measurements"
    return None


def applicable_laws(study: "Study") -> dict[str, str | None]:
    """Every registered law of QiD or loss16 -> None when the study can fit it, else why not."""
    return {law.name: why_not(law, study.primary) for law in list_laws() if target_of(law)}


def fit_all(study: "Study") -> tuple[dict[str, LawFit], dict[str, str]]:
    """Every law of QiD or loss16 fitted to the study: (name -> LawFit, name -> why not)."""
    fits, problems = {}, {}
    for name, reason in applicable_laws(study).items():
        if reason:
            problems[name] = reason
            continue
        try:
            fits[name] = study.fit(name)
        except QidlabError as exc:
            problems[name] = f"the fit failed: {exc}"
    return fits, problems


def fit_study_law(study: "Study", name: str) -> LawFit:
    """Fit law ``name`` to the study (module docstring); ``QidlabError`` when it cannot be."""
    law = get_law(name)
    reason = why_not(law, study.primary)
    if reason:
        raise QidlabError(f"{law.name} does not apply: {reason}")
    target = target_of(law)
    left_out: list[dict[str, Any]] = []
    if target == "qid":
        data, held = hold_settings(study.primary, keep=law.variable_names)
        by = tuple(c for c in SCALE if c not in law.variable_names and data[c].nunique() > 1)
        if by:
            data, left_out = fittable_groups(data, law, by)
    else:
        data, held, by = study.loss16_points(), {}, ()
    options = dict(bootstrap=study.options.bootstrap, seed=study.options.seed, target=target)
    results = fit_law(data, law, by=list(by) or None, **options)
    selection = {"eval_set": study.eval_set, "held": held, "rows": int(len(data)), "groups_left_out": left_out}
    if target == "qid":
        selection["method"] = study.method
    else:
        selection["points"] = "one per checkpoint (loss16)"
    document = fit_document(law, results, data={**study.source, **selection}, by=by, options=options)
    return LawFit(law=law, by=by, data=data, held=held, results=results, document=document)


def fittable_groups(data: "pd.DataFrame", law: "Law", by) -> tuple["pd.DataFrame", list[dict[str, Any]]]:
    """The groups of ``by`` with enough points of QiD > 0 to fit ``law`` (as many as its
    parameters, each of its variables taking two values or more), and the groups left out."""
    keep, left_out = [], []
    for key, rows in data.groupby(list(by), sort=True):
        usable = rows[rows.qid > 0]
        varied = all(usable[v].nunique() > 1 for v in law.variable_names)
        if len(usable) >= len(law.params) and varied:
            keep.append(rows)
        else:
            group = dict(zip(by, key if isinstance(key, tuple) else (key,)))
            left_out.append({"group": {k: float(v) for k, v in group.items()},
                             "why": f"{count(len(usable), 'point')} with qid > 0, too few to fit {law.name}"})
    if not keep:
        raise QidlabError(f"{law.name}: no group of {', '.join(by)} has enough points with qid > 0 to fit")
    import pandas as pd

    return pd.concat(keep), left_out


def loss16_fit(study: "Study") -> LawFit | None:
    """The study's 16-bit loss law (kaplan, else chinchilla), or None when neither fits."""
    for name in LOSS16_LAWS:
        try:
            return study.fit(name)
        except QidlabError:
            continue
    return None
