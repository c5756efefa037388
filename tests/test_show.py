"""The show stage: studies read from a store, the laws fitted to them, every figure, the trainer's
files, and `qidlab plot`. Synthetic studies (tests/show_fixtures.py: QiD from a known Ouyang law,
loss16 from Kaplan's form) keep it fast and make the fitted values checkable."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import show_fixtures as sf
from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.laws.solve import law_params
from qidlab.show.figures import FIGURES, make_figure
from qidlab.show.fits import applicable_laws
from qidlab.show.study import ShowOptions, Study, load_study
from qidlab.show.style import FigureUnavailable
from qidlab.show.suitefiles import read_train_log, read_weight_dynamics, twins
from qidlab.store import Store

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("show")
    suite = sf.write_suite(root)
    return sf.write_store(root / "study.db", suite), suite


@pytest.fixture(scope="module")
def study(study_files):
    return load_study(study_files[0], options=ShowOptions(bootstrap=30))


@pytest.fixture(scope="module")
def bare_study(tmp_path_factory):
    """One eval set, one method, no suite folder: what Fig. 8, 9, 12 and 14 need is missing."""
    db = sf.write_store(tmp_path_factory.mktemp("bare") / "bare.db", None, eval_sets=("web",), methods=("gptq",))
    return load_study(db, options=ShowOptions(bootstrap=0))


def test_importing_the_stage_loads_no_matplotlib():
    code = "import sys, qidlab.show; print(sorted(m for m in ('matplotlib', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------
# the study


def test_a_store_becomes_a_study(study, study_files):
    db, suite = study_files
    assert (study.eval_set, study.method) == ("web", "gptq")  # equal counts: the first by name
    assert len(study.frame) == 4 * 5 * 3 * 2 * 2 and len(study.primary) == 60
    assert study.suite_dirs == (suite,)
    assert study.vocab_size() == (sf.VOCAB, "the checkpoints' config.json")
    assert study.store_info["runs"].code_revision.tolist() == ["abc1234"]
    assert len(study.loss16_points()) == 20  # one per checkpoint


def test_relative_checkpoint_paths_are_found_from_the_store_folder(tmp_path, monkeypatch):
    suite = sf.write_suite(tmp_path / "study", twins=False, weights=False)
    monkeypatch.chdir(tmp_path / "study")  # a sweep run from the study's folder stores relative paths
    db = sf.write_store(tmp_path / "study" / "rel.db", Path(suite.name), eval_sets=("web",), methods=("gptq",))
    monkeypatch.chdir(tmp_path)
    study = load_study(db, options=ShowOptions(bootstrap=0))
    assert [p.resolve() for p in study.suite_dirs] == [suite.resolve()]
    assert study.vocab_size()[0] == sf.VOCAB


def test_the_most_measured_eval_set_and_method_are_chosen(study):
    frame = study.frame[~((study.frame.method == "gptq") & (study.frame.bits == 4))]
    chosen = Study.from_frame(frame)
    assert (chosen.eval_set, chosen.method) == ("web", "rtn")
    assert Study.from_frame(frame, options=ShowOptions(method="gptq", eval_set="wiki")).method == "gptq"
    with pytest.raises(QidlabError, match=r"--eval-set 'refinedweb': not in the measurements \(have: web, wiki\)"):
        Study.from_frame(frame, options=ShowOptions(eval_set="refinedweb"))


def test_a_store_of_several_suites_is_drawn_one_suite_at_a_time(study):
    cosine = study.frame.assign(suite="en")
    twin = cosine[cosine.n_params == cosine.n_params.min()].assign(suite="en-const", qid=cosine.qid * 10)
    both = Study.from_frame(pd.concat([cosine, twin], ignore_index=True))
    assert both.suite == "en" and len(both.frame) == len(cosine)  # the most measured, the twin left out
    assert both.source["rows_other_suites"] == {"en-const": len(twin)}
    chosen = Study.from_frame(pd.concat([cosine, twin]), options=ShowOptions(suite="en-const"))
    assert chosen.suite == "en-const" and (chosen.frame.qid == twin.qid.to_numpy()).all()
    assert Study.from_frame(cosine).suite == "en" and "rows_other_suites" not in Study.from_frame(cosine).source
    with pytest.raises(QidlabError, match=r"--only-suite 'code': not in the measurements \(have: en, en-const\)"):
        Study.from_frame(pd.concat([cosine, twin]), options=ShowOptions(suite="code"))


def test_bad_stores_are_one_clear_error(tmp_path, study):
    with pytest.raises(QidlabError, match="no such store"):
        load_study(tmp_path / "missing.db")
    Store(tmp_path / "empty.db").close()
    with pytest.raises(QidlabError, match="has no measurements"):
        load_study(tmp_path / "empty.db")
    (tmp_path / "junk.db").write_text("not sqlite " * 100)
    with pytest.raises(QidlabError, match="not a readable"):
        load_study(tmp_path / "junk.db")
    with pytest.raises(QidlabError, match="D = 0"):
        Study.from_frame(study.frame.assign(tokens=0.0))


# ---------------------------------------------------------------------------
# the laws


def test_the_unified_fit_recovers_the_law_the_data_follow(study):
    fit = study.fit("ouyang2024")
    (result,) = fit.results
    for name in ("alpha", "beta", "gamma"):
        assert result.params[name] == pytest.approx(sf.TRUTH[name], rel=0.03)
        lo, hi = result.ci95[name]
        assert lo < result.params[name] < hi
    assert fit.held == {"group_size": 128.0}
    doc = fit.document
    assert doc["data"]["method"] == "gptq" and doc["data"]["rows"] == 60 and doc["options"]["bootstrap"] == 30
    assert law_params("ouyang2024", fit=doc)[0] == pytest.approx(result.all_params())


def test_single_factor_laws_are_fitted_per_group(study):
    expected = {"ouyang2024-tokens": (("n_params", "bits"), 12, "beta"),
                "ouyang2024-size": (("tokens", "bits"), 15, "alpha"),
                "ouyang2024-bits": (("n_params", "tokens"), 20, "gamma")}
    for law, (by, groups, exponent) in expected.items():
        fit = study.fit(law)
        assert fit.by == by and len(fit.results) == groups
        median = np.median([r.params[exponent] for r in fit.results])
        assert median == pytest.approx(sf.TRUTH[exponent], rel=0.05)


def test_which_laws_apply_and_why_not(study, bare_study):
    laws = applicable_laws(study)
    for name in ("ouyang2024", "ouyang2024-tokens", "kumar2024-ptq", "kaplan", "chinchilla"):
        assert laws[name] is None
    assert "group_size" in laws["chen2025"]
    assert "kumar2024-qat" not in laws and "sun2025" not in laws  # laws of low-precision training
    no_loss16 = Study.from_frame(bare_study.frame.drop(columns=["loss16"]))
    assert applicable_laws(no_loss16)["kaplan"] == "the measurements have no loss16"
    with pytest.raises(QidlabError, match="chen2025 does not apply: models group_size"):
        study.fit("chen2025")


def test_groups_without_positive_qid_are_left_out(study):
    frame = study.primary.copy()
    smallest = frame.n_params == frame.n_params.min()
    frame.loc[smallest & (frame.bits == 4), "qid"] = -0.001  # noise: this (N, P) group cannot be fitted
    fit = Study.from_frame(frame, options=ShowOptions(bootstrap=0)).fit("ouyang2024-tokens")
    assert len(fit.results) == 11
    (left,) = fit.document["data"]["groups_left_out"]
    assert left["group"] == {"n_params": frame.n_params.min(), "bits": 4.0}


# ---------------------------------------------------------------------------
# the figures


#: Figures drawn from the trajectory columns (qidlab.show.schedules), which the synthetic store lacks.
SCHEDULES = ("cooldown", "peak-lr", "averaging", "batch-order")


@pytest.fixture(scope="module")
def trajectories():
    """A study with the trajectory columns (QiD in bits per byte), both batch orders included."""
    frame = pd.concat([sf.trajectory_frame().assign(seed=0, batch_order="contiguous"),
                       sf.seeded_trajectory_frame().query("seed > 0")], ignore_index=True)
    return Study.from_frame(frame, options=ShowOptions(bootstrap=0))


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_is_labelled_with_units(study, trajectories, name):
    fig = make_figure(name, trajectories if name in SCHEDULES else study)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert axes and fig.get_suptitle()
    for ax in axes:
        xlabel, ylabel = ax.get_xlabel(), ax.get_ylabel()
        if not xlabel:  # a categorical axis (law names, parameter names) carries tick labels instead
            assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        for text in (xlabel, ylabel):
            if ("QiD" in text or "loss" in text) and "ratio" not in text:
                unit = "[bits/byte]" if name in SCHEDULES else "[nats/token]"
                assert unit in text or text.startswith("ln(")
            if "tokens D" in text:
                assert (ax.get_xscale() if text == xlabel else ax.get_yscale()) == "log"


def _errorbar_points(ax) -> int:
    return sum(len(c.lines[0].get_xdata()) for c in ax.containers if hasattr(c, "has_yerr"))


def test_fig3_shows_every_positive_point_and_one_curve_per_group(study):
    fig = make_figure("fig3", study)
    data = study.fit("ouyang2024-tokens").data
    for ax, bits in zip(fig.axes, sorted(data.bits.unique())):
        rows = data[(data.bits == bits) & (data.qid > 0)]
        assert _errorbar_points(ax) == len(rows)
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 60]
        assert len(curves) == rows.n_params.nunique()


def test_fig1_marks_worse_than_random_where_the_curve_enters_the_band(study):
    fig = make_figure("fig1", study)
    crossings = 0
    for ax in fig.axes:
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 10]
        for marker in (line for line in ax.get_lines() if line.get_marker() == "x"):
            x, y = marker.get_xdata()[0], marker.get_ydata()[0]
            on_curve = [np.interp(math.log(x), np.log(c.get_xdata()), np.log(c.get_ydata())) for c in curves]
            assert min(abs(v - math.log(y)) for v in on_curve) < 0.02
            crossings += 1
        assert ax.collections, "the grey worse-than-random band"
    assert crossings >= 1  # the 2-bit 7B curve reaches ln(V) before 100T tokens


def test_fig11_cells_are_the_mean_measured_qid(study):
    fig = make_figure("fig11", study)
    mesh = fig.axes[0].collections[0]
    rows = study.primary[study.primary.bits == 2]
    expected = rows.groupby(["n_params", "tokens"]).qid.mean().unstack().to_numpy()
    assert np.allclose(np.ma.filled(mesh.get_array(), np.nan).reshape(expected.shape), expected)


def test_fig8_pairs_each_checkpoint_across_eval_sets(study):
    fig = make_figure("fig8", study)
    (pairs,) = [line for line in fig.axes[1].get_lines() if line.get_marker() == "o"]
    assert len(pairs.get_xdata()) == 60
    assert np.allclose(np.asarray(pairs.get_ydata()) / np.asarray(pairs.get_xdata()), sf.EVAL_FACTOR["wiki"])


def test_fig12_and_fig14_read_the_trainer_files(study, study_files):
    fig = make_figure("fig12", study)
    assert len(fig.axes[0].get_lines()) == len(sf.STEPS)  # one histogram per checkpoint
    fig = make_figure("fig14", study)
    gap = fig.axes[1].get_lines()[0].get_ydata()  # low-bit minus bf16 training loss
    assert gap[0] < 0 < gap[-1]  # ahead early, behind late: the fixture's BitNet twin


def test_missing_data_makes_a_figure_unavailable_with_the_reason(bare_study):
    reasons = {"fig8": "two eval sets", "fig9": "two quantization methods", "fig12": "weight-dynamics.json",
               "fig14": "bf16 twin", "exponent-ci": "--bootstrap"}
    for name, reason in reasons.items():
        with pytest.raises(FigureUnavailable, match=reason):
            make_figure(name, bare_study)
    make_figure("fig6", bare_study)  # what the study has still draws


# ---------------------------------------------------------------------------
# the trainer's files


def test_bad_trainer_files_are_one_clear_error(tmp_path):
    log = tmp_path / "train-log.csv"
    log.write_text("step,tokens,loss\n1,10,3.0\n")
    with pytest.raises(QidlabError, match=r"train-log.csv: missing column\(s\) lr"):
        read_train_log(log)
    log.write_text("step,tokens,loss,lr\n1,10,3.0,0.1\n2,20,nan,0.1\n")
    with pytest.raises(QidlabError, match="column 'loss', row 2"):
        read_train_log(log)
    path = sf.write_weight_dynamics(tmp_path / "m")
    doc = json.loads(path.read_text())
    doc["checkpoints"][1]["counts"] = doc["checkpoints"][1]["counts"][:-1]
    path.write_text(json.dumps(doc))
    with pytest.raises(QidlabError, match=r"checkpoints\[1\]: 'counts' must be 32 non-negative integers"):
        read_weight_dynamics(path)


def test_a_twin_the_manifest_does_not_list_is_an_error(tmp_path):
    suite = sf.write_suite(tmp_path, weights=False)
    manifest = suite / "qidlab-suite.toml"
    manifest.write_text(manifest.read_text().replace('twin = "m0"', 'twin = "m9"'))
    with pytest.raises(QidlabError, match="names twin 'm9', which is not a model of the suite"):
        twins([suite])


# ---------------------------------------------------------------------------
# qidlab plot


def test_plot_writes_one_figure(study_files, tmp_path, capsys):
    out = tmp_path / "fig3.png"
    assert main(["plot", "fig3", str(study_files[0]), "--out", str(out), "--bootstrap", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["out"] == str(out) and (doc["eval_set"], doc["method"]) == ("web", "gptq")
    assert out.read_bytes().startswith(PNG)


def test_plot_of_a_figure_without_data_is_one_error_and_no_file(bare_study, tmp_path, capsys):
    out = tmp_path / "fig8.png"
    assert main(["plot", "fig8", bare_study.source["path"], "--out", str(out), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qidlab: error: Fig. 8 needs QiD on two eval sets") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_plot_list_and_usage(capsys):
    assert main(["plot", "--list", "--json"]) == 0
    assert [f["name"] for f in json.loads(capsys.readouterr().out)["figures"]] == list(FIGURES)
    assert main(["plot", "fig3"]) == 2
    assert "plot needs NAME STORE --out FILE" in capsys.readouterr().err
    assert main(["plot", "fig13", "x.db", "--out", "x.png"]) == 2
    assert "no figure 'fig13'" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# read as a researcher would (issue 18): ticks, limits, colours, legends, notes


@pytest.fixture(scope="module")
def narrow(study):
    """Less than a decade of D and of N: where a log axis shows at most one power of ten."""
    f = study.frame
    keep = (f.step >= 10000) & (f.n_params <= sorted(f.n_params.unique())[1])
    return Study.from_frame(f[keep], suites=study.suite_dirs, options=ShowOptions(bootstrap=8))


def _labelled_ticks(axis) -> list[str]:
    """The non-empty tick labels drawn within the axis' view interval."""
    lo, hi = sorted(axis.get_view_interval())
    index = 0 if axis.axis_name == "x" else 1
    return [t.get_text() for t in axis.get_ticklabels(which="both")
            if t.get_text() and t.get_visible() and lo * (1 - 1e-9) <= t.get_position()[index] <= hi * (1 + 1e-9)]


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_log_axis_has_at_least_three_labelled_ticks(narrow, trajectories, name):
    try:
        fig = make_figure(name, trajectories if name in SCHEDULES else narrow)
    except FigureUnavailable as exc:
        assert name == "fig8" and "two eval sets" not in str(exc), exc  # only what the narrow slice cannot fit
        pytest.skip(str(exc))
    fig.draw_without_rendering()
    checked = 0
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            shows = any(t.label1.get_visible() or t.label2.get_visible() for t in axis.get_major_ticks())
            if ax.get_visible() and axis.get_scale() == "log" and shows:  # (a shared axis shows its labels once)
                assert len(_labelled_ticks(axis)) >= 3, (name, ax.get_title(), _labelled_ticks(axis))
                checked += 1
    assert checked or name in ("holdout", "exponent-ci") or not any(a.get_xscale() == "log" for a in fig.axes)


