"""Hoffmann et al. 2022 (Chinchilla) loss law and Besiroglu et al. 2024's refit (Epoch AI)."""

from __future__ import annotations

import numpy as np

from ..registry import register_law
from ..spec import Fold, Param, Published, TermsLaw, Variable, column, design


def _terms(X):
    logN, logD = np.log(column(X, "n_params")), np.log(column(X, "tokens"))
    n = logN.shape[0]
    zero = np.zeros(n)
    # theta = (log E, log A, log B, alpha, beta): Hoffmann's (e, a, b, alpha, beta)
    return [
        (design(n, 5, {1: 1.0, 3: -logN}), zero),
        (design(n, 5, {2: 1.0, 4: -logD}), zero),
        (design(n, 5, {0: 1.0}), zero),
    ]


#: Hoffmann et al.'s Approach-3 start grid (in fit space): 5*6*6*5*5 = 4,500 starts.
HOFFMANN_GRID = {
    "E": tuple(np.arange(-1.0, 1.01, 0.5)),
    "A": tuple(np.arange(0.0, 25.1, 5.0)),
    "B": tuple(np.arange(0.0, 25.1, 5.0)),
    "alpha": tuple(np.arange(0.0, 2.01, 0.5)),
    "beta": tuple(np.arange(0.0, 2.01, 0.5)),
}

LAW = register_law(
    TermsLaw(
        name="chinchilla",
        title="Chinchilla loss law (Hoffmann 2022 Approach 3)",
        formula="loss = E + A/n_params^alpha + B/tokens^beta",
        quantity="loss",
        targets=("loss16", "loss"),
        variables=(Variable("n_params", "parameters N"), Variable("tokens", "training tokens D")),
        params=(
            Param("E", (1e-3, 20.0), "log", grid=HOFFMANN_GRID["E"], start=1.69),
            Param("A", (1e-6, 1e15), "log", grid=HOFFMANN_GRID["A"], start=406.4),
            Param("B", (1e-6, 1e15), "log", grid=HOFFMANN_GRID["B"], start=410.7),
            Param("alpha", (0.0, 3.0), grid=HOFFMANN_GRID["alpha"], start=0.34),
            Param("beta", (0.0, 3.0), grid=HOFFMANN_GRID["beta"], start=0.28),
        ),
        published={
            "hoffmann2022": Published(
                "Hoffmann et al. 2022, Training Compute-Optimal LLMs, Approach 3 (unrounded)",
                {"E": 1.69337, "A": 406.401, "B": 410.723, "alpha": 0.33917, "beta": 0.28491},
            ),
            "epoch2024": Published(
                "Besiroglu et al. 2024, Chinchilla Scaling: A replication attempt (refit on Fig. 4 data, "
                "5 highest losses dropped)",
                {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
                verified=False,
                note="unverified: not one fit. E is that of a plain Huber Approach-3 fit of these 240 points "
                "(qidlab's gives E = 1.81722), the others are not (it gives A = 477.8, B = 2143, alpha = 0.3473, "
                "beta = 0.3672): E from Epoch's Huber fit, the rest from its likelihood fit (issue 16); "
                "Epoch's paper is not among the project's sources. Bootstrap standard errors as printed: "
                "0.03, 124.58, 1293.23, 0.02, 0.02 (4,000 resamples)",
            ),
        },
        citation="Hoffmann et al. 2022; Besiroglu et al. 2024",
        note="Hoffmann's rounded constants and Epoch's refit of the same data disagree (B differs 5x); "
        "Epoch argue the original fit had not converged.",
        terms=_terms,
        folds=(
            Fold(("n_params",), {"alpha": 0.0, "A": 1e-300}, "E"),
            Fold(("tokens",), {"beta": 0.0, "B": 1e-300}, "E"),
        ),
    )
)
