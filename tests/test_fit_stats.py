"""Fit statistics (issue 16): declared bounds honoured and flagged, clustered resampling by
default, noise-aware (CI-weighted) fits."""

import json

import numpy as np
import pandas as pd
import pytest

from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.laws import get_law
from qidlab.laws.fit import cluster_columns, fit_law
from qidlab.laws.simulate import design, simulate


def random_study(seed=0, n=120):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"n_params": rng.choice([1e6, 1e7, 1e8], n), "tokens": rng.choice([1e8, 1e9, 1e10], n),
                         "bits": rng.choice([2.0, 3.0, 4.0], n), "qid": np.exp(rng.normal(-3, 1, n))})


def _log_design(frame):
    return np.column_stack([np.ones(len(frame)), -np.log(frame.n_params), np.log(frame.tokens), -np.log(frame.bits)])


def test_exact_solve_keeps_exponents_inside_their_bounds_and_flags_them():
    frame = random_study(seed=3)
    free = np.linalg.lstsq(_log_design(frame), np.log(frame.qid), rcond=None)[0]
    assert (free[1:] < 0).any()  # the unconstrained optimum leaves the declared range
    (fit,) = fit_law(frame, "ouyang2024", holdout=())
    law = get_law("ouyang2024")
    for name, value in fit.params.items():
        lo, hi = law.param(name).bounds
        assert lo <= value <= hi
    negative = {law.param_names[i] for i in np.flatnonzero(free < 0) if i > 0}
    assert negative <= set(fit.at_bound) and all(fit.params[p] == 0.0 for p in negative)
    # the bounded optimum is no worse than the unconstrained solution clipped into the box
    clipped = np.clip(free, [-np.inf, 0, 0, 0], np.inf)
    resid = _log_design(frame) @ clipped - np.log(frame.qid)
    assert fit.metrics["objective"] <= float(np.sum(resid**2)) + 1e-9


def test_interior_fit_is_unchanged_and_unflagged():
    law = get_law("ouyang2024")
    frame = simulate(law, law.default_constants(), design(law), noise=0.01, seed=1)
    (fit,) = fit_law(frame, law, holdout=())
    free = np.linalg.lstsq(_log_design(frame), np.log(frame.qid), rcond=None)[0]
    assert fit.at_bound == [] and fit.params["alpha"] == pytest.approx(free[1], rel=1e-10)