def _wide_cis(study):
    """The study with some 95% CIs reaching to 0 or below (QiD not told apart from 0)."""
    f = study.frame.copy()
    low = f.index[::7]
    f.loc[low, "qid_ci_low"] = -f.loc[low, "qid"]
    return Study.from_frame(f, suites=study.suite_dirs, options=ShowOptions(bootstrap=0)), f.loc[low]


@pytest.mark.parametrize("name", ["fig3", "fig6", "fig8", "fig9"])
def test_qid_limits_come_from_the_points_and_clipped_whiskers_are_marked(study, name):
    wide, _ = _wide_cis(study)
    fig = make_figure(name, wide)
    ax = fig.axes[0]  # its y-axis is shared by the other QiD panels
    bottom, top = ax.get_ylim()
    drawn = np.concatenate([np.asarray(line.get_ydata(), float) for a in fig.axes[:3] for c in a.containers
                            if hasattr(c, "has_yerr") for line in c.lines[:1]])
    assert bottom >= drawn[drawn > 0].min() / 3.01 and top <= drawn.max() * 2.51  # the points, not their CIs
    whiskers = [seg for c in ax.containers if hasattr(c, "has_yerr") for bars in c.lines[2] for seg in bars.get_segments()]
    assert whiskers and min(s[:, 1].min() for s in whiskers) >= bottom * (1 - 1e-9)
    arrows = sum(len(line.get_xdata()) for line in ax.get_lines() if line.get_marker() == "v")
    assert arrows >= 1  # every whisker cut at the bottom is marked
    assert arrows == sum(np.isclose(s[:, 1].min(), bottom) for s in whiskers)


