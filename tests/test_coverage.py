"""Bootstrap intervals cover the truth: for every law, data simulated from known parameters
with noise is fitted back over many seeds, and the 95% intervals must contain the true values
in most trials (nominal 95%; we require 80% over all parameters and seeds, and at least 60% for
each parameter)."""

import numpy as np
import pytest
from conftest import SMALL_LEVELS, truth_for

from qidlab.laws import list_laws
from qidlab.laws.fit import fit_law
from qidlab.laws.simulate import design, simulate

SEEDS = 12
NOISE = 0.02  # 2% multiplicative noise, in log space
#: Fewer points for the laws with many parameters, so the test stays quick.
LEVELS = {
    "sun2025": {**SMALL_LEVELS, "n_params": (1e7, 1e8, 1e9), "tokens": (1e9, 1e10, 1e11, 1e12)},
    # low activation/KV precisions, so that gamma_a and gamma_kv leave a visible mark on the loss
    "kumar2024-qat": {**SMALL_LEVELS, "n_params": (1e7, 1e8, 1e9), "tokens": (1e9, 1e10, 1e11, 1e12),
                      "a_bits": (2.0, 16.0), "kv_bits": (2.0, 16.0)},
}


def coverage(name: str, seeds: int = SEEDS, replicates: int = 100) -> dict[str, float]:
    truth = truth_for(name)
    frame = design(name, LEVELS.get(name, SMALL_LEVELS))
    hits = {k: 0 for k in truth}
    for seed in range(seeds):
        data = simulate(name, truth, frame, noise=NOISE, seed=seed)
        (fit,) = fit_law(data, name, bootstrap=replicates, seed=1000 + seed, resample="points", holdout=())
        for k, v in truth.items():
            lo, hi = fit.ci95[k]
            hits[k] += lo <= v <= hi
    return {k: h / seeds for k, h in hits.items()}


@pytest.mark.parametrize("name", [law.name for law in list_laws()])
def test_bootstrap_intervals_cover_the_truth(name):
    cover = coverage(name)
    assert np.mean(list(cover.values())) >= 0.8, cover
    assert min(cover.values()) >= 0.6, cover
