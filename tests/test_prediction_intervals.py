"""Prediction intervals and extrapolation warnings (issue 16, item 6): a fit file carries its
fitted ranges and its bootstrap replicates; predict, solve, min-bits, training-level, table1 and
project give a 95% percentile interval over the replicates' predictions and flag N or D more
than 2x outside the fitted range and bits outside the fitted bit widths. Published constants
have no interval; fit files without ranges warn that the range is unknown.

The expected intervals are recomputed here from the replicates in the fit file with the closed
form of Ouyang's law (QiD = k D^beta / (N^alpha P^gamma)), independently of qidlab's solver."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SMALL_LEVELS, truth_for

from qidlab.cli import main
from qidlab.laws import get_law, list_laws
from qidlab.laws.analysis import LLAMA3_VOCAB
from qidlab.laws.simulate import DEFAULT_LEVELS, design, simulate
from qidlab.laws.solve import evaluate, solve
from qidlab.laws.uncertainty import Source, solve_many

TRUE = {"k": 0.03, "alpha": 0.31, "beta": 0.47, "gamma": 4.2}
SIZES = (1e7, 3e7, 1e8, 3e8)
TOKENS = (1e9, 3e9, 1e10, 3e10)
B = 40


def run_json(capsys, *argv):
    capsys.readouterr()
    rc = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def run_text(capsys, *argv):
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    frame = design("ouyang2024", {"n_params": SIZES, "tokens": TOKENS, "bits": (2.0, 3.0, 4.0)})
    path = tmp_path_factory.mktemp("pi") / "qid.csv"
    simulate("ouyang2024", TRUE, frame, noise=0.05, seed=7).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fit_file(data_csv):
    path = data_csv.parent / "fit.json"
    # points resampled: plain percentile intervals (the clustered default is tested on its own below)
    assert main(["fit", str(data_csv), "--law", "ouyang2024", "--bootstrap", str(B), "--holdout", "",
                 "--resample", "points", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def replicates(fit_file):
    """(B, 4) natural k, alpha, beta, gamma of the fit file's replicates."""
    boot = json.loads(fit_file.read_text())["fits"][0]["bootstrap"]["params"]
    return np.array([boot[p] for p in ("k", "alpha", "beta", "gamma")]).T


def _percentile(values):
    return np.percentile(values, [2.5, 97.5])


def test_fit_file_carries_ranges_and_replicates(fit_file):
    fit = json.loads(fit_file.read_text())["fits"][0]
    assert fit["ranges"] == {"n_params": [1e7, 3e8], "tokens": [1e9, 3e10], "bits": [2.0, 4.0]}
    reps = fit["bootstrap"]["params"]
    assert set(reps) == {"k", "alpha", "beta", "gamma"}
    assert all(len(v) == B - fit["bootstrap"]["failed"] for v in reps.values())
    # the parameter CIs are the percentiles of these very replicates (in fit space: log k)
    law = get_law("ouyang2024")
    for name, ci in fit["ci95"].items():
        param = law.param(name)
        ends = [param.to_natural(t) for t in _percentile([param.to_fit(v) for v in reps[name]])]
        assert sorted(ends) == pytest.approx(ci, rel=1e-9)


def test_predict_interval_is_the_percentile_of_the_replicates(capsys, fit_file, replicates):
    n, d, p = 1e8, 1e10, 3.0
    doc = run_json(capsys, "predict", "--law", "ouyang2024", "--fit", str(fit_file),
                   "--set", f"n_params={n}", f"tokens={d}", f"bits={p}")
    k, a, b, g = replicates.T
    expected = _percentile(k * d**b / (n**a * p**g))
    assert doc["interval"] == pytest.approx(list(expected), rel=1e-9)
    assert doc["interval"][0] < doc["qid"] < doc["interval"][1]
    assert doc["extrapolation"] == [] and doc["warnings"] == []
    lo, hi = doc["loss_interval"]
    assert lo == pytest.approx(doc["loss16"] + doc["interval"][0]) and hi == pytest.approx(doc["loss16"] + doc["interval"][1])


