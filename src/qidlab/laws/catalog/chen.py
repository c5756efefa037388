"""Chen et al. 2025, "Scaling Law for Quantization-Aware Training" (arXiv 2505.14302)."""

from __future__ import annotations

import numpy as np

from ..registry import register_law
from ..spec import Fold, Param, Published, TermsLaw, Variable, column, design

PAPER = "Chen et al. 2025, Scaling Law for Quantization-Aware Training, arXiv 2505.14302"
UNVERIFIED = "constants read from a secondary summary, not from the paper's own table (unverified)"


def _terms(X):
    logN, logD = np.log(column(X, "n_params")), np.log(column(X, "tokens"))
    loglogG = np.log(np.log2(column(X, "group_size")))
    n = logN.shape[0]
    # theta = (log k, gamma_N, gamma_D, gamma_G)
    return [(design(n, 4, {0: 1.0, 1: -logN, 2: logD, 3: loglogG}), np.zeros(n))]


def _set(k, gN, gD, gG, fmt):
    return Published(f"{PAPER} ({fmt}, INT4 fake-quant QAT)",
                     {"k": k, "gamma_N": gN, "gamma_D": gD, "gamma_G": gG}, verified=False, note=UNVERIFIED)


LAW = register_law(
    TermsLaw(
        name="chen2025",
        title="Chen 2025 QAT degradation delta_p(N, D, G)",
        formula="qid = k * tokens^gamma_D * log2(group_size)^gamma_G / n_params^gamma_N",
        quantity="qid",
        targets=("qid",),
        variables=(
            Variable("n_params", "non-embedding parameters N"),
            Variable("tokens", "training tokens D"),
            Variable("group_size", "quantization group size G (>= 2)"),
        ),
        params=(
            Param("k", (1e-30, 1e30), "log", start=0.2),
            Param("gamma_N", (0.0, 5.0), start=0.2),
            Param("gamma_D", (0.0, 5.0), start=0.1),
            Param("gamma_G", (0.0, 5.0), start=0.5),
        ),
        published={
            "W4A4": _set(0.1582, 0.2186, 0.0745, 0.7779, "W4A4"),
            "W4A16": _set(0.2522, 0.3589, 0.1610, 0.3533, "W4A16"),
            "W16A4": _set(0.1004, 0.1816, 0.0331, 0.9812, "W16A4"),
        },
        citation=f"{PAPER}; {UNVERIFIED}",
        note="delta_W4A4 is reported to be about delta_W4A16 + delta_W16A4. qid here is the QAT loss gap "
        "to the full-precision model.",
        terms=_terms,
        folds=(
            Fold(("n_params",), {"gamma_N": 0.0}, "k"),
            Fold(("tokens",), {"gamma_D": 0.0}, "k"),
            Fold(("group_size",), {"gamma_G": 0.0}, "k"),
        ),
    )
)
