"""Kumar et al. 2024, "Scaling Laws for Precision" (arXiv 2411.04330), App. K Table 2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import register_law
from ..spec import Fold, Law, Param, Published, TermsLaw, Variable, column, design, logsumexp

PAPER = "Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330"
N = Variable("n_params", "non-embedding parameters N")
D = Variable("tokens", "training tokens D")


def _ptq_terms(X):
    logN, logD, P = np.log(column(X, "n_params")), np.log(column(X, "tokens")), column(X, "bits")
    n = logN.shape[0]
    # theta = (log C_T, gamma_D, gamma_N, 1/gamma_post)
    return [(design(n, 4, {0: 1.0, 1: logD, 2: -logN, 3: -P}), np.zeros(n))]


PTQ = register_law(
    TermsLaw(
        name="kumar2024-ptq",
        title="Kumar 2024 post-training quantization degradation delta_PTQ",
        formula="qid = C_T * tokens^gamma_D / n_params^gamma_N * exp(-bits / gamma_post)",
        quantity="qid",
        targets=("qid",),
        variables=(N, D, Variable("bits", "post-training weight bit width P_post")),
        params=(
            Param("C_T", (1e-30, 1e30), "log", start=0.06),
            Param("gamma_D", (0.0, 5.0), start=0.5),
            Param("gamma_N", (0.0, 5.0), start=0.3),
            Param("gamma_post", (1e-3, float("inf")), "inverse", start=0.6),
        ),
        published={
            "kumar2024-tab2": Published(
                f"{PAPER}, App. K Table 2",
                {"C_T": 0.0598, "gamma_D": 0.5068, "gamma_N": 0.3439, "gamma_post": 0.5907},
                verified=False,
                note="unverified: the paper is not among the project's sources; the form is checked against a "
                "secondary summary, the constants come from a compilation whose source row for gamma_post is "
                "garbled (read as gamma_post, as two implementations do, but not checked)",
            )
        },
        citation=PAPER,
        note="D_crit (App. E.1) adds the loss law's B*D^-beta (B, beta of the precision law).",
        terms=_ptq_terms,
        folds=(
            Fold(("n_params",), {"gamma_N": 0.0}, "C_T"),
            Fold(("tokens",), {"gamma_D": 0.0}, "C_T"),
            Fold(("bits",), {"gamma_post": float("inf")}, "C_T"),
        ),
    )
)


PRECISIONS = ("bits", "a_bits", "kv_bits")


@dataclass(frozen=True)
class PrecisionLaw(Law):
    """loss = A*N_eff^-alpha + B*D^-beta + E in log-sum-exp form, with analytic gradients.

    theta = (log A, alpha, log B, beta, log E, log gamma_w, log gamma_a, log gamma_kv)."""

    def _terms(self, theta, X):
        logN, logD = np.log(column(X, "n_params")), np.log(column(X, "tokens"))
        t = [theta[..., i : i + 1] for i in range(8)]
        z = [column(X, col) / np.exp(t[5 + j]) for j, col in enumerate(PRECISIONS)]  # P_x / gamma_x
        log_f = sum(np.log(-np.expm1(-zj)) for zj in z)  # sum_x log(1 - exp(-P_x/gamma_x))
        terms = [t[0] - t[1] * (logN + log_f), t[2] - t[3] * logD, t[4] + 0 * logD]
        return terms, z, logN + log_f, logD

    def log_predict(self, theta, X):
        return logsumexp(self._terms(np.asarray(theta), X)[0])

    def log_predict_grad(self, theta, X):
        theta = np.asarray(theta, dtype=float)
        terms, z, log_neff, logD = self._terms(theta, X)
        log_y = logsumexp(terms)
        w = [np.exp(term - log_y) for term in terms]
        alpha = theta[..., 1:2]
        with np.errstate(invalid="ignore", over="ignore"):
            dgamma = [w[0] * alpha * zj * np.exp(-zj) / -np.expm1(-zj) for zj in z]
        grad = [w[0], -w[0] * log_neff, w[1], -w[1] * logD, w[2], *dgamma]
        return log_y, np.stack(np.broadcast_arrays(*grad), axis=-1)


TINY = 1e-300
QAT = register_law(
    PrecisionLaw(
        name="kumar2024-qat",
        title="Kumar 2024 training-precision law with effective parameters N_eff",
        formula="loss = A * N_eff^-alpha + B * tokens^-beta + E,  "
        "N_eff = n_params * prod_x (1 - exp(-P_x / gamma_x)), x in {bits, a_bits, kv_bits}",
        quantity="loss",
        targets=("loss",),
        variables=(
            N,
            D,
            Variable("bits", "weight training precision P_w"),
            Variable("a_bits", "activation precision P_a", default=16.0),
            Variable("kv_bits", "KV-cache precision P_kv", default=16.0),
        ),
        params=(
            Param("A", (1e-6, 1e12), "log", grid=(np.log(1e2), np.log(1e4)), start=4.299e3),
            Param("alpha", (0.0, 2.0), grid=(0.3, 0.6), start=0.4965),
            Param("B", (1e-6, 1e14), "log", grid=(np.log(1e3), np.log(1e5)), start=1.806e4),
            Param("beta", (0.0, 2.0), grid=(0.3, 0.6), start=0.4965),
            Param("E", (1e-3, 20.0), "log", grid=(0.0, 1.0), start=2.7648),
            Param("gamma_w", (1e-3, 100.0), "log", start=2.6745),
            Param("gamma_a", (1e-3, 100.0), "log", start=2.2102),
            Param("gamma_kv", (1e-3, 100.0), "log", start=0.9578),
        ),
        published={
            "kumar2024-tab2": Published(
                f"{PAPER}, App. K Table 2 (alpha = beta tied)",
                {"A": 4.299e3, "alpha": 0.4965, "B": 1.806e4, "beta": 0.4965, "E": 2.7648,
                 "gamma_w": 2.6745, "gamma_a": 2.2102, "gamma_kv": 0.9578},
                verified=False,
                note="unverified for this form: the constants were fitted with offsets (n_w = 0.3037, "
                "n_a = 1.4072, n_kv = 2.4185, b = 1.1277) that the main-text formula (this law) leaves out, "
                "so with this formula they are not the paper's fit and will not reproduce its figures",
            )
        },
        citation=PAPER,
        note="Published form and constants disagree: the fitted model had precision offsets the "
        "main-text formula omits. Unquantized activations/KV are taken as 16 bits.",
        folds=(
            Fold(("bits",), {"gamma_w": TINY}, "A"),
            Fold(("a_bits",), {"gamma_a": TINY}, "A"),
            Fold(("kv_bits",), {"gamma_kv": TINY}, "A"),
            Fold(("tokens",), {"beta": 0.0, "B": TINY}, "E"),
        ),
    )
)
