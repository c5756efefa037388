"""Ouyang et al. 2024, "Low-Bit Quantization Favors Undertrained LLMs" (arXiv 2411.17691).

QiD = k * D^beta / (N^alpha * P^gamma)   (Eq. 8; single-factor forms Eq. 5-7)
L16 = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D   (Fig. 7, Kaplan et al. 2020 Eq. 3 form)
Loss_q = L16 + QiD.
"""

from __future__ import annotations

import numpy as np

from ..registry import register_law
from ..spec import Fold, FunctionLaw, Param, Published, TermsLaw, Variable, column, design

N = Variable("n_params", "non-embedding parameters N")
D = Variable("tokens", "training tokens D")
P = Variable("bits", "weight bit width P")

PAPER = "Ouyang et al. 2024, Low-Bit Quantization Favors Undertrained LLMs, arXiv 2411.17691"

TABLE1_NOTE = (
    "The unified constants (Eq. 8, Fig. 6) reproduce Table 1's 2-bit column to within its rounding, "
    "but not the 3- and 4-bit columns (they are off by large factors): Table 1 follows bit-specific "
    "power laws, which a per-bit-width fit (qidlab fit --law ouyang2024 --by bits) recovers to <0.1%. "
    "See docs/findings-ouyang-table1.md."
)


def _unified_terms(X):
    logN, logD, logP = np.log(column(X, "n_params")), np.log(column(X, "tokens")), np.log(column(X, "bits"))
    n = logN.shape[0]
    # theta = (log k, alpha, beta, gamma)
    return [(design(n, 4, {0: 1.0, 1: -logN, 2: logD, 3: -logP}), np.zeros(n))]


UNIFIED = register_law(
    TermsLaw(
        name="ouyang2024",
        title="Ouyang 2024 unified QiD law",
        formula="qid = k * tokens^beta / (n_params^alpha * bits^gamma)",
        quantity="qid",
        targets=("qid",),
        variables=(N, D, P),
        params=(
            Param("k", (1e-30, 1e30), "log", start=0.017, doc="joint coefficient"),
            Param("alpha", (0.0, 5.0), start=0.2, doc="model-size exponent"),
            Param("beta", (0.0, 5.0), start=0.5, doc="training-token exponent"),
            Param("gamma", (0.0, 30.0), start=5.0, doc="bit-width exponent"),
        ),
        published={
            "ouyang2024-eq8": Published(
                f"{PAPER}, Eq. 8 / Fig. 6 (GPTQ on Pythia, 2-4 bits)",
                {"k": 0.017, "alpha": 0.2261, "beta": 0.5251, "gamma": 5.4967},
                note=TABLE1_NOTE,
            ),
        },
        citation=PAPER,
        note=TABLE1_NOTE,
        terms=_unified_terms,
        folds=(
            Fold(("n_params",), {"alpha": 0.0}, "k"),
            Fold(("tokens",), {"beta": 0.0}, "k"),
            Fold(("bits",), {"gamma": 0.0}, "k"),
        ),
    )
)


def _single(name, var, exponent, sign, coef, value, eq):
    def terms(X):
        logx = np.log(column(X, var.name))
        n = logx.shape[0]
        return [(design(n, 2, {0: 1.0, 1: sign * logx}), np.zeros(n))]

    what = "*" if sign > 0 else "/"
    return register_law(
        TermsLaw(
            name=name,
            title=f"Ouyang 2024 single-factor QiD law in {var.name} (Eq. {eq})",
            formula=f"qid = {coef} {what} {var.name}^{exponent}" if sign < 0 else f"qid = {coef} * {var.name}^{exponent}",
            quantity="qid",
            targets=("qid",),
            variables=(var,),
            params=(
                Param(coef, (1e-30, 1e30), "log", start=0.1, doc="coefficient (not printed in the paper)"),
                Param(exponent, (0.0, 30.0), start=0.5),
            ),
            published={
                f"ouyang2024-eq{eq}": Published(
                    f"{PAPER}, Eq. {eq}", {exponent: value},
                    note=f"only the exponent is printed; {coef} must be fitted",
                )
            },
            citation=PAPER,
            note=f"The paper prints only {exponent}; predicting needs a fit file for {coef}.",
            terms=terms,
        )
    )


TOKENS_ONLY = _single("ouyang2024-tokens", D, "beta", +1, "b", 0.5316, 5)
SIZE_ONLY = _single("ouyang2024-size", N, "alpha", -1, "a", 0.2276, 6)
BITS_ONLY = _single("ouyang2024-bits", P, "gamma", -1, "c", 5.4812, 7)


def _kaplan(X, N_c, alpha_N, D_c, alpha_D):
    n, d = column(X, "n_params"), column(X, "tokens")
    return ((N_c / n) ** (alpha_N / alpha_D) + D_c / d) ** alpha_D


KAPLAN = register_law(
    FunctionLaw(
        name="kaplan",
        title="16-bit loss in the Kaplan 2020 Eq. 3 form (Ouyang 2024 Fig. 7)",
        formula="loss16 = [(N_c/n_params)^(alpha_N/alpha_D) + D_c/tokens]^alpha_D",
        quantity="loss",
        targets=("loss16", "loss"),
        variables=(N, D),
        params=(
            Param("N_c", (1.0, 1e40), "log", grid=(np.log(1e14), np.log(1e20)), start=4.74e19),
            Param("alpha_N", (1e-4, 2.0), grid=(0.05, 0.1), start=0.045),
            Param("D_c", (1.0, 1e30), "log", grid=(np.log(1e9), np.log(1e11)), start=7.63e10),
            Param("alpha_D", (1e-3, 2.0), grid=(0.1, 0.4), start=0.399),
        ),
        published={
            "ouyang2024-fig7": Published(
                f"{PAPER}, Fig. 7 (Pythia, 16-bit)",
                {"N_c": 4.74e19, "alpha_N": 0.045, "D_c": 7.63e10, "alpha_D": 0.399},
            )
        },
        citation=f"{PAPER}, Fig. 7; form of Kaplan et al. 2020, Eq. 3",
        note="Fitted to loss16 when the data has it (the 16-bit model's loss), else to loss.",
        fn=_kaplan,
        must_vary=("n_params", "tokens"),
    )
)
