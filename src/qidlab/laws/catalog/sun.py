"""Sun et al. 2025, "Scaling Laws for Floating-Point Quantization Training" (arXiv 2501.02423),
App. B.1 Table 2: the "Capybara" law with exponent bits E, mantissa bits M, block size B."""

from __future__ import annotations

import numpy as np

from ..registry import register_law
from ..spec import Fold, Param, Published, TermsLaw, Variable, column, design

PAPER = "Sun et al. 2025, Scaling Laws for Floating-Point Quantization Training, arXiv 2501.02423"
LOG_LOG2_CHANNEL = np.log(13.1567)  # channel-wise scaling is equivalent to log2(B) = 13.1567


def _terms(X):
    logN, logD = np.log(column(X, "n_params")), np.log(column(X, "tokens"))
    logE, logM = np.log(column(X, "exp_bits") + 0.5), np.log(column(X, "man_bits") + 0.5)
    loglog2B = np.log(np.log2(column(X, "block_size")))
    n = logN.shape[0]
    zero = np.zeros(n)
    # theta = (log n, alpha, log d, beta, log eps, log gamma, delta, nu)
    return [
        (design(n, 8, {0: 1.0, 1: -logN}), zero),
        (design(n, 8, {2: 1.0, 3: -logD}), zero),
        (design(n, 8, {4: 1.0}), zero),
        (design(n, 8, {1: -logN, 3: logD, 5: -1.0, 6: -logE, 7: -logM}), loglog2B),
    ]


LAW = register_law(
    TermsLaw(
        name="sun2025",
        title="Sun 2025 floating-point quantization training law (Capybara)",
        formula="loss = n/n_params^alpha + d/tokens^beta + eps + tokens^beta/n_params^alpha * "
        "log2(block_size) / (gamma * (exp_bits+0.5)^delta * (man_bits+0.5)^nu)",
        quantity="loss",
        targets=("loss",),
        variables=(
            Variable("n_params", "non-embedding parameters N"),
            Variable("tokens", "training tokens D (plain tokens, not the paper's 2^30 units)"),
            Variable("exp_bits", "exponent bits E", positive=False),
            Variable("man_bits", "mantissa bits M", positive=False),
            Variable("block_size", "scaling block size B (>= 2; channel-wise ~ 2^13.1567)"),
        ),
        params=(
            Param("n", (1e-6, 1e12), "log", grid=(np.log(10.0), np.log(1e3)), start=69.2343),
            Param("alpha", (0.0, 2.0), grid=(0.2, 0.5), start=0.2368),
            Param("d", (1e-6, 1e15), "log", grid=(np.log(1e3), np.log(1e6)), start=68973.0621),
            Param("beta", (0.0, 2.0), grid=(0.3, 0.6), start=0.5162),
            Param("eps", (1e-3, 20.0), "log", grid=(0.5,), start=1.9061),
            Param("gamma", (1e-6, 1e15), "log", grid=(np.log(1e2), np.log(1e5)), start=11334.5197),
            Param("delta", (0.0, 10.0), grid=(1.0, 3.0), start=3.1926),
            Param("nu", (0.0, 10.0), grid=(1.0, 3.0), start=2.9543),
        ),
        published={
            "sun2025-tab2": Published(
                f"{PAPER}, App. B.1 Table 2",
                {"n": 69.2343, "alpha": 0.2368, "d": 68973.0621, "beta": 0.5162, "eps": 1.9061,
                 "gamma": 11334.5197, "delta": 3.1926, "nu": 2.9543},
                note="the paper's tables name data sizes in units of 2^30 tokens; these constants take "
                "D in plain tokens (the published D_crit checks hold that way)",
            )
        },
        citation=PAPER,
        note="D_crit = [d*gamma*N^alpha*(E+0.5)^delta*(M+0.5)^nu / log2(B)]^(1/(2*beta)); "
        "optimal split M = nu*P/(delta+nu) - 0.5 for P = E+M+1 total bits.",
        terms=_terms,
        folds=(
            Fold(("exp_bits",), {"delta": 0.0}, "gamma"),
            Fold(("man_bits",), {"nu": 0.0}, "gamma"),
            Fold(("n_params",), {"alpha": 0.0, "n": 1e-300}, "eps"),
            Fold(("tokens",), {"beta": 0.0, "d": 1e-300}, "eps"),
        ),
    )
)