@pytest.mark.parametrize("sets, flagged", [
    (("n_params=5e8", "tokens=5e10", "bits=2"), []),  # within 2x of the largest N and D
    (("n_params=7B", "tokens=1e10", "bits=3"), ["n_params"]),
    (("n_params=1e8", "tokens=1e8", "bits=3"), ["tokens"]),  # 10x below the smallest D
    (("n_params=1e8", "tokens=1e10", "bits=1"), ["bits"]),  # bits outside 2-4, however close
    (("n_params=1e12", "tokens=1e14", "bits=8"), ["n_params", "tokens", "bits"]),
])
def test_extrapolation_lists_each_variable_out_of_range(capsys, fit_file, sets, flagged):
    doc = run_json(capsys, "predict", "--law", "ouyang2024", "--fit", str(fit_file), "--set", *sets)
    assert [e["variable"] for e in doc["extrapolation"]] == flagged
    ranges = {"n_params": [1e7, 3e8], "tokens": [1e9, 3e10], "bits": [2.0, 4.0]}
    for e in doc["extrapolation"]:
        assert e["fitted_range"] == ranges[e["variable"]]
        assert e["value"] == doc["inputs"][e["variable"]]
    assert len(doc["warnings"]) == (1 if flagged else 0)
    text = run_text(capsys, "predict", "--law", "ouyang2024", "--fit", str(fit_file), "--set", *sets)
    assert ("warning: extrapolating" in text) == bool(flagged)
    assert "95% interval [" in text


def test_published_constants_have_no_interval(capsys):
    doc = run_json(capsys, "predict", "--law", "ouyang2024", "--set", "n_params=7B", "tokens=1T", "bits=2")
    assert doc["interval"] is None
    assert doc["interval_note"] == "no interval (published constants)"
    assert doc["extrapolation"] is None
    text = run_text(capsys, "predict", "--law", "ouyang2024", "--set", "n_params=7B", "tokens=1T", "bits=2")
    assert "no interval (published constants)" in text