def test_huber_fit_at_a_bound_is_flagged():
    law = get_law("chinchilla")
    truth = {"E": 1e-5, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # E below its bound 1e-3
    frame = simulate(law, truth, design(law), noise=0.0, seed=0)
    (fit,) = fit_law(frame, law, holdout=(), grid={"E": (-2.0,), "A": (6.0,), "B": (6.0,), "alpha": (0.3,),
                                                   "beta": (0.3,)})
    assert "E" in fit.at_bound and fit.params["E"] == pytest.approx(1e-3)
    assert fit.to_dict()["at_bound"] == fit.at_bound


def test_cli_flags_a_parameter_at_its_bound(tmp_path, capsys):
    path = tmp_path / "random.csv"
    random_study(seed=3).to_csv(path, index=False)
    assert main(["fit", str(path), "--law", "ouyang2024", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fits"][0]["at_bound"]
    assert main(["fit", str(path), "--law", "ouyang2024"]) == 0
    text = capsys.readouterr().out
    assert "AT ITS LOWER BOUND 0" in text


def models_frame(n_models=6, seed=0, run=None):
    law = get_law("ouyang2024")
    levels = {"n_params": tuple(np.geomspace(1e7, 1e9, n_models)), "tokens": (1e9, 1e10, 1e11), "bits": (2.0, 3.0)}
    frame = simulate(law, law.default_constants(), design(law, levels), noise=0.05, seed=seed)
    frame["suite"] = "s"
    frame["model"] = ["m%d" % i for i in np.unique(frame.n_params, return_inverse=True)[1]]
    if run is not None:
        frame["run"] = run
    return frame


def test_default_resamples_whole_models_and_warns_below_8():
    (fit,) = fit_law(models_frame(6), "ouyang2024", bootstrap=50, holdout=())
    info = fit.bootstrap
    assert info["resample"] == "suite+model" and info["clusters"] == 6 and info["interval"] == "bca"
    assert "only 6 clusters" in info["warning"]
    (fit,) = fit_law(models_frame(9), "ouyang2024", bootstrap=50, holdout=())
    assert fit.bootstrap["clusters"] == 9 and "warning" not in fit.bootstrap
    (pts,) = fit_law(models_frame(9), "ouyang2024", bootstrap=50, holdout=(), resample="points")
    assert pts.bootstrap["resample"] == "points" and pts.bootstrap["interval"] == "percentile"


def test_repeated_trainings_are_clusters_of_their_own():
    a, b = models_frame(4, seed=0, run="seed0"), models_frame(4, seed=1, run="seed1")
    frame = pd.concat([a, b], ignore_index=True)
    assert cluster_columns(frame) == ["suite", "model", "run"]
    (fit,) = fit_law(frame, "ouyang2024", bootstrap=40, holdout=())
    assert fit.bootstrap["clusters"] == 8 and fit.bootstrap["resample"] == "suite+model+run"
    runless = frame.assign(run=None)
    assert cluster_columns(runless) == ["suite", "model"]
    assert cluster_columns(frame.drop(columns=["suite", "model", "run"])) == ["n_params"]


def test_one_point_per_model_resamples_points():
    frame = models_frame(6)
    frame["model"] = [f"x{i}" for i in range(len(frame))]
    (fit,) = fit_law(frame, "ouyang2024", bootstrap=30, holdout=())
    assert fit.bootstrap["resample"] == "points" and "warning" not in fit.bootstrap


def test_two_models_fall_back_to_points_and_say_why():
    (fit,) = fit_law(models_frame(2), "ouyang2024", bootstrap=30, holdout=(), by=None)
    assert fit.bootstrap["resample"] == "points" and "only 2 clusters" in fit.bootstrap["warning"]


def test_cli_text_says_what_was_resampled(tmp_path, capsys):
    path = tmp_path / "m.csv"
    models_frame(6).to_csv(path, index=False)
    assert main(["fit", str(path), "--law", "ouyang2024", "--bootstrap", "40"]) == 0
    text = capsys.readouterr().out
    assert "resampling 6 clusters (suite+model) whole" in text and "warning: only 6 clusters" in text


# ---------------------------------------------------------------------------
# noise-aware fits


def noisy_frame(seed=0):
    frame = models_frame(6, seed=seed)
    rng = np.random.default_rng(seed)
    sd = rng.uniform(0.01, 0.3, len(frame)) * frame.qid
    frame["qid_ci_low"] = frame.qid - 1.96 * sd
    frame["qid_ci_high"] = frame.qid + 1.96 * sd
    return frame, sd


def test_ci_weights_are_delta_method_weighted_least_squares():
    frame, sd = noisy_frame()
    (fit,) = fit_law(frame, "ouyang2024", weights="ci", holdout=())
    w = 1.0 / (sd / frame.qid) ** 2
    A, y = _log_design(frame), np.log(frame.qid)
    sw = np.sqrt(w.to_numpy())
    theta = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)[0]
    assert fit.params["alpha"] == pytest.approx(theta[1], rel=1e-8)
    assert fit.params["gamma"] == pytest.approx(theta[3], rel=1e-8)
    assert fit.weights == "ci" and fit.to_dict()["weights"] == "ci"
    (plain,) = fit_law(frame, "ouyang2024", holdout=())
    assert plain.params["gamma"] != pytest.approx(fit.params["gamma"], rel=1e-6)
    (boot,) = fit_law(frame, "ouyang2024", weights="ci", bootstrap=30, holdout=())
    assert boot.ci95["gamma"][0] <= boot.params["gamma"] <= boot.ci95["gamma"][1]


def test_ci_weights_refuse_missing_or_empty_intervals():
    frame, _ = noisy_frame()
    with pytest.raises(QidlabError, match="qid_ci_low"):
        fit_law(frame.drop(columns=["qid_ci_low"]), "ouyang2024", weights="ci")
    frame.loc[3, "qid_ci_high"] = frame.loc[3, "qid_ci_low"]
    with pytest.raises(QidlabError, match="1 of .* points have no measured CI"):
        fit_law(frame, "ouyang2024", weights="ci")
    with pytest.raises(QidlabError, match="unknown weights"):
        fit_law(frame, "ouyang2024", weights="inverse")


def test_ci_weights_with_a_huber_law():
    law = get_law("chinchilla")
    frame = simulate(law, law.default_constants(), design(law), noise=0.01, seed=0)
    frame["loss16_ci_low"], frame["loss16_ci_high"] = frame.loss16 * 0.99, frame.loss16 * 1.01
    (fit,) = fit_law(frame, law, weights="ci", holdout=())  # equal weights: the unweighted optimum
    (plain,) = fit_law(frame, law, holdout=())
    assert fit.params["alpha"] == pytest.approx(plain.params["alpha"], rel=1e-4)


def test_report_marks_a_parameter_at_its_bound_and_says_what_was_resampled():
    from qidlab.show.fits import LawFit
    from qidlab.show.report import _param_lines

    frame = random_study(seed=3)
    frame["suite"], frame["model"] = "s", [f"m{i % 5}" for i in range(len(frame))]
    results = fit_law(frame, "ouyang2024", bootstrap=20, holdout=())
    fit = LawFit(law=get_law("ouyang2024"), by=(), data=frame, held={}, results=results, document={})
    html = _param_lines(fit)
    flagged = [line for line in html.split("<br>") if "AT A DECLARED BOUND" in line]
    assert flagged and {line.split(" ")[0] for line in flagged} == set(results[0].at_bound)
    assert "resampling 5 clusters (suite+model) whole" in html and "warning: only 5 clusters" in html


def test_cli_without_bootstrap_says_what_it_would_resample(tmp_path, capsys):
    path = tmp_path / "m.csv"
    models_frame(6).to_csv(path, index=False)
    assert main(["fit", str(path), "--law", "ouyang2024"]) == 0
    assert "--bootstrap B adds them, resampling whole models (suite+model: 6 of them" in capsys.readouterr().out