def _data_colours(fig):
    for ax in fig.axes:
        for line in ax.get_lines():
            if len(line.get_xdata()) and line.get_visible():
                yield line.get_color()
        legend = ax.get_legend()
        for handle in (legend.legend_handles if legend else []):
            if hasattr(handle, "get_color"):
                yield handle.get_color()


def test_palettes_are_readable_on_white(study):
    from qidlab.show.style import colours, contrast

    for cmap in ("viridis", "plasma"):
        assert min(contrast(c) for c in colours([2.0, 3.0, 4.0, 5.0, 6.0, 8.0], cmap).values()) >= 3.0
    for name in ("fig1", "fig2", "fig3", "fig7", "fig8", "fig9", "fig10", "fig12", "fig14", "residuals"):
        worst = min(contrast(c) for c in _data_colours(make_figure(name, study)))
        assert worst >= 3.0, (name, worst)


def _covered_points(fig) -> int:
    """How many plotted data vertices lie under a legend of the figure (display coordinates)."""
    fig.draw_without_rendering()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    boxes = [legend.get_window_extent() for legend in legends]
    covered = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            if not len(line.get_xdata()) or line.get_transform() != ax.transData:
                continue
            xy = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float))
            covered += sum(int(box.contains(x, y)) for box in boxes for x, y in xy)
    return covered


