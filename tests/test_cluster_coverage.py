"""Cluster-bootstrap intervals cover the truth when the points of one model share its quirks.

Each trial simulates a study of G = 12 models (one N each) measured at 8 checkpoints (D) x 3 bit
widths from Ouyang's Eq. 8 constants, with a per-model random intercept (sd 0.15 in log QiD), a
per-model random D slope (sd 0.03) and independent point noise (sd 0.05): the structure of real
suites, where a model's checkpoints and bit widths share its training run. ``qidlab fit``'s
default (resample whole models, BCa widened for G clusters) must give nominal 95% intervals that
cover the true alpha and beta (the parameters the between-model spread moves) in 90-98% of 200
trials; an independent-points bootstrap on the same data covers alpha far less often, which is
why clusters are the default. About 10 s on one core (199 replicates per trial).
"""

import numpy as np
import pandas as pd

from qidlab.laws import get_law
from qidlab.laws.fit import fit_law

TRUTH = dict(get_law("ouyang2024").default_constants())
MODELS = np.geomspace(1e7, 1e9, 12)
TOKENS = np.geomspace(1e9, 1e11, 8)
BITS = (2.0, 3.0, 4.0)


def study(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N, D, P = (a.ravel() for a in np.meshgrid(MODELS, TOKENS, BITS, indexing="ij"))
    model = np.repeat(np.arange(len(MODELS)), len(TOKENS) * len(BITS))
    u = rng.normal(0, 0.15, len(MODELS))[model]
    v = rng.normal(0, 0.03, len(MODELS))[model]
    logD = np.log(D)
    log_qid = (np.log(TRUTH["k"]) + TRUTH["beta"] * logD - TRUTH["alpha"] * np.log(N) - TRUTH["gamma"] * np.log(P)
               + u + v * (logD - logD.mean()) + rng.normal(0, 0.05, len(N)))
    return pd.DataFrame({"suite": "sim", "model": [f"m{i}" for i in model], "n_params": N, "tokens": D,
                         "bits": P, "qid": np.exp(log_qid)})


def coverage(trials: int, **options) -> tuple[dict[str, float], list[dict]]:
    hits = {k: 0 for k in TRUTH}
    infos = []
    for seed in range(trials):
        (fit,) = fit_law(study(seed), "ouyang2024", bootstrap=199, seed=seed, holdout=(), **options)
        infos.append(fit.bootstrap)
        for k, v in TRUTH.items():
            lo, hi = fit.ci95[k]
            hits[k] += lo <= v <= hi
    return {k: h / trials for k, h in hits.items()}, infos


def test_default_cluster_bootstrap_covers_95_percent_with_per_model_effects():
    cover, infos = coverage(200)
    assert {i["resample"] for i in infos} == {"suite+model"} and {i["interval"] for i in infos} == {"bca"}
    assert all(i["clusters"] == 12 and "warning" not in i for i in infos)
    for k in ("alpha", "beta"):
        assert 0.90 <= cover[k] <= 0.98, cover
    assert 0.90 <= np.mean(list(cover.values())) <= 0.98, cover


def test_points_bootstrap_undercovers_the_same_data():
    cover, infos = coverage(40, resample="points")
    assert {i["resample"] for i in infos} == {"points"}
    assert cover["alpha"] < 0.6, cover
