"""qidlab's own QiD law variants: not published laws, made to test the published forms against.

qidlab-interaction: Ouyang 2024's unified law with one interaction term, the training-token
exponent depending on the bit width (per-bit-width fits of Ouyang's Table 1 give each bit width
its own beta):

    QiD = k * D^(beta + eta * ln P) / (N^alpha * P^gamma)

eta = 0 is Ouyang's unified law. N non-embedding parameters, D training tokens, P bits; QiD in
nats per token. It is compared out of sample with the unified, per-bit and Kumar laws by
``qidlab fit --compare`` (``qidlab.laws.compare``).
"""

from __future__ import annotations

import numpy as np

from ..registry import register_law
from ..spec import Fold, Param, TermsLaw, Variable, column, design

CITATION = "qidlab's own variant (not a published law): Ouyang 2024's unified QiD law with a D x P interaction"


def _interaction_terms(X):
    logN, logD, logP = np.log(column(X, "n_params")), np.log(column(X, "tokens")), np.log(column(X, "bits"))
    n = logN.shape[0]
    # theta = (log k, alpha, beta, gamma, eta)
    return [(design(n, 5, {0: 1.0, 1: -logN, 2: logD, 3: -logP, 4: logP * logD}), np.zeros(n))]


INTERACTION = register_law(
    TermsLaw(
        name="qidlab-interaction",
        title="qidlab variant: unified QiD law with a tokens x bits interaction (not published)",
        formula="qid = k * tokens^(beta + eta * ln(bits)) / (n_params^alpha * bits^gamma)",
        quantity="qid",
        targets=("qid",),
        variables=(Variable("n_params", "non-embedding parameters N"), Variable("tokens", "training tokens D"),
                   Variable("bits", "weight bit width P")),
        params=(
            Param("k", (1e-30, 1e30), "log", start=0.017, doc="joint coefficient"),
            Param("alpha", (-5.0, 5.0), start=0.2, doc="model-size exponent"),
            Param("beta", (-10.0, 10.0), start=0.5, doc="training-token exponent at P = 1"),
            Param("gamma", (-100.0, 100.0), start=5.0, doc="bit-width exponent at D = 1"),
            Param("eta", (-10.0, 10.0), start=0.0, doc="change of the token exponent per unit of ln P"),
        ),
        published={},
        citation=CITATION,
        note="qidlab's own variant, not a published law: it has no published constants (fit it to data).",
        terms=_interaction_terms,
        folds=(
            Fold(("n_params",), {"alpha": 0.0}, "k"),
            Fold(("tokens",), {"beta": 0.0, "eta": 0.0}, "k and gamma"),
            Fold(("bits",), {"gamma": 0.0, "eta": 0.0}, "k and beta"),
        ),
    )
)