@pytest.mark.parametrize("name", ["fig2", "fig3", "fig6", "fig7", "fig8", "fig9", "residuals"])
def test_legends_cover_no_data(study, name):
    assert _covered_points(make_figure(name, study)) == 0


def test_fig12_many_checkpoints_keep_the_data_visible(tmp_path, study):
    """8 models x 16 checkpoint pairs over histogram bins far wider than the changes."""
    suite = sf.write_suite(tmp_path, twins=False)
    steps = tuple(int(s) for s in np.geomspace(100, 95000, 16))
    for i in range(8):
        sf.write_weight_dynamics(suite / f"m{i}", steps=steps, edges=(-14.0, 2.0, 65), width=0.4)
    fig = make_figure("fig12", Study.from_frame(study.frame, suites=[suite], options=ShowOptions(bootstrap=0)))
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    histograms, summary = panels[:-1], panels[-1]
    for ax in histograms:
        assert ax.get_legend() is None and len(ax.get_lines()) == 16  # colour is D, on the colour bar
        lo, hi = ax.get_xlim()
        used = [line.get_xdata()[np.asarray(line.get_ydata()) >= 1e-3] for line in ax.get_lines()]
        used = np.concatenate(used)
        assert (used.max() - used.min()) / (hi - lo) >= 0.7  # no wide empty x-range
    assert len(summary.get_legend().get_texts()) == 8 + 2  # a colour per model, a style per statistic
    assert _covered_points(fig) == 0
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_fig11_has_several_legible_contours_per_panel(study):
    fig = make_figure("fig11", study)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for ax in panels:
        (contours,) = [c for c in ax.collections if hasattr(c, "allsegs")]
        drawn = [level for level, segs in zip(contours.levels, contours.allsegs) if any(len(s) for s in segs)]
        assert len(drawn) >= 3, (ax.get_title(), drawn)
        labels = [t for t in ax.texts if t.get_text() and t.get_text()[0].isdigit()]
        assert labels and all(t.get_path_effects() for t in labels)  # outlined: legible on dark and bright cells


