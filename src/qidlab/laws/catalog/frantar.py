"""Frantar et al. 2025, "Compression Scaling Laws: Unifying Sparsity and Quantization"
(arXiv 2502.16440): a compressed model is a dense one with N * eff(C) parameters."""

from __future__ import annotations

import numpy as np

from ..registry import register_law
from ..spec import Fold, Param, Published, TermsLaw, Variable, column, design

PAPER = "Frantar et al. 2025, Compression Scaling Laws, arXiv 2502.16440"
UNVERIFIED = "constants read from a secondary summary, not from the paper's own table (unverified)"

#: eff(C) per compressed representation, as reported (unverified).
EFFICIENCY = {"int4-weight": 0.923, "w4a4": 0.747, "w1a1": 0.067, "sparse50": 0.871, "dense": 1.0}


def _terms(X):
    logN, logD = np.log(column(X, "n_params")), np.log(column(X, "tokens"))
    log_eff = np.log(column(X, "eff"))
    n = logN.shape[0]
    zero = np.zeros(n)
    # theta = (log A, alpha, log B, beta, log E)
    return [
        (design(n, 5, {0: 1.0, 1: -(logN + log_eff)}), zero),
        (design(n, 5, {2: 1.0, 3: -logD}), zero),
        (design(n, 5, {4: 1.0}), zero),
    ]


LAW = register_law(
    TermsLaw(
        name="frantar2025",
        title="Frantar 2025 compression law with effective parameter multiplier eff(C)",
        formula="loss = A/(n_params*eff)^alpha + B/tokens^beta + E",
        quantity="loss",
        targets=("loss",),
        variables=(
            Variable("n_params", "parameters N"),
            Variable("tokens", "training tokens D"),
            Variable("eff", "eff(C) of the compressed representation (1 = dense); names: "
                     + ", ".join(f"{k}={v}" for k, v in EFFICIENCY.items()), default=1.0, named=EFFICIENCY),
        ),
        params=(
            Param("A", (1e-6, 1e15), "log", grid=(0.0, 5.0, 10.0), start=406.4),
            Param("alpha", (0.0, 3.0), grid=(0.25, 0.5), start=0.34),
            Param("B", (1e-6, 1e15), "log", grid=(0.0, 5.0, 10.0), start=410.7),
            Param("beta", (0.0, 3.0), grid=(0.25, 0.5), start=0.28),
            Param("E", (1e-3, 20.0), "log", grid=(0.0, 0.5), start=1.69),
        ),
        published={
            "hoffmann-dense": Published(
                f"{PAPER} (eff values) with Hoffmann et al. 2022's dense constants",
                {"A": 406.401, "alpha": 0.33917, "B": 410.723, "beta": 0.28491, "E": 1.69337},
                verified=False,
                note="the paper's own dense-law constants are not transcribed here; Hoffmann's stand in. "
                f"eff: {UNVERIFIED}",
            )
        },
        citation=f"{PAPER}; {UNVERIFIED}",
        note="eff(C) depends only on the representation C. Solve for eff from a measured loss with "
        "`qidlab solve --law frantar2025 --for eff`.",
        terms=_terms,
        folds=(
            Fold(("n_params", "eff"), {"alpha": 0.0, "A": 1e-300}, "E"),
            Fold(("tokens",), {"beta": 0.0, "B": 1e-300}, "E"),
        ),
    )
)