def test_old_fit_file_warns_that_the_range_is_unknown(capsys, fit_file, tmp_path):
    doc = json.loads(fit_file.read_text())
    del doc["fits"][0]["ranges"], doc["fits"][0]["bootstrap"]["params"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    out = run_json(capsys, "predict", "--law", "ouyang2024", "--fit", str(old), "--set", "n_params=7B",
                   "tokens=1e10", "bits=3")
    assert out["interval"] is None and "--bootstrap" in out["interval_note"]
    assert out["extrapolation"] is None
    assert len(out["warnings"]) == 1 and "fitted range unknown" in out["warnings"][0]


def test_solve_and_training_level_intervals_match_the_closed_form(capsys, fit_file, replicates):
    n, p, q = 1e8, 3.0, 0.05
    k, a, b, g = replicates.T
    expected = _percentile((q * n**a * p**g / k) ** (1 / b))
    solved = run_json(capsys, "solve", "--law", "ouyang2024", "--fit", str(fit_file), "--set", f"n_params={n}",
                      f"bits={p}", "--for", "tokens", "--target", f"qid={q}")
    assert solved["interval"] == pytest.approx(list(expected), rel=1e-6)
    level = run_json(capsys, "training-level", "--law", "ouyang2024", "--fit", str(fit_file), "--set",
                     f"n_params={n}", f"bits={p}", "--qid", str(q))
    assert level["interval"] == pytest.approx(list(expected), rel=1e-6)
    assert level["tokens"] == pytest.approx(solved["tokens"], rel=1e-9)
    inside = 1e9 / 2 <= solved["tokens"] <= 3e10 * 2
    assert (solved["extrapolation"] == []) == inside


def test_min_bits_interval_is_whole_bit_widths(capsys, fit_file, replicates):
    n, d, budget = 1e8, 1e10, 0.02
    doc = run_json(capsys, "min-bits", "--law", "ouyang2024", "--fit", str(fit_file), "--set", f"n_params={n}",
                   f"tokens={d}", "--budget", str(budget))
    k, a, b, g = replicates.T
    per_rep = [next(bits for bits in range(1, 17) if ki * d**bi / (n**ai * bits**gi) <= budget)
               for ki, ai, bi, gi in replicates]
    assert doc["interval"] == [float(np.floor(_percentile(per_rep)[0])), float(np.ceil(_percentile(per_rep)[1]))]
    assert doc["interval"][0] <= doc["bits"] <= doc["interval"][1]


def test_table1_rows_carry_intervals_and_a_grid_warning(capsys, fit_file, replicates):
    doc = run_json(capsys, "table1", "--law", "ouyang2024", "--fit", str(fit_file), "--sizes", "1e8,7B",
                   "--bits", "2,3", "--qid", "0.05,0.2")
    k, a, b, g = replicates.T
    for row in doc["rows"]:
        n, p, q = row["n_params"], row["bits"], row["qid"]
        assert row["interval"] == pytest.approx(list(_percentile((q * n**a * p**g / k) ** (1 / b))), rel=1e-6)
        assert ("n_params" in [e["variable"] for e in row["extrapolation"]]) == (n == 7e9)
    (warning,) = doc["warnings"]
    flagged = sum(bool(r["extrapolation"]) for r in doc["rows"])
    assert warning.startswith(f"warning: extrapolating in {flagged} of 8 cells")


def test_table1_per_bit_fit_uses_each_groups_replicates(capsys, data_csv, tmp_path):
    path = tmp_path / "by_bits.json"
    assert main(["fit", str(data_csv), "--law", "ouyang2024", "--by", "bits", "--bootstrap", "30", "--holdout", "", "--resample", "points",
                 "--out", str(path)]) == 0
    fits = {f["group"]["bits"]: f for f in json.loads(path.read_text())["fits"]}
    doc = run_json(capsys, "table1", "--law", "ouyang2024", "--fit", str(path), "--sizes", "1e8", "--bits", "2,4",
                   "--qid", "0.1")
    for row in doc["rows"]:
        fit = fits[row["bits"]]
        assert fit["ranges"]["bits"] == [row["bits"], row["bits"]]
        reps = fit["bootstrap"]["params"]
        k, a, b = (np.array(reps[x]) for x in ("k", "alpha", "beta"))  # gamma folded into k
        expected = _percentile((0.1 * 1e8**a / k) ** (1 / b))
        assert row["interval"] == pytest.approx(list(expected), rel=1e-6)
        # each bit width is its group's own fitted bit width: never flagged
        assert "bits" not in [e["variable"] for e in row["extrapolation"]]


def test_project_bands_crossings_and_vocabulary_flag(capsys, fit_file, replicates):
    argv = ["project", "--law", "ouyang2024", "--fit", str(fit_file), "--sizes", "1e8", "--bits", "2",
            "--max-tokens", "1e14", "--points", "5"]
    doc = run_json(capsys, *argv)
    last = doc["curves"][-1]
    k, a, b, g = replicates.T
    expected = _percentile(k * last["tokens"] ** b / (1e8**a * 2.0**g))
    assert [last["qid_lo"], last["qid_hi"]] == pytest.approx(list(expected), rel=1e-9)
    assert [c["extrapolated"] for c in doc["curves"]] == [t > 2 * 3e10 for t in (c["tokens"] for c in doc["curves"])]
    (cross,) = doc["crossings"]
    assert cross["tokens_worse_than_random"] is not None
    lo, hi = cross["interval"]
    assert lo < cross["tokens_worse_than_random"] < hi
    assert doc["random_level_note"] and "Llama-3" in doc["random_level_note"]
    assert any("Llama-3" in w for w in doc["warnings"])
    same_unit = run_json(capsys, *argv, "--vocab-size", str(LLAMA3_VOCAB))
    assert same_unit["random_level_note"] is None
    assert not any("Llama-3" in w for w in same_unit["warnings"])


def test_project_with_published_constants_says_no_interval(capsys):
    doc = run_json(capsys, "project", "--law", "ouyang2024", "--sizes", "7B", "--bits", "2", "--points", "3")
    assert all(c["qid_lo"] is None for c in doc["curves"])  # NaN in JSON: no band
    assert doc["crossings"][0]["interval"] is None
    assert doc["crossings"][0]["interval_note"] == "no interval (published constants)"


@pytest.mark.parametrize("name", [law.name for law in list_laws() if "tokens" in law.variable_names])
def test_vectorised_solve_agrees_with_solve_for_every_law(name):
    """``solve_many`` (every replicate at once, interpolated between grid points) finds the same
    root as ``solve`` (Brent's method) for each law, with a replicate equal to the truth."""
    law = get_law(name)
    truth = truth_for(law)
    levels = {**DEFAULT_LEVELS, **SMALL_LEVELS}
    known = {v.name: float(levels[v.name][len(levels[v.name]) // 2]) for v in law.variables if v.name != "tokens"}
    target = float(evaluate(law, truth, {**known, "tokens": 3e10})[0])
    src = Source(law, truth, "test", np.stack([law.to_fit(truth)] * 2), None, published=False)
    exact = solve(law, truth, known, target, "tokens")
    assert solve_many(src, known, target, "tokens") == pytest.approx([exact, exact], rel=1e-3)


# ---------------------------------------------------------------------------
# Fig. 1 (qidlab.show): the same intervals and extrapolation marks


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    import show_fixtures as sf

    root = tmp_path_factory.mktemp("fig1")
    return sf.write_store(root / "study.db", sf.write_suite(root, twins=False, weights=False))


def _fig1(db, sizes):
    from qidlab.show.figures import make_figure
    from qidlab.show.fitted import projection_data
    from qidlab.show.study import ShowOptions, load_study

    study = load_study(db, options=ShowOptions(bootstrap=20, sizes=sizes, dpi=40))
    return make_figure("fig1", study), projection_data(study)


def test_fig1_draws_the_bands_and_dashes_what_extrapolates(synthetic_store):
    import matplotlib.colors

    fig, data = _fig1(synthetic_store, (3e8, 7e9))  # fitted N: 10M to 1B
    inside, outside = fig.axes[:2]
    assert "extrapolated" not in inside.get_title() and "extrapolated: fitted N 10M–1B" in outside.get_title()
    curves = data["curves"]
    for ax, n in ((inside, 3e8), (outside, 7e9)):
        rows = curves[curves.n_params == n]
        for b in data["bits"]:
            expected = rows[rows.bits == b]
            colour = matplotlib.colors.to_rgb([line.get_color() for line in ax.get_lines()
                                               if line.get_label() == f"{b:g}-bit" or
                                               line.get_label() == f"{b:g}-bit (extrapolated)"][0])
            mine = [line for line in ax.get_lines() if matplotlib.colors.to_rgb(line.get_color()) == colour]
            dashed = [line for line in mine if line.get_linestyle() == "--"]
            solid = [line for line in mine if line.get_linestyle() == "-"]
            assert len(dashed) == 1  # the projection runs to 100T, beyond 2x the largest D fitted
            assert len(solid) == (1 if n == 3e8 else 0)
            # the band: between the 2.5th and 97.5th percentile over the replicates at every D
            bands = [c for c in ax.collections if np.allclose(c.get_facecolor()[0][:3], colour)]
            assert len(bands) == 1
            ys = bands[0].get_paths()[0].vertices[:, 1]
            assert ys.min() == pytest.approx(expected.qid_lo.min(), rel=1e-9)
            assert ys.max() == pytest.approx(expected.qid_hi.max(), rel=1e-9)
            assert (expected.qid_lo < expected.qid).all() and (expected.qid < expected.qid_hi).all()
    assert "Llama-3" in fig._suptitle.get_text()  # the synthetic vocabulary has 4096 tokens


def test_a_cluster_bootstrap_widens_the_prediction_interval_as_the_fit_widened_its_cis(capsys, data_csv):
    """The default fit resamples whole sizes (few clusters): its parameter CIs are expanded by
    ``bootstrap.expansion``, and so is a prediction's interval, around the replicates' median
    in log space."""
    path = data_csv.parent / "fit-clusters.json"
    assert main(["fit", str(data_csv), "--law", "ouyang2024", "--bootstrap", str(B), "--holdout", "",
                 "--out", str(path)]) == 0
    fit = json.loads(path.read_text())["fits"][0]
    e = fit["bootstrap"]["expansion"]
    assert e > 1.0
    boot = fit["bootstrap"]["params"]
    k, a, b, g = (np.array(boot[p]) for p in ("k", "alpha", "beta", "gamma"))
    n, d, p = 1e8, 1e10, 3.0
    reps = k * d**b / (n**a * p**g)
    lo, hi = np.log(_percentile(reps))
    mid = np.log(np.median(reps))
    doc = run_json(capsys, "predict", "--law", "ouyang2024", "--fit", str(path),
                   "--set", f"n_params={n}", f"tokens={d}", f"bits={p}")
    assert doc["interval"] == pytest.approx([np.exp(mid + e * (lo - mid)), np.exp(mid + e * (hi - mid))], rel=1e-9)
    assert "widened" in doc["interval_note"]