def test_fig9_says_why_its_exponents_differ_from_the_table(study):
    fig = make_figure("fig9", study)
    beta = study.fit("ouyang2024").results[0].all_params()["beta"]
    title = fig.get_suptitle().replace("\n", " ")
    assert "4-bit points alone" in title and f"beta {beta:.3f}" in title
    assert "differ" in FIGURES["fig9"].caption


def test_holdout_bars_are_the_median_over_a_grouped_laws_fits(study):
    fig = make_figure("holdout", study)
    (ax,) = fig.axes
    fit = study.fit("ouyang2024-tokens")
    names = [t.get_text() for t in ax.get_xticklabels()]
    (at,) = [i for i, n in enumerate(names) if n.startswith("ouyang2024-tokens")]
    assert f"median of {len(fit.results)} fits" in names[at]
    heights = {round(b.get_x() + b.get_width() / 2): b.get_height() for b in ax.containers[0]}
    assert heights[at] == pytest.approx(np.median([r.metrics["mape"] for r in fit.results]))
    assert "median" in fig.get_suptitle()


def test_exponent_markers_lie_inside_the_axes(study):
    fig = make_figure("exponent-ci", study)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        lo, hi = ax.get_xlim()
        xs = np.concatenate([np.asarray(line.get_xdata(), float) for line in ax.get_lines()])
        assert ((xs - lo) / (hi - lo)).min() >= 0.06 and ((hi - xs) / (hi - lo)).min() >= 0.06, ax.get_title()
