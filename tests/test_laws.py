"""Conformance of every registered law: structure, gradients, published constants, recovery."""

import numpy as np
import pytest
from conftest import SMALL_LEVELS, truth_for

from qidlab.errors import QidlabError
from qidlab.laws import Param, define_law, get_law, list_laws
from qidlab.laws.fit import fit_law
from qidlab.laws.simulate import design, simulate
from qidlab.laws.spec import Law

LAWS = [law.name for law in list_laws()]
REQUIRED = {"ouyang2024", "ouyang2024-tokens", "ouyang2024-size", "ouyang2024-bits", "kaplan", "kumar2024-ptq",
            "kumar2024-qat", "chen2025", "sun2025", "frantar2025", "chinchilla"}


def test_every_required_law_is_registered():
    assert REQUIRED <= set(LAWS)


@pytest.mark.parametrize("name", LAWS)
def test_law_is_documented(name):
    law = get_law(name)
    assert law.formula and law.citation and law.quantity in ("qid", "loss")
    if law.citation.startswith("qidlab's own variant"):
        assert not law.published, "qidlab's own variants are not published laws"
    else:
        assert law.published, "every built-in law carries its published constants"
    for key, pub in law.published.items():
        assert pub.source
        assert set(pub.values) <= set(law.param_names), key
    for p in law.params:
        lo, hi = p.bounds
        assert lo < hi
        assert lo <= p.start <= hi


@pytest.mark.parametrize("name", LAWS)
def test_gradient_matches_finite_differences(name):
    law = get_law(name)
    X = {k: v.to_numpy(dtype=float) for k, v in design(law, SMALL_LEVELS).items()}
    theta = law.to_fit(truth_for(law))
    value, grad = law.log_predict_grad(theta[None], X)
    for i in range(len(theta)):
        h = 1e-6 * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        numeric = (law.log_predict(up[None], X) - law.log_predict(down[None], X)) / (2 * h)
        np.testing.assert_allclose(grad[0, :, i], numeric[0], rtol=1e-5, atol=1e-7)
    # the generic complex-step gradient agrees with any analytic one
    np.testing.assert_allclose(Law.log_predict_grad(law, theta[None], X)[1], grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", LAWS)
def test_noise_free_data_is_fitted_back_exactly(name):
    law = get_law(name)
    truth = truth_for(law)
    frame = simulate(law, truth, design(law, SMALL_LEVELS))
    (fit,) = fit_law(frame, law, holdout=())
    for k, v in truth.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-4), k


def test_published_unified_law_values():
    law = get_law("ouyang2024")
    X = {"n_params": np.array([7e9]), "tokens": np.array([1e12]), "bits": np.array([4.0])}
    expected = 0.017 * 1e12**0.5251 / (7e9**0.2261 * 4**5.4967)
    assert law.predict(law.default_constants(), X)[0] == pytest.approx(expected, rel=1e-12)


def test_kaplan_matches_ouyang_fig7():
    law = get_law("kaplan")
    n, d = 1e9, 3e11
    expected = ((4.74e19 / n) ** (0.045 / 0.399) + 7.63e10 / d) ** 0.399
    X = {"n_params": np.array([n]), "tokens": np.array([d])}
    assert law.predict(law.default_constants(), X)[0] == pytest.approx(expected, rel=1e-12)


def test_unknown_law_suggests_close_names():
    with pytest.raises(QidlabError, match="did you mean ouyang2024"):
        get_law("ouyang2042")


def test_user_defined_law_fits_like_a_builtin():
    def exp_law(X, a, b):
        return a * np.exp(-X["bits"] / b) * X["tokens"] ** 0.5

    law = define_law("user-exp", exp_law, [Param("a", (1e-12, 1e6), "log", start=1e-3), Param("b", (0.1, 10.0), start=1.0)],
                     ["bits", "tokens"], quantity="qid", register=False)
    frame = design(law, {"bits": (2.0, 3.0, 4.0, 6.0, 8.0)})
    frame = simulate(law, {"a": 2e-4, "b": 1.3}, frame)
    (fit,) = fit_law(frame, law, holdout=())
    assert fit.method == "huber"
    assert fit.params["a"] == pytest.approx(2e-4, rel=1e-5)
    assert fit.params["b"] == pytest.approx(1.3, rel=1e-5)
