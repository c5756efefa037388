import numpy as np
import pytest

import qidlab.data
from qidlab.laws import get_law

#: Truth for laws whose paper prints no coefficient (Ouyang's single-factor forms).
TRUTH = {
    "ouyang2024-tokens": {"b": 1e-6, "beta": 0.53},
    "ouyang2024-size": {"a": 50.0, "alpha": 0.23},
    "ouyang2024-bits": {"c": 30.0, "gamma": 5.5},
    # qidlab's own variant (not published): no constants to take
    "qidlab-interaction": {"k": 0.02, "alpha": 0.25, "beta": 0.3, "gamma": -3.0, "eta": 0.25},
}

#: Small study designs so that every law's fit stays fast in CI.
SMALL_LEVELS = {
    "n_params": tuple(np.geomspace(1e7, 1e10, 4)),
    "tokens": tuple(np.geomspace(1e9, 1e12, 5)),
    "exp_bits": (1.0, 2.0, 4.0),
    "man_bits": (1.0, 3.0, 7.0),
    "block_size": (32.0, 1024.0),
    "bits": (2.0, 3.0, 4.0),
    "a_bits": (4.0, 16.0),
    "kv_bits": (4.0, 16.0),
}


@pytest.fixture
def one_thread():
    """torch on one thread, seeded 0, for one test (GPTQ's rounding follows the summation order)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def truth_for(law):
    law = get_law(law)
    return TRUTH.get(law.name) or law.default_constants()


@pytest.fixture(scope="session")
def table1():
    return qidlab.data.load("ouyang2024-table1")


@pytest.fixture(scope="session")
def epoch():
    return qidlab.data.load("chinchilla-epoch")
