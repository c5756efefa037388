"""Synthetic measurements from a law with known parameters: the test that a fitter works,
and a way to ask how many measurements a study needs."""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

from .registry import get_law

#: A study design per canonical variable: the values a simulated study sweeps.
DEFAULT_LEVELS: dict[str, Sequence[float]] = {
    "n_params": tuple(np.geomspace(1e7, 1e10, 5)),
    "tokens": tuple(np.geomspace(1e9, 1e12, 6)),
    "bits": (2.0, 3.0, 4.0),
    "a_bits": (4.0, 8.0, 16.0),
    "kv_bits": (4.0, 8.0, 16.0),
    "group_size": (32.0, 64.0, 128.0, 256.0),
    "exp_bits": (1.0, 2.0, 4.0, 5.0),
    "man_bits": (1.0, 2.0, 3.0, 7.0),
    "block_size": (32.0, 128.0, 1024.0),
    "eff": (0.5, 0.75, 1.0),
}


def design(law, levels: Mapping[str, Sequence[float]] | None = None):
    """The full factorial design over the law's variables (DataFrame of canonical columns)."""
    import pandas as pd

    law = get_law(law)
    levels = {**DEFAULT_LEVELS, **(levels or {})}
    names = list(law.variable_names)
    rows = list(itertools.product(*(levels[n] for n in names)))
    return pd.DataFrame(rows, columns=names)


def simulate(law, params: Mapping[str, float], frame, *, noise: float = 0.0, seed: int = 0):
    """``frame`` with the law's target column added: the law's prediction times
    exp(noise * standard normal) (multiplicative noise, sigma ``noise`` in log space)."""
    law = get_law(law)
    X = {v.name: frame[v.name].to_numpy(dtype=float) for v in law.variables}
    y = law.predict(params, X)
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out[law.targets[0]] = y * np.exp(noise * rng.standard_normal(len(y)))
    return out
