"""Inversion and the analyses: solve, D_crit, optimal formats, training level, min bits, projection."""

import math

import numpy as np
import pytest
from conftest import truth_for

from qidlab.errors import QidlabError
from qidlab.laws import get_law, list_laws
from qidlab.laws.analysis import critical_tokens, min_bits, optimal_format, projection, training_level
from qidlab.laws.solve import evaluate, solve

POINT = {"n_params": 3e8, "tokens": 2e11, "bits": 4.0, "a_bits": 8.0, "kv_bits": 8.0, "group_size": 128.0,
         "exp_bits": 4.0, "man_bits": 3.0, "block_size": 128.0, "eff": 0.8}


@pytest.mark.parametrize("name", [law.name for law in list_laws()])
def test_solve_inverts_predict_for_every_variable(name):
    law = get_law(name)
    params = truth_for(law)
    values = {v: POINT[v] for v in law.variable_names}
    y = evaluate(law, params, values)[0]
    for var in law.variable_names:
        known = {k: v for k, v in values.items() if k != var}
        x = solve(law, params, known, y, var)
        assert evaluate(law, params, {**known, var: x})[0] == pytest.approx(y, rel=1e-9), var


def test_unreachable_target_is_a_clear_error():
    law = get_law("ouyang2024")
    with pytest.raises(QidlabError, match="cannot reach qid = 1e\\+06 by varying tokens"):
        solve(law, law.default_constants(), {"n_params": 7e9, "bits": 4}, 1e6, "tokens")


@pytest.mark.parametrize("fmt,expected_T", [((8, 7), 1730), ((4, 3), 27), ((2, 1), 0.4)])
def test_sun_critical_tokens_match_the_paper(fmt, expected_T):
    params = get_law("sun2025").default_constants()
    d = critical_tokens("sun2025", params, dict(n_params=1e9, exp_bits=fmt[0], man_bits=fmt[1], block_size=128))
    assert d / 1e12 == pytest.approx(expected_T, rel=0.02)


def _numeric_minimum(loss, lo=1e6, hi=1e22):
    """argmin over log D of a 1-D loss, by golden-section on a fine grid's best cell."""
    from scipy.optimize import minimize_scalar

    grid = np.linspace(math.log(lo), math.log(hi), 2001)
    values = [loss(math.exp(u)) for u in grid]
    i = int(np.argmin(values))
    res = minimize_scalar(lambda u: loss(math.exp(u)), bounds=(grid[i - 1], grid[i + 1]), method="bounded",
                          options={"xatol": 1e-10})
    return math.exp(res.x)


def test_sun_critical_tokens_minimise_the_law():
    law = get_law("sun2025")
    p = law.default_constants()
    v = dict(n_params=1e9, exp_bits=4.0, man_bits=3.0, block_size=128.0)
    d = critical_tokens("sun2025", p, v)
    assert _numeric_minimum(lambda t: evaluate(law, p, {**v, "tokens": t})[0]) == pytest.approx(d, rel=1e-4)


def test_kumar_critical_tokens_minimise_loss_plus_ptq_degradation():
    ptq, qat = get_law("kumar2024-ptq"), get_law("kumar2024-qat")
    p, q = ptq.default_constants(), qat.default_constants()
    v = dict(n_params=1e9, bits=4.0)
    d = critical_tokens("kumar2024-ptq", {}, v)

    def loss(t):  # the D-dependent part: B*D^-beta + delta_PTQ
        return q["B"] * t ** -q["beta"] + evaluate(ptq, p, {**v, "tokens": t})[0]

    assert _numeric_minimum(loss) == pytest.approx(d, rel=1e-4)
    assert critical_tokens("kumar2024-ptq", {}, dict(n_params=1e9, bits=8.0)) > d  # more bits, later D_crit


def test_critical_tokens_errors():
    with pytest.raises(QidlabError, match="not 'ouyang2024'"):
        critical_tokens("ouyang2024", {}, {})
    with pytest.raises(QidlabError, match="need block_size"):
        critical_tokens("sun2025", get_law("sun2025").default_constants(), dict(n_params=1e9, exp_bits=4, man_bits=3))


@pytest.mark.parametrize("bits,fmt", [(4, "E2M1"), (8, "E4M3"), (16, "E8M7")])
def test_sun_optimal_formats(bits, fmt):
    out = optimal_format(get_law("sun2025").default_constants(), bits)
    assert out["format"] == fmt
    assert out["exp_bits"] + out["man_bits"] + 1 == bits


def test_optimal_format_is_the_best_of_all_splits():
    law = get_law("sun2025")
    p = law.default_constants()
    for bits in range(3, 17):
        best = optimal_format(p, bits)
        losses = {m: evaluate(law, p, dict(n_params=1e9, tokens=1e11, exp_bits=bits - 1 - m, man_bits=m,
                                           block_size=128))[0] for m in range(0, bits - 1)}
        assert best["man_bits"] == min(losses, key=losses.get)


def test_training_level_is_the_inverse_of_the_law():
    law = get_law("ouyang2024")
    p = law.default_constants()
    qid = evaluate(law, p, dict(n_params=7e9, tokens=2e12, bits=3))[0]
    out = training_level(law, p, 7e9, 3, qid)
    assert out["tokens"] == pytest.approx(2e12, rel=1e-9)
    assert out["tokens_per_param"] == pytest.approx(2e12 / 7e9, rel=1e-9)
    assert out["chinchilla_multiple"] == pytest.approx(2e12 / 7e9 / 20, rel=1e-9)


def test_min_bits_is_the_smallest_width_within_budget():
    law = get_law("ouyang2024")
    p = law.default_constants()
    known = dict(n_params=7e9, tokens=15e12)
    out = min_bits(law, p, known, 0.1)
    b = out["bits"]
    assert evaluate(law, p, {**known, "bits": b})[0] <= 0.1 < evaluate(law, p, {**known, "bits": b - 1})[0]
    assert b - 1 < out["bits_exact"] <= b
    with pytest.raises(QidlabError, match="no bit width up to 16"):
        min_bits(law, p, known, 1e-12)


def test_projection_flags_worse_than_random():
    law = get_law("ouyang2024")
    curves, crossings = projection(law, law.default_constants(), [7e9], [2, 4], points=11)
    assert len(curves) == 22 and curves.tokens.max() == pytest.approx(1e14)
    assert (curves.loss == curves.loss16 + curves.qid).all()
    level = math.log(50277)
    assert (curves.worse_than_random == (curves.loss > level)).all()
    two, four = crossings.set_index("bits").tokens_worse_than_random.loc[[2, 4]]
    assert 1e9 < two < 1e14 and (four is None or np.isnan(four))
    kaplan = get_law("kaplan")
    at = evaluate(kaplan, kaplan.default_constants(), {"n_params": 7e9, "tokens": two})[0]
    assert at + evaluate(law, law.default_constants(), {"n_params": 7e9, "tokens": two, "bits": 2})[0] \
        == pytest.approx(level, rel=1e-9)
